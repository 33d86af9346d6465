#!/usr/bin/env python3
"""The experiment page with many tracking runs: seeds 10,000 tracking runs of one experiment
(three params, three metrics and a tag each, built-in backend) straight into a SQLite
database, starts `sluice serve` on it, logs in and times the experiment page's first page
sorted by a metric, and a filtered one.

    benches/tracking_page.py [PATH_TO_SLUICE] [--runs N] [--requests N]
        (default: target/release/sluice, built first; 10000 runs; 200 requests per page)

Prints a Markdown table of p50/p95/max per page; BENCHMARKS.md quotes it. Traffic goes to
127.0.0.1 only, and the server it starts is stopped before it exits.
"""

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui import Serve, login, print_pages, sluice_binary, stamp  # noqa: E402

EXPERIMENT = "0190000000007000800000000000e001"
MODELS = ["gpt-4o-mini", "llama-3-8b", "mistral-7b", "qwen-2-7b"]


def seed(binary, workdir, runs):
    db = workdir / "sluice.db"
    subprocess.run([binary, "migrate", "--database", str(db)], check=True, capture_output=True)
    con = sqlite3.connect(db)
    now = datetime.now(timezone.utc)
    con.execute(
        "INSERT INTO tracking_experiments (id, name, created_at) VALUES (?, 'prompt-eval', ?)",
        (EXPERIMENT, stamp(now)),
    )
    run_rows, params, metrics, tags = [], [], [], []
    start = now - timedelta(minutes=runs)
    for i in range(runs):
        run_id = f"{i:032x}"
        began = start + timedelta(minutes=i)
        run_rows.append(
            (run_id, EXPERIMENT, "track", "FINISHED", "eval", "bench-version", None, "track", 1,
             "[]", stamp(began), stamp(began + timedelta(seconds=20)))
        )
        params += [
            (run_id, "model", MODELS[i % len(MODELS)]),
            (run_id, "temperature", str((i % 10) / 10)),
            (run_id, "prompt_version", str(i % 7)),
        ]
        ms = int(began.timestamp() * 1000)
        metrics += [
            (run_id, "exact_match", ((i * 7919) % 1000) / 1000, 0, ms),
            (run_id, "faithfulness", ((i * 104729) % 1000) / 1000, 0, ms),
            (run_id, "latency_ms", 100 + (i % 400), 0, ms),
        ]
        tags.append((run_id, "team", "search"))
    con.executemany(
        "INSERT INTO tracking_runs (id, experiment_id, name, status, workflow_id, version_hash, "
        "run_id, task_id, try_number, inputs, started_at, ended_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        run_rows,
    )
    con.executemany("INSERT INTO tracking_params (tracking_run_id, key, value) VALUES (?, ?, ?)", params)
    con.executemany("INSERT INTO tracking_tags (tracking_run_id, key, value) VALUES (?, ?, ?)", tags)
    con.executemany(
        "INSERT INTO tracking_metrics (tracking_run_id, key, value, step, timestamp_ms) "
        "VALUES (?, ?, ?, ?, ?)",
        metrics,
    )
    con.commit()
    con.close()
    return db


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    binary = sluice_binary(args.binary)
    with tempfile.TemporaryDirectory(prefix="sluice-tracking-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "workflows").mkdir()
        began = time.monotonic()
        db = seed(binary, workdir, args.runs)
        print(f"seeded {args.runs:,} tracking runs in {time.monotonic() - began:.1f} s", file=sys.stderr)
        serve = Serve(binary, workdir, db)
        try:
            opener = login(serve)
            page = f"/experiments/{EXPERIMENT}"
            sorted_page = page + "?" + urllib.parse.urlencode(
                {"sort": "metric.exact_match", "order": "desc",
                 "columns": "param.model,param.temperature,metric.exact_match,metric.faithfulness"}
            )
            filtered = page + "?" + urllib.parse.urlencode(
                {"filter": "metric.exact_match >= 0.8 and param.model = gpt-4o-mini",
                 "sort": "metric.faithfulness", "order": "desc"}
            )
            pages = [
                ("sorted by a metric, first 100 runs", sorted_page),
                ("filtered by a metric and a param, sorted", filtered),
                ("newest first (no sort)", page),
            ]
            heading = f"`/experiments/{{id}}` ({args.runs:,} tracking runs)"
            print_pages(opener, serve.base, heading, pages, args.requests)
        finally:
            serve.stop()


if __name__ == "__main__":
    main()
