#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install what is missing, build the CPU program,
# train a byte-level BPE tokenizer (4,096 tokens) on Jane Austen's novels, prepare the data
# (persuasion.txt held out), train a small dense Mamba on the CPU, and sample from it.
# Everything goes under runs/demo/. Takes under 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
build=build/cpu
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOESSM_CUDA=OFF -DMOESSM_TESTS=OFF -DMOESSM_BENCH=OFF > /dev/null
ninja -C "$build" moessm
bin="$build/moessm"
out=runs/demo
mkdir -p "$out"
austen=data/corpus/austen
train_files="$austen/emma.txt,$austen/mansfieldpark.txt,$austen/northangerabbey.txt,$austen/prideprejudice.txt,$austen/sensesensibility.txt"

echo "== tokenizer: byte-level BPE, 4096 tokens, trained on the five training novels"
"$bin" tokenizer train --input "$train_files" --vocab-size 4096 --out "$out/tokenizer.json"
echo "== data: tokenise the corpus (persuasion.txt is the validation split)"
"$bin" prepare --input "$austen" --tokenizer "$out/tokenizer.json" --out "$out/data"
echo "== train: configs/demo.json"
export OMP_WAIT_POLICY=passive
"$bin" train --config configs/demo.json --data "$out/data" --out "$out/run" --overwrite  # a rerun replaces the last demo run
echo "== sample"
"$bin" generate --model "$out/run" --prompt "It is a truth universally acknowledged" \
    --max-new-tokens 200 --temperature 0.8 --top-k 40 --seed 1
echo
echo "== plot: $out/run/loss.png"
python3 tools/plot.py curves "$out/run" --labels demo --out "$out/run/loss.png" > /dev/null
echo "== done in $(( $(date +%s) - start )) s; run directory: $out/run (metrics.jsonl, loss.png, checkpoint -> checkpoint-<step>/)"
