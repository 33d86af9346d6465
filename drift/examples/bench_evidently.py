"""Evidently's side of the drift benchmark (examples/bench.rs): reads the two CSV files with
pandas and runs DataDriftPreset, timing each step. Prints one JSON object."""

import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import pandas as pd  # noqa: E402
from evidently import Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

started, cpu = time.perf_counter(), time.process_time()
reference = pd.read_csv(sys.argv[1])
current = pd.read_csv(sys.argv[2])
read_seconds = time.perf_counter() - started
read_cpu = time.process_time() - cpu

started, cpu = time.perf_counter(), time.process_time()
snapshot = Report([DataDriftPreset()]).run(
    current_data=Dataset.from_pandas(current), reference_data=Dataset.from_pandas(reference)
)
metrics = snapshot.dict()["metrics"]
report_seconds = time.perf_counter() - started
report_cpu = time.process_time() - cpu

counts = next(m["value"] for m in metrics if m["config"]["type"].endswith("DriftedColumnsCount"))
print(
    json.dumps(
        {
            "read_seconds": read_seconds,
            "report_seconds": report_seconds,
            "read_cpu_seconds": read_cpu,
            "report_cpu_seconds": report_cpu,
            "drifted": counts["count"],
            "share": counts["share"],
        }
    )
)
