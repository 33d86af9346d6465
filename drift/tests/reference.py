"""Reference values for sluice-drift, computed by scipy and Evidently themselves.

Usage: python reference.py INPUT.json OUTPUT.json

INPUT holds the cases the Rust test generated (see tests/reference.rs):
  samples:    numeric or categorical reference/current samples; every statistic that applies
  texts:      text samples; Evidently's descriptors and the default test on each
  embeddings: reference/current matrices; Evidently's embedding drift methods
  datasets:   CSV file pairs; Evidently's DataDriftPreset (kinds, methods, values, verdict)
OUTPUT gets the values, keyed by case id. Nothing here is computed by hand: every number comes
from the library function Evidently or scipy uses.
"""

import json
import sys
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from evidently import Dataset, Report
from evidently.presets import DataDriftPreset
from evidently.legacy.core import ColumnType
from evidently.legacy.calculations.stattests.registry import get_stattest
from evidently.legacy.calculations.stattests.ks_stattest import _ks_stat_test
from evidently.legacy.calculations.stattests.chisquare_stattest import _chi_stat_test
from evidently.legacy.calculations.stattests.z_stattest import (
    _z_stat_test,
    proportions_diff_z_stat_ind,
)
from evidently.legacy.calculations.stattests.psi import _psi
from evidently.legacy.calculations.stattests.wasserstein_distance_norm import (
    _wasserstein_distance_norm,
)
from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
from evidently.legacy.calculations.stattests.utils import (
    get_unique_not_nan_values_list_from_series,
)
from evidently.legacy.features.text_length_feature import TextLength
from evidently.legacy.features.word_count_feature import WordCount
from evidently.legacy.features.non_letter_character_percentage_feature import (
    NonLetterCharacterPercentage,
)
from evidently.legacy.metrics.data_drift.embedding_drift_methods import (
    DistanceDriftMethod,
    MMDDriftMethod,
    RatioDriftMethod,
)

warnings.filterwarnings("ignore")

DISPLAY_TO_NAME = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "PSI": "psi",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
}


def series(values, integer):
    return pd.Series(np.array(values, dtype=np.int64 if integer else None))


def chi_square_statistic(reference, current):
    # The f_obs / f_exp Evidently's _chi_stat_test builds, passed to scipy for the statistic.
    keys = get_unique_not_nan_values_list_from_series(current_data=current, reference_data=reference)
    ref_counts = {**dict.fromkeys(keys, 0), **dict(reference.value_counts())}
    cur_counts = {**dict.fromkeys(keys, 0), **dict(current.value_counts())}
    k_norm = current.shape[0] / reference.shape[0]
    f_exp = [ref_counts[key] * k_norm for key in keys]
    f_obs = [cur_counts[key] for key in keys]
    return float(stats.chisquare(f_obs, f_exp)[0])


def z_statistic(reference, current):
    keys = sorted(get_unique_not_nan_values_list_from_series(current_data=current, reference_data=reference))
    if len(keys) < 2:
        return 0.0
    return float(
        proportions_diff_z_stat_ind(
            reference.apply(lambda x, key=keys[0]: 0 if x == key else 1),
            current.apply(lambda x, key=keys[0]: 0 if x == key else 1),
        )
    )


def sample_case(case):
    numeric = case["kind"] == "numeric"
    kind = ColumnType.Numerical if numeric else ColumnType.Categorical
    integer = case.get("integer", False)
    ref = series(case["reference"], integer)
    cur = series(case["current"], integer)
    out = {"default": get_stattest(ref, cur, kind, None).name}
    if numeric:
        ks = stats.ks_2samp(ref, cur, method="auto")
        out["ks"] = [float(ks.statistic), float(_ks_stat_test(ref, cur, kind, 0.05)[0])]
        out["wasserstein"] = float(_wasserstein_distance_norm(ref, cur, kind, 0.1)[0])
    out["chisquare"] = [chi_square_statistic(ref, cur), float(_chi_stat_test(ref, cur, kind, 0.05)[0])]
    out["z"] = [z_statistic(ref, cur), float(_z_stat_test(ref, cur, kind, 0.05)[0])]
    out["psi"] = float(_psi(ref, cur, kind, 0.1)[0])
    out["jensenshannon"] = float(_jensenshannon(ref, cur, kind, 0.1)[0])
    return out


def text_case(case):
    out = {}
    for name, feature in [
        ("length", TextLength(column_name="t")),
        ("word_count", WordCount(column_name="t")),
        ("non_letter_percent", NonLetterCharacterPercentage(column_name="t")),
    ]:
        ref = pd.Series([feature.apply(v) for v in case["reference"]])
        cur = pd.Series([feature.apply(v) for v in case["current"]])
        test = get_stattest(ref, cur, ColumnType.Numerical, None)
        result = test(ref, cur, ColumnType.Numerical, None)
        out[name] = {
            "reference_sum": float(ref.sum()),
            "current_sum": float(cur.sum()),
            "method": test.name,
            "score": float(result.drift_score),
            "drifted": bool(result.drifted),
        }
    return out


def embedding_case(case):
    ref = pd.DataFrame(np.array(case["reference"], dtype=float))
    cur = pd.DataFrame(np.array(case["current"], dtype=float))
    out = {}
    for name, method in [
        ("euclidean", DistanceDriftMethod(dist="euclidean")),
        ("cosine", DistanceDriftMethod(dist="cosine")),
        ("ratio", RatioDriftMethod()),
        ("mmd", MMDDriftMethod()),
    ]:
        value, drifted, _ = method(cur.copy(), ref.copy())
        out[name] = [float(value), bool(drifted)]
    return out


def dataset_case(case):
    ref = pd.read_csv(case["reference"], float_precision="round_trip")
    cur = pd.read_csv(case["current"], float_precision="round_trip")
    snapshot = Report([DataDriftPreset(drift_share=case["drift_share"])]).run(
        current_data=Dataset.from_pandas(cur), reference_data=Dataset.from_pandas(ref)
    )
    metrics = snapshot.dict()["metrics"]
    out = {"columns": {}}
    for metric in metrics:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            out["count"] = float(metric["value"]["count"])
            out["share"] = float(metric["value"]["share"])
        elif config["type"].endswith("ValueDrift"):
            out["columns"][config["column"]] = {
                "method": DISPLAY_TO_NAME.get(config["method"], config["method"]),
                "threshold": float(config["threshold"]),
                "value": float(metric["value"]),
            }
    return out


def finite_or_text(value):
    # JSON has no infinities: a new category makes chi-square's statistic infinite.
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite_or_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_text(v) for v in value]
    return value


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    out = {
        "samples": {c["id"]: sample_case(c) for c in cases["samples"]},
        "texts": {c["id"]: text_case(c) for c in cases["texts"]},
        "embeddings": {c["id"]: embedding_case(c) for c in cases["embeddings"]},
        "datasets": {c["id"]: dataset_case(c) for c in cases["datasets"]},
    }
    with open(sys.argv[2], "w") as f:
        json.dump(finite_or_text(out), f, indent=1, sort_keys=True, allow_nan=False)


if __name__ == "__main__":
    main()
