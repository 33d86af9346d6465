#!/usr/bin/env python3
"""How the engine's cost grows with work: `sluice run` over chains and fan-outs of 100 to
100,000 `noop` tasks (wall time per task and peak memory), and `sluice serve` running many
runs of ten tasks at once (time per task from the first trigger to the last run's end, and
peak memory).

    benches/growth.py [PATH_TO_SLUICE] [--sizes 100,1000,10000,100000] [--runs 100,1000]

Each figure is the median of `--repeat` runs (3 by default; 1 for 100,000 tasks). Prints a
Markdown table; BENCHMARKS.md quotes it. Traffic goes to 127.0.0.1 only, and every process it
starts is stopped before it exits.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# `serve.py`'s helpers, imported without leaving a bytecode cache in the repository.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import TOKEN, Serve, sluice_binary  # noqa: E402


def write_chain(path, n):
    with open(path, "w") as f:
        f.write(f"id: chain{n}\ntasks:\n  t1: {{ operator: noop }}\n")
        for i in range(2, n + 1):
            f.write(f"  t{i}: {{ operator: noop, needs: [t{i - 1}] }}\n")


def write_fanout(path, n):
    with open(path, "w") as f:
        f.write(f"id: fanout{n}\ntasks:\n  root: {{ operator: noop }}\n")
        for i in range(1, n):
            f.write(f"  t{i}: {{ operator: noop, needs: [root] }}\n")


def timed_run(binary, workflow, db):
    """Wall seconds and peak RSS (MiB) of one `sluice run` on a fresh database."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    subprocess.run([binary, "logs", "none", "--database", str(db)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "run", str(workflow),
                          "--database", str(db)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"sluice run failed: {out.stderr[-2000:]}")
    rss_kib = int(out.stderr.strip().splitlines()[-1])
    return wall, rss_kib / 1024


def many_runs(binary, tmp, runs):
    """`serve` with `runs` runs of a ten-task workflow triggered at once: seconds from the
    first trigger to the last run's end, and serve's peak RSS (MiB)."""
    work = tmp / f"serve{runs}"
    flows = work / "flows"
    flows.mkdir(parents=True)
    tasks = "".join(f"  t{i}: {{ operator: noop{', needs: [t%d]' % (i - 1) if i > 1 else ''} }}\n"
                    for i in range(1, 11))
    (flows / "ten.yaml").write_text("tasks:\n" + tasks)
    server = Serve(binary, work, flows)
    try:
        server.wait_healthy()
        start = time.perf_counter()
        for _ in range(runs):
            req = urllib.request.Request(f"{server.base}/api/v1/workflows/ten/runs", data=b"{}",
                                         method="POST")
            req.add_header("Authorization", f"Bearer {TOKEN}")
            req.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(req, timeout=30) as resp:
                json.loads(resp.read())
        db = sqlite3.connect(f"file:{work / 'sluice.db'}?mode=ro", uri=True)
        deadline = time.perf_counter() + 600
        while time.perf_counter() < deadline:
            ended = db.execute(
                "SELECT COUNT(*) FROM runs WHERE state IN ('success', 'failed')").fetchone()[0]
            if ended >= runs:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError(f"{runs} runs did not end within 600 s")
        wall = time.perf_counter() - start
        db.close()
        peak = 0.0
        for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
        return wall, peak
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?")
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--runs", default="100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.argv = sys.argv[:1] + ([args.binary] if args.binary else [])
    binary = sluice_binary()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for shape, write in (("chain", write_chain), ("fan-out", write_fanout)):
            for n in (int(s) for s in args.sizes.split(",") if s):
                workflow = tmp / f"{shape}{n}.yaml"
                write(workflow, n)
                repeat = 1 if n >= 100_000 else args.repeat
                samples = [timed_run(binary, workflow, tmp / "bench.db") for _ in range(repeat)]
                wall = statistics.median(s[0] for s in samples)
                rss = statistics.median(s[1] for s in samples)
                rows.append((f"`sluice run`, {shape} of {n:,} noop tasks", n, wall, rss))
                print(rows[-1], file=sys.stderr)
        for runs in (int(s) for s in args.runs.split(",") if s):
            samples = [many_runs(binary, tmp, runs) for _ in range(max(1, args.repeat // 2))]
            wall = statistics.median(s[0] for s in samples)
            rss = statistics.median(s[1] for s in samples)
            rows.append((f"`sluice serve`, {runs:,} runs of a 10-task chain at once", runs * 10,
                         wall, rss))
            print(rows[-1], file=sys.stderr)
            shutil.rmtree(tmp / f"serve{runs}", ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"load average before the last figure: {load:.2f}")
    print("| work | tasks | wall time | per task | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for name, tasks, wall, rss in rows:
        print(f"| {name} | {tasks:,} | {wall * 1000:,.0f} ms | {wall / tasks * 1e6:,.1f} µs "
              f"| {rss:,.1f} MiB |")


if __name__ == "__main__":
    main()
