#!/usr/bin/env bash
# Artifacts benchmark: one task keeps 1,000 artifacts of 100 KB (through $SLUICE_ARTIFACTS,
# into the local folder store), and a second task reads every one back through
# `tasks.<id>.artifacts[...]` in four tasks of 250 (each fetched from the store into its cache and checked against
# its digest). The same two tasks passing the files through a plain folder are the floor.
#
#   benches/artifacts.sh [PATH_TO_SLUICE] [RUNS]   (default: builds target/release/sluice, 5 runs)
#
# Prints the median wall time of each `sluice run` and the difference: the cost of keeping and
# reading back 1,000 × 100 KB (100 MB) as artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ge 1 ]; then
  sluice=$(realpath "$1")
else
  cargo build --release --quiet
  sluice=$(realpath "${CARGO_TARGET_DIR:-target}/release/sluice")
fi
runs=${2:-5}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wf"
# 100 KB of random bytes, copied 1,000 times with a different first line, so every blob is
# distinct (content addressing would otherwise store one).
head -c 102400 /dev/urandom > "$work/seed"

cat > "$work/wf/artifacts.yaml" <<'YAML'
id: artifacts
tasks:
  produce:
    operator: shell
    with:
      command: |
        for i in $(seq 1 1000); do
          { echo "$i"; cat "$SEED"; } | head -c 102400 > "$SLUICE_ARTIFACTS/part-$i.bin"
        done
    env: { SEED: "{{ vars.seed }}" }
YAML
# Four readers of 250 artifacts each: one command line naming all 1,000 paths would pass
# Linux's 128 KiB limit for a single argument.
for part in 0 1 2 3; do
  cat >> "$work/wf/artifacts.yaml" <<YAML
  consume$part:
    operator: shell
    needs: [produce]
    with:
      command: |
        cat {% for name in (tasks.produce.artifacts | list)[$((part * 250)):$(((part + 1) * 250))] %}'{{ tasks.produce.artifacts[name] }}' {% endfor %} | wc -c
YAML
done

cat > "$work/wf/floor.yaml" <<'YAML'
id: floor
tasks:
  produce:
    operator: shell
    with:
      command: |
        mkdir -p "$OUT"
        for i in $(seq 1 1000); do
          { echo "$i"; cat "$SEED"; } | head -c 102400 > "$OUT/part-$i.bin"
        done
    env: { SEED: "{{ vars.seed }}", OUT: "{{ vars.out }}" }
  consume:
    operator: shell
    needs: [produce]
    with:
      command: cat "$OUT"/part-*.bin | wc -c
    env: { OUT: "{{ vars.out }}" }
YAML

cat > "$work/sluice.toml" <<TOML
database = "sluice.db"
[vars]
seed = "$work/seed"
out = "$work/floor-out"
TOML

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

time_runs() {
  local file=$1
  for _ in $(seq 1 "$runs"); do
    rm -rf "$work/sluice.db"* "$work/artifacts" "$work/floor-out"
    local start end
    start=$(date +%s%N)
    (cd "$work" && "$sluice" run "wf/$file" >/dev/null 2>&1) || { echo "run of $file failed" >&2; exit 1; }
    end=$(date +%s%N)
    echo $(((end - start) / 1000000))
  done | median
}

artifacts_ms=$(time_runs artifacts.yaml)
blobs=$(find "$work/artifacts/sha256" -type f | wc -l)
[ "$blobs" -eq 1000 ] || { echo "expected 1000 blobs in the store, found $blobs" >&2; exit 1; }
floor_ms=$(time_runs floor.yaml)
echo "| benchmark | median of $runs runs |"
echo "|---|---:|"
echo "| 1,000 × 100 KB kept as artifacts and read back (\`sluice run\`) | ${artifacts_ms} ms |"
echo "| floor: the same files through a plain folder | ${floor_ms} ms |"
echo "| artifacts' cost (difference) | $((artifacts_ms - floor_ms)) ms |"
