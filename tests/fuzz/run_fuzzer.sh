#!/bin/sh
# Runs one libFuzzer target for a bounded time over its seed corpus. New inputs go to a
# scratch folder so the repository's corpus only changes when someone copies them in.
# Usage: run_fuzzer.sh FUZZER SEED_CORPUS SECONDS
set -eu
fuzzer=$(realpath "$1") seeds=$(realpath "$2") seconds=$3
if [ ! -x "$fuzzer" ]; then
  echo "fuzzer $fuzzer was not built" >&2
  exit 1
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 "$scratch" "$seeds"
