"""What fine-tuning did, as data: feature drift (weight change, CKA per depth group), forgetting of the
source task, BatchNorm statistics under covariate shift, AdaBN, and ImageNet-C style corruptions.

Entry points (each returns a dataclass with `.to_dict()`):
    drift_for_run(run_dir, data=None)                     -> DriftResult
    forgetting_for_run(run_dir, source_data=None)         -> ForgettingResult
    bn_shift_for(data, run_dir=... | model_name=...)      -> BNShiftResult
    adapt_bn_run(run_dir, data, out)                      -> AdaBNResult
    corrupt_folder(src, out, kind, severity, seed)        -> CorruptResult   (the 15 ImageNet-C corruptions)
    adapt_run(run_dir, data, out, method="tent")          -> AdaptResult     (test-time adaptation: adabn, tent)
    domain_gap_for(run_dir, source_data, target_data)     -> DomainGapResult (proxy A-distance per depth group)
Imports are lazy: `transferlab.strategies` imports from this package while it is being set up.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "linear_cka": "cka", "MinibatchCKA": "cka",
    "drift_for_run": "drift", "DriftResult": "drift", "GroupDrift": "drift",
    "forgetting_for_run": "forgetting", "ForgettingResult": "forgetting",
    "bn_shift_for": "bn", "BNShiftResult": "bn", "plot_bn_shift": "bn",
    "adapt_bn_run": "adabn", "AdaBNResult": "adabn",
    "corrupt_folder": "corrupt", "CorruptResult": "corrupt", "corrupt_image": "corrupt",
    "adapt_run": "tta", "AdaptResult": "tta", "TentConfig": "tta",
    "domain_gap_for": "domain_gap", "DomainGapResult": "domain_gap",
    "export_source_weights": "source",
    "probe_for": "probe", "ProbeResult": "probe",
    "frequency_for": "frequency", "FrequencyResult": "frequency",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"transferlab.diagnostics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'transferlab.diagnostics' has no attribute {name!r}")
