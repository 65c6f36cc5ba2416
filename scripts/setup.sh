#!/usr/bin/env bash
# Installs what moessm needs from Debian's packages (only what is missing). Safe to re-run.
# Needs root (or sudo) only when something is missing. Extra Debian package names given as
# arguments are installed the same way (scripts/fuzz.sh: clang libclang-rt-dev libomp-dev).
set -euo pipefail
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in g++ cmake ninja-build libopenblas-dev libpcre2-dev libgtest-dev nlohmann-json3-dev python3-matplotlib openmpi-bin libopenmpi-dev "$@"; do
  have_pkg "$p" || need+=("$p")
done
have_pkg zstd || need+=(zstd)   # tools/study.py decompresses the study corpus (data/corpus/*.zst)
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
else
  echo "[setup] all Debian packages present"
fi
