#!/usr/bin/env bash
# Outside reference check (run on the GPU machine, which has torch + transformers): builds the
# CPU program, writes fresh checkpoints with `moessm init` and compares logits (and gradients)
# with transformers' MambaForCausalLM. Logs go to $OUT (or ./out). Exit status non-zero on failure.
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
build=${BUILD_DIR:-/tmp/moessm-hf-build}
NL=()
[ -d .nlohmann ] && NL=(-DMOESSM_NLOHMANN_INCLUDE="$PWD/.nlohmann")  # the GPU machine has no Debian packages
cmake -S . -B "$build" -G Ninja -DMOESSM_CUDA=OFF -DMOESSM_TESTS=OFF -DMOESSM_BENCH=OFF "${NL[@]}" > "$OUT/hf_build.log" 2>&1
ninja -C "$build" moessm >> "$OUT/hf_build.log" 2>&1
python3 -c "import transformers, torch; print('transformers', transformers.__version__, 'torch', torch.__version__)"
status=0
for cfg in configs/tiny_dense.json configs/hf_check.json; do
  name=$(basename "$cfg" .json)
  "$build/moessm" init --config "$cfg" --out "/tmp/hf_$name" --seed 5 --overwrite > /dev/null
  echo "== $cfg"
  PYTHONUNBUFFERED=1 python3 tools/hf_compare.py --moessm "$build/moessm" --model "/tmp/hf_$name" \
      --seqs 3 --len 150 --grads 2>&1 | grep -v -i warn | tee -a "$OUT/hf_compare.log" || status=1
done
exit $status
