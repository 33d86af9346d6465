#!/usr/bin/env bash
# Engine benchmarks: each figure is one `sluice` process on a durable SQLite file, process
# start included, timed by hyperfine (median of several runs).
#
#   benches/engine.sh [PATH_TO_SLUICE]      (default: builds and uses target/release/sluice)
#
# Writes a Markdown table to stdout; BENCHMARKS.md quotes it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ge 1 ]; then
  sluice=$(realpath "$1")
else
  cargo build --release --quiet
  sluice=$(realpath "${CARGO_TARGET_DIR:-target}/release/sluice")
fi
command -v hyperfine >/dev/null || { echo "hyperfine is required (apt-get install hyperfine)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A 40-task linear chain of `shell: true`.
{
  echo "id: chain40"
  echo "tasks:"
  for i in $(seq 1 40); do
    echo "  t$i:"
    echo "    operator: shell"
    echo "    with: { command: \"true\" }"
    [ "$i" -gt 1 ] && echo "    needs: [t$((i - 1))]"
  done
} > "$work/chain40.yaml"

# A 1,000-way fan-out of `shell: true` below one root.
{
  echo "id: fanout1000"
  echo "tasks:"
  echo "  root: { operator: noop }"
  for i in $(seq 1 1000); do
    echo "  t$i: { operator: shell, needs: [root], with: { command: \"true\" } }"
  done
} > "$work/fanout1000.yaml"

# 10,000 independent `noop` tasks.
{
  echo "id: noop10k"
  echo "tasks:"
  for i in $(seq 1 10000); do
    echo "  t$i: { operator: noop }"
  done
} > "$work/noop10k.yaml"

# 1,000 files of ten tasks each, for `validate`.
mkdir -p "$work/many"
for f in $(seq 1 1000); do
  {
    echo "id: wf$f"
    echo "params: { n: { type: integer, default: 3 } }"
    echo "tasks:"
    echo "  t1: { operator: shell, with: { command: \"echo {{ params.n }}\" } }"
    for i in $(seq 2 10); do
      echo "  t$i: { operator: noop, needs: [t$((i - 1))] }"
    done
  } > "$work/many/wf$f.yaml"
done

# The floor for the chain: 40 sequential `sh -c true` spawns from a shell loop.
cat > "$work/floor.sh" <<'FLOOR'
for i in $(seq 1 40); do sh -c true; done
FLOOR

db="$work/bench.db"
# Each run starts from an empty database that is already migrated, as `./sluice.db` is after
# the first command; creating the schema is measured separately.
"$sluice" logs none --database "$work/template.db" >/dev/null 2>&1 || true
fresh_db="rm -f $db-wal $db-shm; cp $work/template.db $db"
results=()

# bench NAME RUNS COMMAND [PREPARE]: hyperfine's median, min and max for one command.
bench() {
  local name=$1 runs=$2 command=$3 prepare=${4:-true}
  local json="$work/$(echo "$name" | tr -c 'a-z0-9' '_').json"
  hyperfine --style none --warmup 2 --runs "$runs" --prepare "$prepare" -i \
    --export-json "$json" -n "$name" "$command" >&2
  results+=("$json")
}

bench "40-task shell chain" 20 "$sluice run $work/chain40.yaml --database $db" "$fresh_db"
bench "floor: 40 x sh -c true" 20 "sh $work/floor.sh"
bench "1,000-way shell fan-out" 10 "$sluice run $work/fanout1000.yaml --database $db" "$fresh_db"
bench "10,000 parallel noop tasks" 10 "$sluice run $work/noop10k.yaml --database $db" "$fresh_db"
bench "validate 1,000 ten-task files" 10 "$sluice validate $work/many"
bench "schema creation (first command on a new database)" 20 "$sluice logs none --database $db" "rm -f $db $db-wal $db-shm"

python3 - "${results[@]}" <<'PY'
import json, sys
print("| benchmark | median | min | max |")
print("|---|---:|---:|---:|")
for path in sys.argv[1:]:
    r = json.load(open(path))["results"][0]
    ms = lambda s: f"{s * 1000:.1f} ms"
    print(f"| {r['command']} | {ms(r['median'])} | {ms(r['min'])} | {ms(r['max'])} |")
PY
