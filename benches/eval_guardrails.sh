#!/usr/bin/env bash
# The guardrails at production volume (BENCHMARKS.md): 1,000,000 outputs of about 300
# characters scanned for PII and blocklist hits by `eval`'s compiled pattern sets, and by
# Python's `re` doing the same checks on the same outputs, in one run.
# Usage: benches/eval_guardrails.sh [--release] [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
if [ "${1:-}" = "--release" ]; then
  profile=(--release)
  shift
fi
count="${1:-1000000}"
EVAL_BENCH_OUTPUTS="$count" cargo test "${profile[@]}" --lib \
  operators::eval::guardrails::tests::scan_a_million_outputs -- --ignored --nocapture 2>&1 \
  | grep '^rust:'
python3 benches/eval_guardrails.py "$count"
