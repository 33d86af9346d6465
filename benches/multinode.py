#!/usr/bin/env python3
"""Multi-node benchmarks on PostgreSQL: one `sluice serve --no-workers` and 1, 2 and 4
`sluice worker` processes run 10,000 `noop` tasks (throughput), and a one-task run is
triggered through the API while workers wait (trigger → task start latency).

    benches/multinode.py [PATH_TO_SLUICE]     (default: target/release/sluice, built first)

Each throughput row also gives the CPU time the run cost, read from /proc: the `serve`
process, the workers together, and PostgreSQL (its live processes plus the backends it reaped),
so a figure can be told apart from a busy machine; the load average before the runs is printed
too. PostgreSQL comes from SLUICE_BENCH_POSTGRES_URL (default: the local server's `test`
database); each measurement gets a fresh schema, dropped afterwards (psql is needed). Prints a
Markdown table; BENCHMARKS.md quotes it. Traffic goes to 127.0.0.1 only, and every process it
starts is stopped before it exits.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import (TOKEN, free_port, parse_time, percentile, request,  # noqa: E402
                   sluice_binary, stop)

POSTGRES = os.environ.get("SLUICE_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
TASKS = 10_000
REPEATS = 3


def psql(sql):
    return subprocess.run(["psql", POSTGRES, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          capture_output=True, text=True, check=True).stdout.strip()


class Schema:
    """A fresh schema and the URL that scopes connections to it."""

    def __enter__(self):
        self.name = f"sluice_bench_{uuid.uuid4().hex}"
        psql(f"CREATE SCHEMA {self.name}")
        separator = "&" if "?" in POSTGRES else "?"
        self.url = f"{POSTGRES}{separator}options=-c%20search_path%3D{self.name}"
        return self

    def query(self, sql):
        return psql(f"SET search_path TO {self.name}; {sql}")

    def __exit__(self, *exc):
        psql(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


class Process:
    def __init__(self, args, workdir, url):
        env = dict(os.environ, SLUICE_API_TOKEN=TOKEN, SLUICE_LOG="warn", SLUICE_DATABASE_URL=url)
        self.proc = subprocess.Popen(args, cwd=workdir, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        stop(self.proc)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid, children=False):
    """User + system CPU of a live process (and of the children it reaped), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def postgres_cpu():
    """CPU of every process named postgres, with what the postmasters reaped from backends
    that exited; only the difference between two readings means anything."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            postmaster = (Path(f"/proc/{parent}/comm").read_text().strip() != "postgres")
            total += cpu_seconds(int(entry.name), children=postmaster)
        except (OSError, ValueError, IndexError):
            continue  # a backend that exited meanwhile
    return total


def cluster(binary, workdir, flows, url, workers):
    """Starts the scheduler and `workers` worker processes; returns (base URL, processes)."""
    port = free_port()
    procs = [Process([binary, "serve", "--no-workers", "--workflows", str(flows),
                      "--bind", f"127.0.0.1:{port}"], workdir, url)]
    for i in range(workers):
        procs.append(Process([binary, "worker", "--name", f"w{i}", "--concurrency", "256"],
                             workdir, url))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if request("GET", base + "/healthz")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("serve did not become healthy")
        time.sleep(0.01)
    return base, procs


def wait_run(base, run_id, limit=300):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, run = request("GET", f"{base}/api/v1/runs/{run_id}")
        if run["state"] in ("success", "failed", "cancelled"):
            return run
        time.sleep(0.01)
    raise RuntimeError(f"run {run_id} did not end")


def throughput(binary, tmp, flows, workers):
    """Task instances per second from the first task start to the last task end, the run's
    wall time, and the median CPU seconds of (serve, all workers, PostgreSQL) per run."""
    rates, walls, cpus = [], [], []
    for repeat in range(REPEATS):
        work = tmp / f"w{workers}-{repeat}"
        work.mkdir()
        with Schema() as schema:
            base, procs = cluster(binary, work, flows, schema.url, workers)
            try:
                time.sleep(1.0)  # every worker connected and listening
                before = [procs[0].cpu(), sum(p.cpu() for p in procs[1:]), postgres_cpu()]
                _, created = request("POST", base + "/api/v1/workflows/noop10k/runs", {"params": {}})
                run = wait_run(base, created["run_id"])
                assert run["state"] == "success", run
                after = [procs[0].cpu(), sum(p.cpu() for p in procs[1:]), postgres_cpu()]
                cpus.append([b - a for a, b in zip(before, after)])
                span = float(schema.query(
                    "SELECT EXTRACT(EPOCH FROM MAX(ended_at) - MIN(started_at)) FROM task_instances"))
                rates.append(TASKS / span)
                walls.append((parse_time(run["ended_at"]) - parse_time(run["created_at"])).total_seconds())
            finally:
                for proc in procs:
                    proc.stop()
    cpu = [statistics.median(c[i] for c in cpus) for i in range(3)]
    return statistics.median(rates), statistics.median(walls), cpu


def latency(binary, tmp, flows):
    """Run created by the API → its task started on a worker, with one idle worker."""
    work = tmp / "latency"
    work.mkdir()
    with Schema() as schema:
        base, procs = cluster(binary, work, flows, schema.url, 1)
        try:
            time.sleep(1.0)
            lags = []
            for _ in range(50):
                _, created = request("POST", base + "/api/v1/workflows/one/runs", {"params": {}})
                run = wait_run(base, created["run_id"])
                task = run["tasks"]["only"]
                lags.append((parse_time(task["started_at"]) - parse_time(run["created_at"])).total_seconds())
            return statistics.median(lags), percentile(lags, 99)
        finally:
            for proc in procs:
                proc.stop()


def main():
    binary = sluice_binary()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flows = tmp / "flows"
        flows.mkdir()
        (flows / "one.yaml").write_text("tasks:\n  only: { operator: noop }\n")
        (flows / "noop10k.yaml").write_text(
            "tasks:\n" + "".join(f"  t{i}: {{ operator: noop }}\n" for i in range(TASKS)))
        baseline = None
        load = os.getloadavg()
        for workers in (1, 2, 4):
            rate, wall, (serve_cpu, workers_cpu, pg_cpu) = throughput(binary, tmp, flows, workers)
            baseline = baseline or rate
            rows.append((f"10,000 noop tasks, {workers} worker process{'es' if workers > 1 else ''}",
                         f"{rate:,.0f} TI/s", f"{wall:.2f} s", f"{rate / baseline:.2f}×",
                         f"{serve_cpu:.2f} / {workers_cpu:.2f} / {pg_cpu:.2f} s"))
        median, p99 = latency(binary, tmp, flows)
        rows.append(("API trigger → task started on a worker (50 runs)",
                     f"{median * 1000:.1f} ms", f"p99 {p99 * 1000:.1f} ms", "—", "—"))
    print(f"Load average before the runs: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)\n")
    print("| benchmark | median | run wall time / p99 | scaling vs 1 worker "
          "| CPU per run: serve / workers / PostgreSQL |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
