#!/usr/bin/env python3
"""Page times of the web UI with a long history: seeds 100,000 runs (300,000 task instances)
straight into a SQLite database, starts `sluice serve` on it, logs in and times every page.

    benches/ui.py [PATH_TO_SLUICE] [--runs N] [--requests N] [--analyze]
        (default: target/release/sluice, built first; 100000 runs; 200 requests per page;
        --analyze gives SQLite's planner statistics first, as an operator's ANALYZE would)

Prints a Markdown table of p50/p95/max per page; BENCHMARKS.md quotes it. List pages are read
the way the UI pages them: the newest page, and a deep page through its cursor. Traffic goes to
127.0.0.1 only, and the server it starts is stopped before it exits.
"""

import argparse
import http.cookiejar
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password"
WORKFLOW = """description: A three-task pipeline with a long history.
params:
  model: { type: string, default: gpt-4o-mini, description: Model under test }
tasks:
  prepare: { operator: noop }
  evaluate: { operator: noop, needs: [prepare] }
  publish: { operator: noop, needs: [evaluate] }
"""
TASKS = ["prepare", "evaluate", "publish"]


def sluice_binary(given):
    if given:
        return str(Path(given).resolve())
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "release" / "sluice")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stamp(at):
    # The text form sqlx writes for a UTC timestamp in SQLite, so ordering and cursors match.
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000+00:00"


def seed(binary, workdir, runs, analyze=False):
    db = workdir / "sluice.db"
    subprocess.run(
        [binary, "migrate", "--database", str(db)], check=True, capture_output=True
    )
    con = sqlite3.connect(db)
    version = "bench-version"
    now = datetime.now(timezone.utc)
    con.execute(
        "INSERT INTO workflow_versions (hash, workflow_id, path, source, created_at) VALUES (?, ?, ?, ?, ?)",
        (version, "bench", str(workdir / "workflows" / "bench.yaml"), WORKFLOW, stamp(now)),
    )
    con.execute(
        "INSERT INTO workflows (id, paused, created_at, updated_at) VALUES ('bench', 0, ?, ?)",
        (stamp(now), stamp(now)),
    )
    states = ["success"] * 8 + ["failed"]
    run_rows, task_rows = [], []
    start = now - timedelta(minutes=runs)
    for i in range(runs):
        created = start + timedelta(minutes=i)
        state = states[i % len(states)]
        run_id = f"00000000-0000-7000-8000-{i:012d}"
        run_rows.append(
            (run_id, "bench", version, state, "schedule", None, '{"model":"gpt-4o-mini"}',
             stamp(created), stamp(created), stamp(created), None, stamp(created),
             stamp(created), stamp(created + timedelta(seconds=3)), stamp(created))
        )
        for n, task in enumerate(TASKS):
            task_state = "failed" if state == "failed" and n == 2 else "success"
            begun = created + timedelta(seconds=n)
            task_rows.append(
                (run_id, task, 1, task_state, 0, None, None, "bench", None, 0 if task_state == "success" else 1,
                 None, '{"score":0.93}', stamp(begun), stamp(begun), stamp(begun),
                 stamp(begun + timedelta(milliseconds=800)), "default")
            )
    con.executemany(
        "INSERT INTO runs (id, workflow_id, version_hash, state, trigger, triggered_by, params, "
        "logical_date, data_interval_start, data_interval_end, error, created_at, started_at, "
        "ended_at, scheduled_for) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        run_rows,
    )
    con.executemany(
        "INSERT INTO task_instances (run_id, task_id, try_number, state, priority, pool, not_before, "
        "worker, lease_expires_at, exit_code, error, outputs, created_at, queued_at, started_at, "
        "ended_at, queue) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        task_rows,
    )
    last = run_rows[-1][0]
    con.executemany(
        "INSERT INTO task_logs (run_id, task_id, try_number, stream, line, logged_at) VALUES (?, ?, 1, 'stdout', ?, ?)",
        [(last, "evaluate", f"scored row {n}", stamp(now)) for n in range(200)],
    )
    con.commit()
    # Sluice never runs ANALYZE, so by default the planner works without statistics, as in a
    # database nobody tuned; --analyze checks that the queries keep their indexes with them.
    if analyze:
        con.execute("ANALYZE")
        con.commit()
    con.close()
    return db, last


class Serve:
    def __init__(self, binary, workdir, db):
        self.port = free_port()
        env = dict(os.environ, SLUICE_ADMIN_PASSWORD=PASSWORD, SLUICE_LOG="warn")
        self.proc = subprocess.Popen(
            [binary, "serve", "--database", str(db), "--workflows", str(workdir / "workflows"),
             "--bind", f"127.0.0.1:{self.port}", "--no-workers"],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit("sluice serve did not start")
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def login(serve):
    """An opener that carries the session of `admin` logged in through the form."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_page = opener.open(serve.base + "/login", timeout=10).read().decode()
    token = re.search(r'name="login_token" value="([0-9a-f]+)"', login_page).group(1)
    form = urllib.parse.urlencode(
        {"name": "admin", "password": PASSWORD, "next": "/", "login_token": token}
    ).encode()
    opener.open(serve.base + "/login", data=form, timeout=10).read()
    return opener


def time_page(opener, url, requests):
    """Milliseconds of each of `requests` GETs of `url` after 5 warm-up ones, sorted."""
    for _ in range(5):
        opener.open(url, timeout=10).read()
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        with opener.open(url, timeout=10) as resp:
            resp.read()
            assert resp.status == 200, (url, resp.status)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times


def print_pages(opener, base, heading, pages, requests):
    """A Markdown table of p50, p95 and max of each page: `pages` is (label, path) pairs."""
    print(f"| {heading} | p50 | p95 | max |")
    print("|---|---:|---:|---:|")
    for label, url in pages:
        times = time_page(opener, base + url, requests)
        p95 = times[int(len(times) * 0.95) - 1]
        print(f"| {label} | {statistics.median(times):.1f} ms | {p95:.1f} ms | {times[-1]:.1f} ms |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--analyze", action="store_true")
    args = parser.parse_args()
    binary = sluice_binary(args.binary)
    with tempfile.TemporaryDirectory(prefix="sluice-ui-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "workflows").mkdir()
        (workdir / "workflows" / "bench.yaml").write_text(WORKFLOW)
        began = time.monotonic()
        db, last_run = seed(binary, workdir, args.runs, args.analyze)
        print(f"seeded {args.runs:,} runs in {time.monotonic() - began:.1f} s", file=sys.stderr)
        serve = Serve(binary, workdir, db)
        try:
            opener = login(serve)
            # A deep page: follow the cursor ten pages back.
            path = "/workflows/bench"
            for _ in range(10):
                page = opener.open(serve.base + path, timeout=10).read().decode()
                cursor = re.search(r'href="/workflows/bench\?cursor=([0-9a-f]+)"', page)
                if not cursor:
                    raise SystemExit("the workflow page has no older-runs link")
                path = f"/workflows/bench?cursor={cursor.group(1)}"
            pages = [
                ("/ (workflows)", "/"),
                ("/workflows/bench (newest 20 runs)", "/workflows/bench"),
                ("/workflows/bench?cursor=… (page 11)", path),
                ("/runs/{id} (3 tasks, 200 log lines)", f"/runs/{last_run}"),
                ("/workflows/bench/trigger", "/workflows/bench/trigger"),
            ]
            print_pages(opener, serve.base, f"page ({args.runs:,} runs)", pages, args.requests)
        finally:
            serve.stop()


if __name__ == "__main__":
    main()
