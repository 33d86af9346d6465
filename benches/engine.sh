#!/usr/bin/env bash
# Engine benchmarks: each figure is one `sluice` process on a durable SQLite file, process
# start included, timed by hyperfine (median of several runs), beside its floor measured in
# the same run:
#   - the chain: 40 sequential `sh -c true` from a shell loop;
#   - the fan-out: 1,000 `sh -c true` started at once from a shell loop, then waited for;
#   - the noops: the database writes the engine cannot do without, done by Python's sqlite3
#     on the same kind of file (WAL, synchronous=NORMAL): 10,000 task rows created and queued
#     (one commit each), then claimed and completed in batches of the worker's concurrency
#     (one commit per batch for each), as the rule "every state change is committed before it
#     takes effect" requires.
#
#   benches/engine.sh [PATH_TO_SLUICE] [BASELINE_SLUICE]
#
# (default: builds and uses target/release/sluice). With a second binary, the engine figures
# are measured for both, interleaved in the same run. Writes a Markdown table to stdout;
# BENCHMARKS.md quotes it.
set -euo pipefail
cd "$(dirname "$0")/.."

baseline=""
if [ $# -ge 2 ]; then
  baseline=$(realpath "$2")
fi
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

# The floor for the fan-out: 1,000 `sh -c true` at once.
cat > "$work/floor_fanout.sh" <<'FLOOR'
for i in $(seq 1 1000); do sh -c true & done
wait
FLOOR

# The floor for the noops: the committed writes of 10,000 tasks (see the top of this file).
# The worker's default concurrency (`WorkerConfig::default_concurrency`: 8 per CPU, at least 8).
concurrency=$(( $(nproc) * 8 ))
[ "$concurrency" -lt 8 ] && concurrency=8
cat > "$work/floor_noop.py" <<FLOOR
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS ti (id INTEGER PRIMARY KEY, run_id TEXT, task_id TEXT, "
           "state TEXT, priority INTEGER, worker TEXT, outputs TEXT, created_at TEXT, "
           "queued_at TEXT, started_at TEXT, ended_at TEXT)")
db.execute("CREATE INDEX IF NOT EXISTS ti_claim ON ti (state, priority DESC, id)")
db.execute("DELETE FROM ti")
db.execute("BEGIN")
db.executemany("INSERT INTO ti (run_id, task_id, state, priority, created_at) "
               "VALUES ('r', ?, 'pending', 0, datetime('now'))",
               ((f"t{i}",) for i in range(10000)))
db.execute("COMMIT")
db.execute("UPDATE ti SET state = 'queued', queued_at = datetime('now') WHERE state = 'pending'")
while True:
    ids = [r[0] for r in db.execute(
        "UPDATE ti SET state = 'running', worker = 'w', started_at = datetime('now') WHERE id IN "
        "(SELECT id FROM ti WHERE state = 'queued' ORDER BY priority DESC, id LIMIT $concurrency) "
        "RETURNING id").fetchall()]
    if not ids:
        break
    marks = ",".join("?" * len(ids))
    db.execute(f"UPDATE ti SET state = 'success', outputs = '{{}}', ended_at = datetime('now') "
               f"WHERE state = 'running' AND id IN ({marks})", ids)
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

floor_db="$work/floor.db"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# Each engine figure is measured right after its floor, so both see the same load.
bench "floor: 40 x sh -c true" 20 "sh $work/floor.sh"
bench "40-task shell chain" 20 "$sluice run $work/chain40.yaml --database $db" "$fresh_db"
[ -n "$baseline" ] && bench "baseline: 40-task shell chain" 20 "$baseline run $work/chain40.yaml --database $db" "$fresh_db"
bench "floor: 1,000 x sh -c true at once" 10 "sh $work/floor_fanout.sh"
bench "1,000-way shell fan-out" 10 "$sluice run $work/fanout1000.yaml --database $db" "$fresh_db"
[ -n "$baseline" ] && bench "baseline: 1,000-way shell fan-out" 10 "$baseline run $work/fanout1000.yaml --database $db" "$fresh_db"
bench "floor: the committed writes of 10,000 tasks (sqlite3)" 10 "python3 $work/floor_noop.py $floor_db"
bench "10,000 parallel noop tasks" 10 "$sluice run $work/noop10k.yaml --database $db" "$fresh_db"
[ -n "$baseline" ] && bench "baseline: 10,000 parallel noop tasks" 10 "$baseline run $work/noop10k.yaml --database $db" "$fresh_db"
bench "validate 1,000 ten-task files" 10 "$sluice validate $work/many"
bench "schema creation (first command on a new database)" 20 "$sluice logs none --database $db" "rm -f $db $db-wal $db-shm"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs; load average before: $load_before, after: $load_after"
python3 - "${results[@]}" <<'PY'
import json, sys
print("| benchmark | median | min | max | × floor |")
print("|---|---:|---:|---:|---:|")
floor = None
for path in sys.argv[1:]:
    r = json.load(open(path))["results"][0]
    name = r["command"]
    ms = lambda s: f"{s * 1000:.1f} ms"
    ratio = ""
    if name.startswith("floor:"):
        floor = r["median"]
    elif floor is not None and not name.startswith(("validate", "schema")):
        ratio = f"{r['median'] / floor:.2f}×"
    print(f"| {name} | {ms(r['median'])} | {ms(r['min'])} | {ms(r['max'])} | {ratio} |")
PY
