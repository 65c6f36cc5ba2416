// CudaLanguageModel implementation (see cuda_language_model.h). Op order and shapes mirror the
// CPU LanguageModel / MambaMixer / SsmCore one to one; comments name the CPU step they twin.
#include "model/cuda/cuda_language_model.h"

#include <algorithm>
#include <string>
#include <type_traits>

#include "core/check.h"
#include "core/cuda_check.h"
#include "ops/adamw.h"
#include "ops/causal_conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/selective_scan.h"
#include "ops/ssm_a.h"

namespace moessm::cuda {

template <typename Act>
struct CudaLanguageModel<Act>::Layer {
  // parameter offsets (elements into the flat buffers)
  size_t in_w = 0, conv_w = 0, conv_b = 0, x_w = 0, dt_w = 0, dt_b = 0, A_log = 0, Dp = 0, out_w = 0;
  // activations of the last forward (per layer in training, shared otherwise)
  Act *normed = nullptr, *xz = nullptr, *xc = nullptr, *xdbl = nullptr, *delta = nullptr, *y = nullptr;
  float *rstd = nullptr, *A = nullptr, *chunk_states = nullptr;
};

namespace {
template <typename Act> constexpr bool kIsF32 = std::is_same_v<Act, float>;
}  // namespace

template <typename Act>
CudaLanguageModel<Act>::CudaLanguageModel(const ModelConfig& cfg, int device)
    : cfg_(cfg), D_(cfg.d_model), V_(cfg.padded_vocab()), Di_(cfg.d_inner()), N_(cfg.d_state),
      R_(cfg.resolved_dt_rank()), Kc_(cfg.d_conv), device_(device) {
  for (int l = 0; l < int(cfg.n_layer); ++l)
    CHECK(cfg.layers[l].type == "mamba", "--device cuda runs dense 'mamba' layers only so far; layer ", l,
          " is '", cfg.layers[l].type, "' (train or run MoE models with --device cpu)");
  ModelLayout<CpuBackend<float>> layout = register_model<CpuBackend<float>>(cfg, table_);
  cpu_mixers_ = std::move(layout.mixers);
  emb_ = layout.emb;
  norm_ = layout.norm;
  norm_f_ = layout.norm_f;
  layers_.resize(size_t(cfg.n_layer));
  for (int l = 0; l < int(cfg.n_layer); ++l) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".mixer.";
    Layer& L = layers_[l];
    L.in_w = table_.at(p + "in_proj.weight").offset;
    L.conv_w = table_.at(p + "conv1d.weight").offset;
    L.conv_b = table_.at(p + "conv1d.bias").offset;
    L.x_w = table_.at(p + "x_proj.weight").offset;
    L.dt_w = table_.at(p + "dt_proj.weight").offset;
    L.dt_b = table_.at(p + "dt_proj.bias").offset;
    L.A_log = table_.at(p + "A_log").offset;
    L.Dp = table_.at(p + "D").offset;
    L.out_w = table_.at(p + "out_proj.weight").offset;
  }
  int n_dev = 0;
  const cudaError_t e = cudaGetDeviceCount(&n_dev);
  CHECK(e == cudaSuccess && device_ < n_dev, "--device cuda: no usable CUDA device ", device_, " on this machine (",
        e == cudaSuccess ? std::to_string(n_dev) + " found" : std::string(cudaGetErrorString(e)), ")");
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  const size_t n = table_.total();
  params_.resize(n * sizeof(float));
  grads_.resize(n * sizeof(float));
  if (!kIsF32<Act>) params16_.resize(n * sizeof(__nv_bfloat16));
  CUDA_CHECK(cudaMemsetAsync(params_.data(), 0, n * sizeof(float), stream_));
  zero_grads();
}

template <typename Act>
CudaLanguageModel<Act>::~CudaLanguageModel() {
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

template <typename Act>
MixerCounts CudaLanguageModel<Act>::counts() const {
  return count_model(cfg_, cpu_mixers_);
}

template <typename Act>
const Act* CudaLanguageModel<Act>::weight(size_t off) const {
  if constexpr (kIsF32<Act>) return params_.as<float>() + off;
  else return params16_.as<__nv_bfloat16>() + off;
}

template <typename Act>
void CudaLanguageModel<Act>::upload_params(const float* host) {
  const size_t n = table_.total();
  CUDA_CHECK(cudaMemcpyAsync(params_.data(), host, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
  if (!kIsF32<Act>) convert_f32_to_bf16(params16_.as<__nv_bfloat16>(), params_.as<float>(), idx_t(n), stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

template <typename Act>
void CudaLanguageModel<Act>::download_params(float* host) const {
  CUDA_CHECK(cudaMemcpyAsync(host, params_.data(), table_.total() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

template <typename Act>
void CudaLanguageModel<Act>::download_grads(float* host) const {
  CUDA_CHECK(cudaMemcpyAsync(host, grads_.data(), table_.total() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

template <typename Act>
void CudaLanguageModel<Act>::zero_grads() {
  CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, table_.total() * sizeof(float), stream_));
}

// ---- arena ------------------------------------------------------------------------------------

template <typename Act>
void CudaLanguageModel<Act>::carve(DeviceArena& a, idx_t B, idx_t T, bool training) {
  const idx_t M = B * T, L = idx_t(layers_.size()), XW = R_ + 2 * N_;
  resid_.assign(training ? L + 1 : 1, nullptr);
  for (auto& r : resid_) r = a.carve<float>(M * D_);
  for (idx_t l = 0; l < L; ++l) {
    Layer& ly = layers_[l];
    if (l == 0 || training) {
      ly.normed = a.carve<Act>(M * D_);
      ly.rstd = a.carve<float>(M);
      ly.xz = a.carve<Act>(M * 2 * Di_);
      ly.xc = a.carve<Act>(M * Di_);
      ly.xdbl = a.carve<Act>(M * XW);
      ly.delta = a.carve<Act>(M * Di_);
      ly.y = a.carve<Act>(M * Di_);
      ly.A = a.carve<float>(Di_ * N_);
      ly.chunk_states = a.carve<float>(B * scan_num_chunks(T) * Di_ * N_);
    } else {  // inference: every layer reuses layer 0's buffers
      const Layer& z = layers_[0];
      ly.normed = z.normed; ly.rstd = z.rstd; ly.xz = z.xz; ly.xc = z.xc; ly.xdbl = z.xdbl;
      ly.delta = z.delta; ly.y = z.y; ly.A = z.A; ly.chunk_states = z.chunk_states;
    }
  }
  mix_out_ = a.carve<Act>(M * D_);
  hf_ = a.carve<Act>(M * D_);
  rstd_f_ = a.carve<float>(M);
  head_rows_ = std::min<idx_t>(M, kCudaHeadChunkRows);
  stage_rows_ = std::min<idx_t>(M, 256);
  logits_ = a.carve<Act>(head_rows_ * V_);
  logits_f32_ = kIsF32<Act> ? nullptr : a.carve<float>(stage_rows_ * V_);
  lse_ = a.carve<float>(head_rows_);
  row_loss_ = a.carve<float>(M);
  ids_dev_ = a.carve<int32_t>(M);
  targets_dev_ = a.carve<int32_t>(M);
  loss_sum_dev_ = a.carve<double>(1);
  if (training) {
    dhf_ = a.carve<Act>(M * D_);
    du_ = a.carve<Act>(M * D_);
    dres_ = a.carve<float>(M * D_);
    dres_act_ = kIsF32<Act> ? nullptr : a.carve<Act>(M * D_);
    dxz_ = a.carve<Act>(M * 2 * Di_);
    dxc_ = a.carve<Act>(M * Di_);
    dxdbl_ = a.carve<Act>(M * XW);
    ddelta_ = a.carve<Act>(M * Di_);
    dy_ = a.carve<Act>(M * Di_);
    dA_ = a.carve<float>(Di_ * N_);
  }
}

template <typename Act>
void CudaLanguageModel<Act>::prepare(idx_t B, idx_t T, bool training) {
  CHECK(B > 0 && T > 0, "cuda model prepare: batch ", B, " and length ", T, " must be positive");
  if (B == max_B_ && T == max_T_ && training == training_) return;
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  arena_.reset();
  training_ = training;
  carve(arena_, B, T, training);  // planning pass: counts bytes
  arena_.allocate_planned();
  carve(arena_, B, T, training);  // real pass
  if (B != max_B_) {
    // The state of B slots: per layer conv [B, Di, Kc-1] (Act) then ssm [B, Di, N] (fp32).
    const size_t per_layer = size_t(B * Di_ * (Kc_ - 1)) * sizeof(Act) + size_t(B * Di_ * N_) * sizeof(float);
    state_.resize(per_layer * layers_.size() + 256);
    CUDA_CHECK(cudaMemsetAsync(state_.data(), 0, state_.bytes(), stream_));
  }
  max_B_ = B;
  max_T_ = T;
}

// ---- state ------------------------------------------------------------------------------------

namespace {
// Per-layer device state views inside one buffer.
template <typename Act>
struct StateView {
  Act* conv;
  float* ssm;
};
template <typename Act>
StateView<Act> state_view(const DeviceBuffer& buf, int l, idx_t B, idx_t Di, idx_t N, idx_t Kc) {
  const size_t conv_b = size_t(B * Di * (Kc - 1)) * sizeof(Act), ssm_b = size_t(B * Di * N) * sizeof(float);
  char* base = static_cast<char*>(buf.data()) + size_t(l) * (conv_b + ssm_b);
  return {reinterpret_cast<Act*>(base), reinterpret_cast<float*>(base + conv_b)};
}
}  // namespace

template <typename Act>
idx_t CudaLanguageModel<Act>::state_size() const {
  return idx_t(layers_.size()) * (Di_ * (Kc_ - 1) + Di_ * N_);
}

template <typename Act>
void CudaLanguageModel<Act>::set_state(const float* host) {
  const idx_t B = max_B_, conv_n = B * Di_ * (Kc_ - 1), ssm_n = B * Di_ * N_;
  CHECK(B > 0, "cuda model set_state: prepare() first");
  if (!host) {
    CUDA_CHECK(cudaMemsetAsync(state_.data(), 0, state_.bytes(), stream_));
    return;
  }
  std::vector<Act> conv(static_cast<size_t>(conv_n));
  for (int l = 0; l < n_layers(); ++l) {
    const float* src = host + l * (conv_n + ssm_n);  // LanguageModel::state_offset(l, B)
    StateView<Act> v = state_view<Act>(state_, l, B, Di_, N_, Kc_);
    for (idx_t i = 0; i < conv_n; ++i) conv[i] = Act(src[i]);
    CUDA_CHECK(cudaMemcpy(v.conv, conv.data(), conv_n * sizeof(Act), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(v.ssm, src + conv_n, ssm_n * sizeof(float), cudaMemcpyHostToDevice));
  }
}

template <typename Act>
void CudaLanguageModel<Act>::get_state(float* host) const {
  const idx_t B = max_B_, conv_n = B * Di_ * (Kc_ - 1), ssm_n = B * Di_ * N_;
  CHECK(B > 0, "cuda model get_state: prepare() first");
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<Act> conv(static_cast<size_t>(conv_n));
  for (int l = 0; l < n_layers(); ++l) {
    float* dst = host + l * (conv_n + ssm_n);
    StateView<Act> v = state_view<Act>(state_, l, B, Di_, N_, Kc_);
    CUDA_CHECK(cudaMemcpy(conv.data(), v.conv, conv_n * sizeof(Act), cudaMemcpyDeviceToHost));
    for (idx_t i = 0; i < conv_n; ++i) dst[i] = float(conv[i]);
    CUDA_CHECK(cudaMemcpy(dst + conv_n, v.ssm, ssm_n * sizeof(float), cudaMemcpyDeviceToHost));
  }
}

// ---- forward ----------------------------------------------------------------------------------

// The scan's arguments for layer l (forward and backward read the same streams).
template <typename Act>
ScanParamsT<Act> CudaLanguageModel<Act>::scan_params(int l, idx_t B, idx_t T, bool use_state,
                                                     bool write_state) const {
  const Layer& ly = layers_[l];
  const idx_t XW = R_ + 2 * N_, Di = Di_;
  const float* P = params_.as<float>();
  const StateView<Act> sv = state_view<Act>(state_, l, max_B_, Di_, N_, Kc_);
  ScanParamsT<Act> p;
  p.B = B; p.T_ = T; p.Di = Di; p.N = N_;
  p.u = ly.xc; p.u_ld = Di;
  p.delta = ly.delta; p.delta_ld = Di;
  p.Bm = ly.xdbl + R_; p.B_ld = XW;
  p.Cm = ly.xdbl + R_ + N_; p.C_ld = XW;
  p.z = ly.xz + Di; p.z_ld = 2 * Di;
  p.A = ly.A; p.D = P + ly.Dp; p.delta_bias = P + ly.dt_b;
  p.h0 = use_state ? sv.ssm : nullptr;
  p.delta_softplus = true;
  p.out = ly.y; p.out_ld = Di;  // written by forward only
  p.h_last = write_state ? sv.ssm : nullptr;
  p.chunk_states = ly.chunk_states;
  return p;
}

template <typename Act>
void CudaLanguageModel<Act>::mixer_forward(int l, idx_t B, idx_t T, bool use_state, bool write_state) {
  // MambaMixer::forward + SsmCore::forward
  const Layer& ly = layers_[l];
  const idx_t M = B * T, XW = R_ + 2 * N_, Di = Di_;
  const float* P = params_.as<float>();
  const StateView<Act> sv = state_view<Act>(state_, l, max_B_, Di_, N_, Kc_);
  matmul_forward<Act>(ly.xz, 2 * Di, ly.normed, D_, weight(ly.in_w), nullptr, M, 2 * Di, D_, false, stream_);
  causal_conv1d_forward<Act>(ly.xc, Di, write_state ? sv.conv : nullptr, ly.xz, 2 * Di,
                             use_state ? sv.conv : nullptr, P + ly.conv_w, P + ly.conv_b, B, T, Di, Kc_,
                             true, stream_);
  matmul_forward<Act>(ly.xdbl, XW, ly.xc, Di, weight(ly.x_w), nullptr, M, XW, Di, false, stream_);
  matmul_forward<Act>(ly.delta, Di, ly.xdbl, XW, weight(ly.dt_w), nullptr, M, Di, R_, false, stream_);
  ssm_a_forward(ly.A, P + ly.A_log, Di * N_, stream_);
  selective_scan_forward<Act>(scan_params(l, B, T, use_state, write_state), stream_);
  matmul_forward<Act>(mix_out_, D_, ly.y, Di, weight(ly.out_w), nullptr, M, D_, Di, false, stream_);
}

template <typename Act>
void CudaLanguageModel<Act>::forward_body(const int32_t* ids_dev, idx_t B, idx_t T, bool use_state,
                                          bool write_state) {
  CHECK(B == max_B_ && T >= 1 && T <= max_T_, "cuda model prepared for B=", max_B_, " T<=", max_T_,
        ", called with B=", B, " T=", T);
  CHECK(!(training_ && write_state), "cuda model: a training pass cannot also replace the carried state");
  const idx_t M = B * T;
  const float* P = params_.as<float>();
  const double eps = cfg_.norm_eps;
  embedding_forward(resid(0), ids_dev, P + emb_, M, V_, D_, stream_);
  for (int l = 0; l < n_layers(); ++l) {
    // h_l = h_{l-1} + mixer_{l-1}(...) fused with the norm of layer l (residual fp32)
    if (l == 0) {
      rmsnorm_forward<Act>(layers_[0].normed, layers_[0].rstd, resid(0), P + norm_[0], M, D_, eps, stream_);
    } else {
      if (resid(l) != resid(l - 1))
        CUDA_CHECK(cudaMemcpyAsync(resid(l), resid(l - 1), M * D_ * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
      rmsnorm_add_forward<Act>(layers_[l].normed, layers_[l].rstd, resid(l), mix_out_, P + norm_[l], M, D_, eps, stream_);
    }
    mixer_forward(l, B, T, use_state, write_state);
  }
  const int L = n_layers();
  if (resid(L) != resid(L - 1))
    CUDA_CHECK(cudaMemcpyAsync(resid(L), resid(L - 1), M * D_ * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  rmsnorm_add_forward<Act>(hf_, rstd_f_, resid(L), mix_out_, P + norm_f_, M, D_, eps, stream_);
}

template <typename Act>
void CudaLanguageModel<Act>::forward_last_logits(Act* logits_dev, const int32_t* ids_dev, idx_t B, idx_t T,
                                                 bool use_state, bool write_state) {
  forward_body(ids_dev, B, T, use_state, write_state);
  // row b·T + T-1 of hf for each b: a strided view with ld = T·D
  matmul_forward<Act>(logits_dev, V_, hf_ + (T - 1) * D_, T * D_, weight(emb_), nullptr, B, V_, D_, false, stream_);
}

template <typename Act>
void CudaLanguageModel<Act>::forward_logits(float* logits_host, const int32_t* ids_host, idx_t B, idx_t T,
                                            bool use_state, bool write_state) {
  const idx_t M = B * T;
  for (idx_t i = 0; i < M; ++i)
    CHECK(ids_host[i] >= 0 && ids_host[i] < cfg_.vocab_size, "token id ", ids_host[i], " at position ", i,
          " is outside the vocabulary [0, ", cfg_.vocab_size, ")");
  CUDA_CHECK(cudaMemcpyAsync(ids_dev_, ids_host, M * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  forward_body(ids_dev_, B, T, use_state, write_state);
  for (idx_t r0 = 0; r0 < M; r0 += stage_rows_) {
    const idx_t rows = std::min(stage_rows_, M - r0);
    matmul_forward<Act>(logits_, V_, hf_ + r0 * D_, D_, weight(emb_), nullptr, rows, V_, D_, false, stream_);
    const float* src;
    if constexpr (kIsF32<Act>) {
      src = logits_;
    } else {
      convert_bf16_to_f32(logits_f32_, logits_, rows * V_, stream_);
      src = logits_f32_;
    }
    CUDA_CHECK(cudaMemcpyAsync(logits_host + r0 * V_, src, rows * V_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // the staging buffer is reused
  }
}

// ---- loss and backward ------------------------------------------------------------------------

template <typename Act>
LossResult CudaLanguageModel<Act>::loss(const int32_t* ids_host, const int32_t* targets_host, idx_t B,
                                        idx_t T, bool backward, bool use_state) {
  CHECK(!backward || training_, "cuda loss(backward=true) needs prepare(..., training=true)");
  const idx_t M = B * T;
  LossResult r;
  for (idx_t i = 0; i < M; ++i) {
    CHECK(ids_host[i] >= 0 && ids_host[i] < cfg_.vocab_size, "token id ", ids_host[i], " at position ", i,
          " is outside the vocabulary [0, ", cfg_.vocab_size, ")");
    CHECK(targets_host[i] < V_, "target id ", targets_host[i], " at position ", i,
          " is outside the vocabulary [0, ", V_, ")");
    if (targets_host[i] >= 0) ++r.count;
  }
  CHECK(r.count > 0, "loss: no targets to score (all ignored)");
  CUDA_CHECK(cudaMemcpyAsync(ids_dev_, ids_host, M * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(targets_dev_, targets_host, M * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  forward_body(ids_dev_, B, T, use_state, false);
  // The tied head in row chunks; with backward the loss gradient is fused in (logits → dlogits
  // in place) and the head's backward follows at once, as LanguageModel::loss.
  const float scale = float(1.0 / double(r.count));
  for (idx_t r0 = 0; r0 < M; r0 += head_rows_) {
    const idx_t rows = std::min(head_rows_, M - r0);
    matmul_forward<Act>(logits_, V_, hf_ + r0 * D_, D_, weight(emb_), nullptr, rows, V_, D_, false, stream_);
    if (backward) {
      cross_entropy_forward_backward<Act>(row_loss_ + r0, lse_, logits_, logits_, targets_dev_ + r0, scale,
                                          rows, V_, stream_);
      matmul_backward<Act>(dhf_ + r0 * D_, D_, grads_.as<float>() + emb_, nullptr, logits_, V_, hf_ + r0 * D_,
                           D_, weight(emb_), rows, V_, D_, false, stream_);
    } else {
      cross_entropy_forward<Act>(row_loss_ + r0, lse_, logits_, targets_dev_ + r0, rows, V_, stream_);
    }
  }
  sum(loss_sum_dev_, row_loss_, M, stream_);
  if (backward) backward_body(B, T, use_state);
  double total = 0;
  CUDA_CHECK(cudaMemcpyAsync(&total, loss_sum_dev_, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  r.ce = total / double(r.count);
  return r;
}

template <typename Act>
void CudaLanguageModel<Act>::mixer_backward(int l, const Act* dout, Act* du, idx_t B, idx_t T, bool use_state) {
  // MambaMixer::backward + SsmCore::backward
  const Layer& ly = layers_[l];
  const idx_t M = B * T, XW = R_ + 2 * N_, Di = Di_;
  const float* P = params_.as<float>();
  float* G = grads_.as<float>();
  const StateView<Act> sv = state_view<Act>(state_, l, max_B_, Di_, N_, Kc_);
  matmul_backward<Act>(dy_, Di, G + ly.out_w, nullptr, dout, D_, ly.y, Di, weight(ly.out_w), M, D_, Di, false, stream_);
  CUDA_CHECK(cudaMemsetAsync(dA_, 0, Di * N_ * sizeof(float), stream_));
  ScanGradsT<Act> g;
  g.dout = dy_; g.dout_ld = Di;
  g.du = dxc_; g.du_ld = Di;
  g.ddelta = ddelta_; g.ddelta_ld = Di;
  g.dB = dxdbl_ + R_; g.dB_ld = XW;
  g.dC = dxdbl_ + R_ + N_; g.dC_ld = XW;
  g.dz = dxz_ + Di; g.dz_ld = 2 * Di;
  g.dA = dA_; g.dD = G + ly.Dp; g.ddelta_bias = G + ly.dt_b;
  selective_scan_backward<Act>(g, scan_params(l, B, T, use_state, false), stream_);
  ssm_a_backward(G + ly.A_log, dA_, ly.A, Di * N_, stream_);
  // delta = dt_low · dt_projᵀ: the dt_low columns of dxdbl (assign), B/C columns from the scan
  matmul_backward<Act>(dxdbl_, XW, G + ly.dt_w, nullptr, ddelta_, Di, ly.xdbl, XW, weight(ly.dt_w), M, Di, R_,
                       false, stream_);
  matmul_backward<Act>(dxc_, Di, G + ly.x_w, nullptr, dxdbl_, XW, ly.xc, Di, weight(ly.x_w), M, XW, Di, true,
                       stream_);
  causal_conv1d_backward<Act>(dxz_, 2 * Di, G + ly.conv_w, G + ly.conv_b, dxc_, Di, ly.xz, 2 * Di,
                              use_state ? sv.conv : nullptr, P + ly.conv_w, P + ly.conv_b, B, T, Di, Kc_, true,
                              stream_);
  matmul_backward<Act>(du, D_, G + ly.in_w, nullptr, dxz_, 2 * Di, ly.normed, D_, weight(ly.in_w), M, 2 * Di, D_,
                       false, stream_);
}

template <typename Act>
void CudaLanguageModel<Act>::backward_body(idx_t B, idx_t T, bool use_state) {
  const idx_t M = B * T;
  const float* P = params_.as<float>();
  float* G = grads_.as<float>();
  const int L = n_layers();
  rmsnorm_backward<Act>(dres_, G + norm_f_, dhf_, resid(L), P + norm_f_, rstd_f_, M, D_, false, stream_);
  for (int l = L - 1; l >= 0; --l) {
    const Act* dout;
    if constexpr (kIsF32<Act>) {
      dout = dres_;
    } else {
      convert_f32_to_bf16(dres_act_, dres_, M * D_, stream_);
      dout = dres_act_;
    }
    mixer_backward(l, dout, du_, B, T, use_state);
    rmsnorm_backward<Act>(dres_, G + norm_[l], du_, resid(l), P + norm_[l], layers_[l].rstd, M, D_, true, stream_);
  }
  embedding_backward(G + emb_, dres_, ids_dev_, M, V_, D_, stream_);
}

template class CudaLanguageModel<float>;
template class CudaLanguageModel<__nv_bfloat16>;

}  // namespace moessm::cuda
