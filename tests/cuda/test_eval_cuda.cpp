// `moessm eval` and `moessm task eval` on cuda against the CPU (GPU machine; label "gpu"): the
// same windows scored by the same Model<Bk> code give the same loss, perplexity and per-position
// curve in fp32 (within fp32 summation differences), and bf16 within its rounding; task accuracy
// counts the same answers (a margin-free tie could flip one; the model here has none by design:
// a random init rarely ties exactly). Dense and RoM stacks.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "../model_checks.h"
#include "../testing.h"
#include "gpu_testing.h"
#include "io/file_util.h"
#include "io/json.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

Json eval_json(const std::string& model, const std::string& data, const std::string& device, const std::string& dtype,
               const std::string& out) {
  std::string log;
  EXPECT_EQ(run_cli_argv({"eval", "--model", model, "--data", data, "--ctx", "16,64", "--max-tokens", "2000",
                          "--batch", "4", "--device", device, "--dtype", dtype, "--json", out},
                         &log),
            0)
      << log;
  return Json::parse_file(out);
}

}  // namespace

TEST(CudaEval, EvalAndTaskEvalMatchTheCpu) {
  REQUIRE_GPU();
  const std::string data = make_word_data("cuda_eval", 4000), dir = temp_dir("cuda_eval_run");
  for (const char* layers : {R"(["mamba", "mamba"])", R"(["mamba", {"type": "rom", "n_experts": 4, "top_k": 2}])"}) {
    write_file_atomic(dir + "/cfg.json",
                      std::string(R"({"d_model": 32, "n_layer": 2, "vocab_size": 256, "d_state": 8, "layers": )") +
                          layers + "}");
    std::string log;
    ASSERT_EQ(run_cli_argv({"init", "--config", dir + "/cfg.json", "--out", dir + "/m", "--seed", "3", "--overwrite"},
                           &log),
              0)
        << log;
    const Json cpu = eval_json(dir + "/m", data, "cpu", "float32", dir + "/cpu.json");
    const Json f32 = eval_json(dir + "/m", data, "cuda", "float32", dir + "/f32.json");
    const Json b16 = eval_json(dir + "/m", data, "cuda", "bfloat16", dir + "/b16.json");
    for (size_t k = 0; k < 2; ++k) {
      const Json& c = cpu.at("results").as_array().at(k);
      const Json& g = f32.at("results").as_array().at(k);
      const Json& h = b16.at("results").as_array().at(k);
      EXPECT_EQ(g.at("predictions").as_int(), c.at("predictions").as_int());
      const double l = c.at("loss").as_number();
      EXPECT_NEAR(g.at("loss").as_number(), l, 1e-5 * l) << layers;
      EXPECT_NEAR(h.at("loss").as_number(), l, 1e-2 * l) << layers << " (bf16)";
      const Json::Array& pc = c.at("loss_by_position").as_array();
      const Json::Array& pg = g.at("loss_by_position").as_array();
      for (size_t i = 0; i < pc.size(); ++i)
        EXPECT_NEAR(pg[i].as_number(), pc[i].as_number(), 1e-4 * pc[i].as_number()) << layers << " position " << i;
    }
    // Task accuracy: the same counts on both devices.
    ASSERT_EQ(run_cli_argv({"task", "make", "--task", "induction", "--length", "32", "--symbols", "16", "--out",
                            dir + "/task", "--train-examples", "10", "--val-examples", "2", "--overwrite"},
                           &log),
              0)
        << log;
    ASSERT_EQ(run_cli_argv({"task", "eval", "--model", dir + "/m", "--data", dir + "/task", "--examples", "200",
                            "--json", dir + "/tc.json"},
                           &log),
              0)
        << log;
    ASSERT_EQ(run_cli_argv({"task", "eval", "--model", dir + "/m", "--data", dir + "/task", "--examples", "200",
                            "--device", "cuda", "--json", dir + "/tg.json"},
                           &log),
              0)
        << log;
    EXPECT_EQ(Json::parse_file(dir + "/tg.json").at("answer_accuracy").as_number(),
              Json::parse_file(dir + "/tc.json").at("answer_accuracy").as_number())
        << layers;
  }
}
