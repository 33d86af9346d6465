#!/usr/bin/env python3
"""Benchmarks of `sluice serve`: cold start to a 200 on /healthz, idle memory, API trigger to
the first task running, cron fire lag, and sustained API triggers under wrk.

    benches/serve.py [PATH_TO_SLUICE]     (default: target/release/sluice, built first)

Prints a Markdown table; BENCHMARKS.md quotes it. Traffic goes to 127.0.0.1 only, and every
process it starts is stopped before it exits.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def sluice_binary():
    if len(sys.argv) > 1:
        return str(Path(sys.argv[1]).resolve())
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "release" / "sluice")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Serve:
    def __init__(self, binary, workdir, workflows):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, SLUICE_API_TOKEN=TOKEN, SLUICE_LOG="warn")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [binary, "serve", "--workflows", str(workflows), "--bind", f"127.0.0.1:{self.port}",
             "--database", str(workdir / "sluice.db")],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_healthy(self, limit=30.0):
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - self.started
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.001)
        raise RuntimeError("serve did not become healthy")

    def rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        stop(self.proc)


def stop(proc):
    """SIGTERM, and SIGKILL if the process is still there after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def main():
    binary = sluice_binary()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shipped = tmp / "shipped"
        shutil.copytree(REPO / "workflows", shipped)

        # Cold start to /healthz (a new database each time) and idle RSS with the shipped workflows.
        starts, rss = [], []
        for i in range(10):
            work = tmp / f"cold{i}"
            work.mkdir()
            server = Serve(binary, work, shipped)
            try:
                starts.append(server.wait_healthy())
                time.sleep(1.0)
                rss.append(server.rss_mib())
            finally:
                server.stop()
        rows.append(("cold start to 200 on /healthz (new database)", statistics.median(starts) * 1000,
                     max(starts) * 1000, "ms", "≤ 300 ms"))
        rows.append(("idle RSS with the shipped workflows", statistics.median(rss), max(rss), "MiB",
                     "≤ 40 MiB"))

        # API trigger to the first task running, and cron fire lag.
        flows = tmp / "flows"
        flows.mkdir()
        (flows / "one.yaml").write_text("tasks:\n  only: { operator: noop }\n")
        (flows / "tick.yaml").write_text(
            'schedule: "* * * * * *"\ntasks:\n  t: { operator: noop }\n')
        work = tmp / "latency"
        work.mkdir()
        server = Serve(binary, work, flows)
        try:
            server.wait_healthy()
            # Runs for intervals that ended before the server was up are start-up catch-up,
            # not fire lag.
            healthy_at = datetime.now().astimezone()
            lags = []
            for _ in range(100):
                _, created = request("POST", server.base + "/api/v1/workflows/one/runs", {"params": {}})
                run_id = created["run_id"]
                while True:
                    _, run = request("GET", f"{server.base}/api/v1/runs/{run_id}")
                    task = run["tasks"]["only"]
                    if task.get("started_at"):
                        break
                    time.sleep(0.002)
                lags.append((parse_time(task["started_at"]) - parse_time(run["created_at"])).total_seconds())
            rows.append(("API trigger → first task running (run created → task started)",
                         statistics.median(lags) * 1000, percentile(lags, 99) * 1000, "ms", "≤ 20 ms"))

            time.sleep(12)
            _, page = request("GET", server.base + "/api/v1/runs?workflow=tick&limit=100")
            fire = [(parse_time(r["started_at"]) - parse_time(r["data_interval_end"])).total_seconds()
                    for r in page["runs"]
                    if r.get("started_at") and parse_time(r["data_interval_end"]) > healthy_at]
            rows.append((f"cron fire lag, interval end → run started ({len(fire)} runs)",
                         statistics.median(fire) * 1000, percentile(fire, 99) * 1000, "ms",
                         "p99 ≤ 50 ms"))

            # Sustained triggers: wrk posting runs for 10 s over 8 connections.
            script = tmp / "post.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                'wrk.body = \'{"params": {}}\'\n'
                f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                'done = function(summary, latency, requests)\n'
                '  io.write(string.format("RESULT %d %d %d %d %f %f\\n", summary.requests,\n'
                '    summary.errors.status, summary.errors.connect + summary.errors.read +\n'
                '    summary.errors.write + summary.errors.timeout, summary.duration,\n'
                '    latency:percentile(50), latency:percentile(99)))\n'
                'end\n')
            out = subprocess.run(
                ["wrk", "-t2", "-c8", "-d10s", "-s", str(script),
                 server.base + "/api/v1/workflows/one/runs"],
                capture_output=True, text=True, check=True).stdout
            result = next(line for line in out.splitlines() if line.startswith("RESULT"))
            _, total, status_errors, socket_errors, duration_us, p50_us, p99_us = result.split()
            per_second = int(total) / (float(duration_us) / 1e6)
            rows.append((f"sustained API triggers (wrk, 8 connections, 10 s): {int(total)} runs, "
                         f"{int(status_errors) + int(socket_errors)} errors",
                         per_second, float(p99_us) / 1000, "runs/s (max = p99 ms)", "—"))
        finally:
            server.stop()

    print("| benchmark | median | max / p99 | unit | target |")
    print("|---|---:|---:|---|---|")
    for name, median, worst, unit, target in rows:
        print(f"| {name} | {median:.1f} | {worst:.1f} | {unit} | {target} |")


if __name__ == "__main__":
    main()
