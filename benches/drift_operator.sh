#!/usr/bin/env bash
# The `drift` operator's whole task on 1,000,000 rows x 20 numeric columns: reading both CSV
# files (190 MB each), checking every column with the default methods and keeping the
# histograms artifact, run by `sluice run` the way a workflow runs it. The figure is the
# task's own duration (its try's start to its end, as the store records them: no process
# start-up), median of the runs.
#
#   benches/drift_operator.sh [PATH_TO_SLUICE] [RUNS]   (default: builds target/release/sluice, 3 runs)
#
# The data files are the crate benchmark's (drift/examples/bench.rs, seeded), made once in
# DRIFT_BENCH_DIR (default: $TMPDIR/sluice-drift-bench), so the figure sits beside the crate's.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ge 1 ]; then
  sluice=$(realpath "$1")
else
  cargo build --release --quiet --bin sluice
  sluice=$(realpath "${CARGO_TARGET_DIR:-target}/release/sluice")
fi
runs=${2:-3}
rows=${DRIFT_BENCH_ROWS:-1000000}
dir=${DRIFT_BENCH_DIR:-${TMPDIR:-/tmp}/sluice-drift-bench}
reference="$dir/reference_${rows}x20.csv"
current="$dir/current_${rows}x20.csv"
if [ ! -f "$reference" ] || [ ! -f "$current" ]; then
  # The crate's benchmark writes the files, then checks them once itself (Evidently skipped).
  env -u SLUICE_TEST_DRIFT_PYTHON cargo run --release --quiet -p sluice-drift --example bench -- \
    --rows "$rows" --columns 20 --dir "$dir" --repeat 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/drift.yaml" <<YAML
id: drift_bench
tasks:
  detect:
    operator: drift
    with: { reference: "$reference", current: "$current" }
YAML

durations=()
cpus=()
TIMEFORMAT='%U %S'
for i in $(seq 1 "$runs"); do
  out="$work/run-$i.json"
  # CPU time of the whole process (user + system over all threads), start-up included: on a
  # shared machine it says more than wall time.
  cpu=$( { time (cd "$work" && SLUICE_DATABASE_URL="$work/sluice-$i.db" "$sluice" run drift.yaml --json > "$out"); } 2>&1 | tail -n 1 | awk '{print $1 + $2}')
  cpus+=("$cpu")
  ms=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["tasks"]["detect"]; assert t["state"]=="success", t; o=t["outputs"]; print(t["duration_ms"]); print("drifted %d/%d (share %.2f)" % (len(o["drifted_columns"]), len(o["columns"]), o["drift_share"]), file=sys.stderr)' "$out")
  echo "run $i: task ${ms} ms, process CPU ${cpu} s"
  durations+=("$ms")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "drift task, ${rows} rows x 20 columns: median ${median_ms:=$(median "${durations[@]}")} ms wall, $(median "${cpus[@]}") s CPU, of ${runs} runs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
