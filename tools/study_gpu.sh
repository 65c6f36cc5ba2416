#!/usr/bin/env bash
# study_gpu.sh: runs issue 17's experiments (tools/study.py --device cuda --resume) on the GPU
# machine inside one bounded call, and packs what they produced for the trip back.
#
# It builds only the moessm program (CUDA on, sm_90 unless CUDA_ARCH says otherwise) unless
# ./gpu-bin/moessm.gz holds one that runs (what an earlier call brought back as $OUT/moessm.gz,
# carried again: saves the build), then runs each experiment of $STUDY in turn into $STUDY_OUT
# (default docs/study: the committed results, which travel with the working tree) with --resume,
# so every run with a record there is reused and only the missing ones train. Everything stops
# at the DEADLINE (seconds after the start): the experiment in flight is interrupted (its
# finished runs are already recorded under done/), and the results so far are packed into
# $OUT/study.tar.gz (no checkpoints, no prepared data) with the log in $OUT/study_gpu.log; the
# binary goes to $OUT/moessm.gz when it was built here. Back here: extract the tarball over
# docs/study, run `tools/study.py NAME --device cuda --report-only --out docs/study` to redraw
# the plots, commit. The GPU machine has no zstd: carry the prepared corpus,
# docs/study/_data/corpus-* (ignored by git; prepared here by any study.py call, without its
# text/ folder: rm -r docs/study/_data/corpus-*/text), for the language-model experiments.
#
# Knobs (environment):
#   STUDY="swimba_vs_dense rom_routers rom_weight_at"   experiments (configs/study/NAME.json), in
#                               this order (the default: the next ones docs/results.md suggests)
#   STUDY_JOBS=8                runs at a time per experiment on the one GPU (small models)
#   PARALLEL=0                  1: all experiments of $STUDY at once (each with STUDY_JOBS); give it
#                               experiments that share no runs (a run two of them need and neither
#                               has finished would train twice), and no `speed` block (timed alone)
#   DEADLINE=540                seconds from the start after which nothing new starts
#   CUDA_ARCH=90                CMAKE_CUDA_ARCHITECTURES
# Vendored dependencies as in tools/gpu_check.sh (.gtest, .nlohmann: carry them), and PCRE2 for
# the study's byte-level BPE tokenizer (the GPU machine has none): mkdir .pcre2 && cp
# /usr/include/pcre2.h .pcre2/ && cp -L /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0 .pcre2/ && cp
# .pcre2/libpcre2-8.so.0 .pcre2/libpcre2-8.so (no links: carry copies files); carry .pcre2 on
# every call (the binary finds it there at run time).
# Exit status: 0 when every experiment finished (each wrote results.json), 3 when the deadline
# came first, 2 when the build failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out/study_gpu}
BUILD=${BUILD:-$ROOT/build-gpu}
STUDY=${STUDY:-"swimba_vs_dense rom_routers rom_weight_at"}
SOUT=${STUDY_OUT:-docs/study}
JOBS=${STUDY_JOBS:-8}
DEADLINE=${DEADLINE:-540}
t0=$(date +%s)
mkdir -p "$OUT" "$ROOT/$SOUT"
LOG="$OUT/study_gpu.log"
cd "$ROOT"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=passive
[ -d "$ROOT/.pcre2" ] && export LD_LIBRARY_PATH="$ROOT/.pcre2${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1; } > "$LOG" 2>&1

BIN=/tmp/moessm-carried
if [ -f "$ROOT/gpu-bin/moessm.gz" ] && gzip -dc "$ROOT/gpu-bin/moessm.gz" > "$BIN" && chmod +x "$BIN" &&
   "$BIN" --version >> "$LOG" 2>&1; then
  echo "using the carried gpu-bin/moessm.gz" | tee -a "$LOG"
else
  . "$ROOT/tools/gpu_configure.sh"
  gpu_configure "$ROOT" "$BUILD" OFF "$OUT/configure.log" || exit 2
  ninja -C "$BUILD" -j"$(nproc)" moessm > "$OUT/build.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 2; }
  rm -f "$OUT/configure.log" "$OUT/build.log"
  BIN="$BUILD/moessm"
  gzip -c "$BIN" > "$OUT/moessm.gz"
  echo "built moessm in $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
fi

one() {  # one experiment, bounded by the deadline; its own log when run beside others
  local e=$1 log=$2 left
  left=$(( DEADLINE - ($(date +%s) - t0) ))
  if [ "$left" -lt 30 ]; then echo "deadline: $e not started" | tee -a "$LOG"; return 3; fi
  echo "==== $e ($left s left) ====" | tee -a "$LOG"
  # timeout signals the whole process group: study.py and the moessm runs it started
  timeout --kill-after=10 "$left" python3 tools/study.py "$e" --device cuda --jobs "$JOBS" \
    --out "$SOUT" --resume --no-plot --moessm "$BIN" >> "$log" 2>&1
  local r=$?
  echo "==== $e: exit $r after $(( $(date +%s) - t0 )) s ====" | tee -a "$LOG"
  [ "$r" = 0 ] || return 3
}
# the study's tokenizer must load (a build without PCRE2 fails every language-model run at once)
tok=$(ls "$SOUT"/_data/corpus-*/tokenizer.json 2>/dev/null | head -1)
if [ -n "$tok" ]; then
  "$BIN" tokenizer encode --tokenizer "$tok" --text "a test" >> "$LOG" 2>&1 ||
    { echo "this moessm cannot load $tok (PCRE2?): stopping"; tail -3 "$LOG"; exit 2; }
fi
rc=0
if [ "${PARALLEL:-0}" = 1 ]; then
  pids=()
  for e in $STUDY; do one "$e" "$OUT/$e.log" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || rc=3; done
  for e in $STUDY; do cat "$OUT/$e.log" >> "$LOG"; rm -f "$OUT/$e.log"; done
else
  for e in $STUDY; do one "$e" "$LOG" || rc=3; done
fi

(cd "$ROOT/$SOUT" && tar czf "$OUT/study.tar.gz" --exclude='./*/runs' --exclude='./*/speed/*/*' --exclude=./_data .)
ls -l "$OUT" | tee -a "$LOG"
grep -E "^\[study\] (\[[0-9]+/[0-9]+\]|[0-9]+ runs|wrote)|Traceback|rror" "$LOG" | tail -60
exit $rc
