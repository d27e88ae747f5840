"""Can the reading be trusted? "Not a digit", calibrated confidence, adversarial examples
(and, in ``labels``/``label_jobs``, suspect labels).

    from digitrec import trust
    reader = trust.TrustReader(run)          # one per run: model + temperature + detector
    reading = reader.read(to_mnist(canvas))  # .digit, .calibrated, .not_a_digit, .score
    trust.calibrate_run(run)                 # temperature, ECE / Brier before and after
    trust.reliability(labels, probs)         # reliability diagram bins, ECE
    trust.Attacker(model).smallest_epsilon(image28, method="fgsm", target=3)
    trust.compare_robustness(run_a, run_b, n=100)

Modules: ``ood`` (the detector and how it is made), ``nondigits`` (generated non-digits and
digits on paper), ``detector`` (the tiny NumPy classifier), ``calibration``, ``adversarial``,
``reader`` (a reading with all of it), ``tap`` (one traced model pass), ``store`` (per-run
sidecar files). Names are imported lazily: ``import digitrec.trust.labels`` does not pay for
TensorFlow.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "OodDetector": "ood", "OodSettings": "ood", "calibrate_ood": "ood",
    "ink_statistics": "ood",
    "TrustReader": "reader", "Reading": "reader", "reader_for": "reader",
    "not_a_digit": "reader", "not_a_digit_batch": "reader",
    "Reliability": "calibration", "reliability": "calibration",
    "expected_calibration_error": "calibration", "brier_score": "calibration",
    "fit_temperature": "calibration", "apply_temperature": "calibration",
    "calibration_report": "calibration", "calibrate_run": "calibration",
    "run_temperature": "calibration", "calibrated_probabilities": "calibration",
    "Attacker": "adversarial", "Adversarial": "adversarial",
    "compare_robustness": "adversarial",
    "nondigit_images": "nondigits", "nondigit_sheets": "nondigits",
    "scanned_digits": "nondigits", "ink_on_paper": "nondigits", "coarse_scan": "nondigits",
    "ModelTap": "tap", "sidecar_dir": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
