"""Divergences estimated from samples: kNN, kernel density, kernel discrepancies (MMD, CS)."""

from divergent.samples._points import IntervalEstimate, subsampling_ci
from divergent.samples.kde import kde_bandwidth, kde_kl, kde_log_density
from divergent.samples.kernel import (
    cauchy_schwarz,
    cauchy_schwarz_mutual_information,
    conditional_cauchy_schwarz,
    energy_distance,
    median_heuristic,
    mmd,
)
from divergent.samples.knn import knn_entropy, knn_kl, knn_renyi

__all__ = [
    "IntervalEstimate",
    "cauchy_schwarz",
    "cauchy_schwarz_mutual_information",
    "conditional_cauchy_schwarz",
    "energy_distance",
    "kde_bandwidth",
    "kde_kl",
    "kde_log_density",
    "knn_entropy",
    "knn_kl",
    "knn_renyi",
    "median_heuristic",
    "mmd",
    "subsampling_ci",
]
