"""Metrics for trained models: calibration (ECE / RMS / MCE, equal-mass, class-wise, the
reliability diagram, NLL, accuracy) and student-to-teacher fidelity."""

from divergent.metrics.calibration import (
    CONVENTIONS,
    NORMS,
    CalibrationBins,
    accuracy,
    calibration_bins,
    classwise_calibration_error,
    equal_mass_calibration_error,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)
from divergent.metrics.fidelity import Fidelity, fidelity
from divergent.metrics.unlearning import (
    KLOM_BINS,
    KLOM_CLIP,
    KLOM_FLOOR,
    binned_kl,
    klom,
    margin,
)

__all__ = [
    "CONVENTIONS",
    "KLOM_BINS",
    "KLOM_CLIP",
    "KLOM_FLOOR",
    "NORMS",
    "CalibrationBins",
    "Fidelity",
    "accuracy",
    "binned_kl",
    "calibration_bins",
    "classwise_calibration_error",
    "equal_mass_calibration_error",
    "expected_calibration_error",
    "fidelity",
    "klom",
    "margin",
    "negative_log_likelihood",
    "reliability_diagram",
]
