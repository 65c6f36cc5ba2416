#!/usr/bin/env bash
# Regenerates the seed corpora under fuzz/corpus/<harness>/ (checked in; run this only to refresh
# them): small valid files written by the moessm program itself (a tiny 2-layer model, a byte-level
# BPE tokenizer trained on a paragraph of Austen, shards, a state file, a 2-step training run's
# trainer_state.json) plus a few malformed variants made here with python3 (truncations, lying
# headers). Usage: fuzz/make_corpus.sh [PATH_TO_moessm] (default build/cpu/moessm, else
# build/test/moessm, else build/asan/moessm). Needs python3. Every seed stays small (< 64 KB).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
for c in build/cpu/moessm build/test/moessm build/asan/moessm; do
  [ -z "$bin" ] && [ -x "$c" ] && bin=$c
done
[ -n "$bin" ] && [ -x "$bin" ] || { echo "make_corpus.sh: no moessm program (build it, or pass its path)" >&2; exit 1; }
bin=$(realpath "$bin")
out=fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive

# The model fuzz_state_file.cpp builds (keep identical to its kModelJson), trained 2 steps.
cat > "$tmp/model.json" <<'JSON'
{"d_model": 8, "n_layer": 2, "vocab_size": 256, "d_state": 4,
  "d_conv": 4, "expand": 2, "pad_vocab_size_multiple": 8, "mixer": "mamba"}
JSON
head -c 6000 data/corpus/austen/persuasion.txt > "$tmp/text.txt"
"$bin" init --config "$tmp/model.json" --out "$tmp/ckpt" --seed 1 > /dev/null
"$bin" tokenizer train --input "$tmp/text.txt" --vocab-size 300 --out "$tmp/tokenizer.json" > /dev/null
"$bin" prepare --input "$tmp/text.txt" --tokenizer byte --out "$tmp/data" --val-fraction 0.2 --quiet > /dev/null
"$bin" prepare --input "$tmp/text.txt" --tokenizer "$tmp/tokenizer.json" --out "$tmp/data_bpe" --val-fraction 0.2 --quiet > /dev/null
"$bin" generate --model "$tmp/ckpt" --tokenizer byte --prompt "It was" --max-new-tokens 2 \
  --state-out "$tmp/state1.safetensors" > /dev/null 2>&1
"$bin" generate --model "$tmp/ckpt" --tokenizer byte --prompt "ab" --prompt "cd" --max-new-tokens 1 \
  --state-out "$tmp/state2.safetensors" > /dev/null 2>&1
printf '73 32 119 97\n' > "$tmp/ids.txt"
"$bin" logits --model "$tmp/ckpt" --ids "$tmp/ids.txt" --out "$tmp/logits.npy" > /dev/null
"$bin" grads --model "$tmp/ckpt" --ids "$tmp/ids.txt" --out "$tmp/grads.safetensors" > /dev/null
"$bin" train --config "$tmp/model.json" --data "$tmp/data" --out "$tmp/run" --max-steps 2 \
  --batch-size 2 --seq-len 16 > /dev/null 2>&1 ||
  "$bin" train --config "$tmp/model.json" --data "$tmp/data" --out "$tmp/run" --max-steps 2 > /dev/null

rm -rf "$out"
mkdir -p "$out"/{fuzz_safetensors,fuzz_json,fuzz_tokenizer,fuzz_npy,fuzz_shards,fuzz_state_file,fuzz_trainer_state}
cp "$tmp/ckpt/model.safetensors" "$out/fuzz_safetensors/model.safetensors"
cp "$tmp/state2.safetensors" "$out/fuzz_safetensors/state.safetensors"
cp "$tmp/run/checkpoint/trainer_state.json" "$out/fuzz_trainer_state/trainer_state.json"
cp "$tmp/ckpt/config.json" "$out/fuzz_json/checkpoint_config.json"
cp "$tmp/model.json" "$out/fuzz_json/model.json"
cp "$tmp/data/meta.json" "$out/fuzz_json/meta.json"
cp configs/demo.json "$out/fuzz_json/demo.json"
cp "$tmp/tokenizer.json" "$out/fuzz_tokenizer/tokenizer.json"
cp "$tmp/logits.npy" "$out/fuzz_npy/logits_f4.npy"
cp "$tmp/data/val.bin" "$out/fuzz_shards/byte_val.bin"
cp "$tmp/data_bpe/val.bin" "$out/fuzz_shards/bpe_val.bin"
cp "$tmp/state1.safetensors" "$out/fuzz_state_file/state_b1.safetensors"
cp "$tmp/state2.safetensors" "$out/fuzz_state_file/state_b2.safetensors"
if [ -f "$tmp/grads.safetensors" ] && [ "$(stat -c %s "$tmp/grads.safetensors")" -lt 65536 ]; then
  cp "$tmp/grads.safetensors" "$out/fuzz_safetensors/grads.safetensors"
fi

python3 - "$out" "$tmp" <<'PY'
# Malformed and hand-made seeds: each a small file next to the valid ones.
import json, os, struct, sys
out, tmp = sys.argv[1], sys.argv[2]
def w(h, name, data):
    with open(os.path.join(out, h, name), "wb") as f: f.write(data)
def st(header, data=b""):
    hb = json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + data
# safetensors
w("fuzz_safetensors", "dtypes.safetensors", st({"__metadata__": {"k": "v"},
    "a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
    "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [4, 8]},
    "c": {"dtype": "F64", "shape": [1], "data_offsets": [8, 16]},
    "d": {"dtype": "I32", "shape": [1], "data_offsets": [16, 20]},
    "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [20, 20]}}, bytes(range(20))))
w("fuzz_safetensors", "overlap.safetensors", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)))
w("fuzz_safetensors", "huge_shape.safetensors", st({"a": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 8]}}, bytes(8)))
w("fuzz_safetensors", "huge_empty_shape.safetensors", st({"a": {"dtype": "F32", "shape": [4611686018427387904, 8, 0], "data_offsets": [0, 0]}}, b""))
w("fuzz_safetensors", "header_too_long.bin", struct.pack("<Q", 1 << 40) + b"{}")
m = open(os.path.join(out, "fuzz_safetensors", "model.safetensors"), "rb").read()
w("fuzz_safetensors", "truncated.safetensors", m[:200])
# json
w("fuzz_json", "rom_layers.json", json.dumps({"d_model": 16, "n_layer": 3, "vocab_size": 64,
    "layers": ["mamba", {"type": "rom", "n_experts": 4, "top_k": 2},
               {"type": "swimba", "n_experts": 4, "top_k": 2}], "train": {"lr": 0.001}}).encode())
w("fuzz_json", "separated.json", json.dumps({"d_model": 16, "n_layer": 1, "vocab_size": 64, "dt_rank": "auto",
    "mixer": {"type": "separated_moe_ssm", "n_experts": 3, "top_k": 1}}).encode())
w("fuzz_json", "hf_mamba.json", json.dumps({"model_type": "mamba", "hidden_size": 16, "num_hidden_layers": 2,
    "vocab_size": 50, "state_size": 4, "conv_kernel": 4, "expand": 2, "use_bias": False}).encode())
w("fuzz_json", "syntax.json", b'{"a": [1, 2.5e3, -0, true, null, "\\u00e9\\ud83d\\ude00"], "b": {"c": {}}}')
w("fuzz_json", "bad_trailing.json", b'{"d_model": 16,}')
w("fuzz_json", "bad_deep.json", b"[" * 600)
w("fuzz_json", "big_numbers.json", b'{"d_model": 9223372036854775807, "n_layer": 1e308, "vocab_size": -1}')
# tokenizer
t = json.load(open(os.path.join(out, "fuzz_tokenizer", "tokenizer.json")))
tiny = dict(t); tiny["model"] = dict(t["model"])
vocab = t["model"]["vocab"]
tiny["model"]["vocab"] = {k: v for k, v in vocab.items() if v < 260}
tiny["model"]["merges"] = t["model"]["merges"][:3]
tiny["added_tokens"] = [a for a in t.get("added_tokens", []) if a.get("id", 0) < 260]
w("fuzz_tokenizer", "tiny.json", json.dumps(tiny).encode())
w("fuzz_tokenizer", "bad_merge.json", json.dumps(dict(tiny, model=dict(tiny["model"], merges=["zz qq"]))).encode())
w("fuzz_tokenizer", "not_bpe.json", json.dumps(dict(tiny, model={"type": "WordPiece", "vocab": {}})).encode())
w("fuzz_tokenizer", "truncated.json", json.dumps(tiny).encode()[:300])
# npy
def npy(descr, shape, data, version=1, fortran=False):
    h = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, "True" if fortran else "False",
        "".join("%d," % s for s in shape) if len(shape) == 1 else ", ".join(str(s) for s in shape))
    lenfmt = "<H" if version == 1 else "<I"
    pre = 6 + 2 + struct.calcsize(lenfmt)
    h = h + " " * ((64 - (pre + len(h) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack(lenfmt, len(h)) + h.encode() + data
w("fuzz_npy", "f8.npy", npy("<f8", [2, 2], struct.pack("<4d", 1, 2, 3, 4)))
w("fuzz_npy", "i4_v2.npy", npy("<i4", [3], struct.pack("<3i", 1, -2, 3), version=2))
w("fuzz_npy", "i8_v3_fortran.npy", npy("<i8", [2], struct.pack("<2q", 7, -7), version=3, fortran=True))
w("fuzz_npy", "scalar.npy", npy("<f4", [], struct.pack("<f", 1.5)))
w("fuzz_npy", "empty.npy", npy("<f4", [0, 5], b""))
w("fuzz_npy", "short_data.npy", npy("<f4", [4], struct.pack("<f", 1.0)))
w("fuzz_npy", "bad_descr.npy", npy(">f4", [1], b"\0\0\0\0"))
w("fuzz_npy", "huge_shape.npy", npy("<f4", [1 << 62, 1 << 62], b""))
w("fuzz_npy", "huge_empty_shape.npy", npy("<f4", [1318976251, 4611688876251, 0], b""))
# shards
def shard(ids, vocab, id_bytes=None, desc=b"byte", extra=b""):
    id_bytes = id_bytes or (2 if vocab <= 65535 else 4)
    h = b"MOESSMTK" + struct.pack("<IIII", 1, id_bytes, vocab, len(desc)) + struct.pack("<QQ", len(ids), 12345)
    h += desc.ljust(128, b"\0") + bytes(88)
    return h + b"".join(struct.pack("<H" if id_bytes == 2 else "<I", i) for i in ids) + extra
w("fuzz_shards", "u32_ids.bin", shard([0, 70000, 5, 69999, 1], 70001))
w("fuzz_shards", "empty.bin", shard([], 10))
w("fuzz_shards", "id_out_of_range.bin", shard([1, 2, 10], 10))
w("fuzz_shards", "size_mismatch.bin", shard([1, 2, 3], 10, extra=b"\0"))
w("fuzz_shards", "bad_width.bin", shard([1, 2], 10, id_bytes=3))
# state files: a wrong fingerprint and a truncated one
s = open(os.path.join(out, "fuzz_state_file", "state_b1.safetensors"), "rb").read()
w("fuzz_state_file", "truncated.safetensors", s[:len(s) // 2])
# trainer state
ts = json.load(open(os.path.join(out, "fuzz_trainer_state", "trainer_state.json")))
w("fuzz_trainer_state", "minimal.json", json.dumps({"step": 3, "elapsed_s": 0.5,
    "loader": {"seed": 7, "step": 3}}).encode())
w("fuzz_trainer_state", "wrong_tokens.json", json.dumps(dict(ts, loader=dict(ts["loader"], num_tokens=5))).encode())
w("fuzz_trainer_state", "negative_seed.json", json.dumps({"step": 1, "elapsed_s": 1,
    "loader": {"seed": -1, "step": 9223372036854775807, "num_tokens": 0}}).encode())
w("fuzz_trainer_state", "missing_loader.json", b'{"step": 1, "elapsed_s": 2.0}')
PY
du -sh "$out"; find "$out" -type f | wc -l
