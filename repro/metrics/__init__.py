"""Evaluation metrics beyond accuracy: forgetting/retention on held-out tasks and state drift.

from repro.metrics import drift_report, prefix_states, retention_report
"""

from repro.metrics.drift import (
    centroid_distance,
    drift_report,
    drop_words,
    featurize,
    jaccard,
    median_bandwidth,
    mmd2_unbiased,
    prefix_states,
    sliced_wasserstein,
    within_bandwidth,
)
from repro.metrics.retention import forgetting, retention, retention_report

__all__ = [
    "centroid_distance",
    "drift_report",
    "drop_words",
    "featurize",
    "forgetting",
    "jaccard",
    "median_bandwidth",
    "mmd2_unbiased",
    "prefix_states",
    "retention",
    "retention_report",
    "sliced_wasserstein",
    "within_bandwidth",
]
