#!/usr/bin/env bash
# Decision quality on the labelled dev sets (docs/quality.md).
# Reads the pairs from ../shared/data (override with PROMPTCACHE_PAIRS_DIR); never copies them.
# Writes bench/results/decision_quality/*.{txt,json} and docs/quality-{qqp,paws}.png.
# A vector cache (PROMPTCACHE_VECTOR_CACHE, default /tmp/promptcache-vectors) makes reruns fast.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
data="${PROMPTCACHE_PAIRS_DIR:-$repo/../shared/data}"
out="$repo/bench/results/decision_quality"
vectors="${PROMPTCACHE_VECTOR_CACHE:-/tmp/promptcache-vectors}"
pc="${PROMPTCACHE_BIN:-$repo/.venv/bin/promptcache}"
mkdir -p "$out" "$repo/docs"
# no calibration file, no environment threshold: the cache's default configuration
export PROMPTCACHE_DATA_DIR="$(mktemp -d)"
unset PROMPTCACHE_THRESHOLD PROMPTCACHE_STRICT_GUARDS PROMPTCACHE_VERIFIER
trap 'rm -rf "$PROMPTCACHE_DATA_DIR"' EXIT

run() {  # name file args...
  local name="$1" file="$2"; shift 2
  "$pc" eval "$data/$file" --vector-cache "$vectors" --quiet --json "$out/$name.json" "$@" \
    | tee "$out/$name.txt"
}
# the plots and tables of docs/quality.md: QQP sampled (a few minutes from cold), PAWS whole
run qqp_limit20000 qqp_dev.pairs.jsonl.gz --limit 20000 --plot "$repo/docs/quality-qqp.png"
run paws_all paws_dev.pairs.jsonl.gz --plot "$repo/docs/quality-paws.png"
# parameters were chosen on the fit halves; both halves reported, whole sets
for part in fit holdout; do
  run "qqp_$part" qqp_dev.pairs.jsonl.gz --part "$part" --no-plot --check 500
  run "paws_$part" paws_dev.pairs.jsonl.gz --part "$part" --no-plot --check 500
done
