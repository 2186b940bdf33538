"""The comparison report's diagnostic sections: each is declared by its diagnostic (`section=` of
`register_diagnostic`, in the diagnostic's own file); importing this module loads every diagnostic, and so
registers them all with `transferlab.sections`: `cka` (drift.py), `forgetting` (forgetting.py), `bn_shift`
(bn.py), `frequency` (frequency_report.py), `probe` (probe.py).

Each uses the first finished seed of each strategy, bounds its cost (CKA and BN shift on at most
`MAX_BATCHES` evaluation batches), and turns a failure into a note: a diagnostic must not sink the report.
"""
from __future__ import annotations

from transferlab.diagnostics._common import REPORT_MAX_BATCHES as MAX_BATCHES  # noqa: F401  (re-exported)
from transferlab.diagnostics.registry import load_all

load_all()

# The sections by name, where they were before they moved beside their diagnostics.
from transferlab.diagnostics import frequency_report as _frequency_section  # noqa: E402,F401  isort: skip
from transferlab.diagnostics import probe as _probe_section  # noqa: E402,F401  isort: skip
from transferlab.diagnostics.bn import bn_shift_section  # noqa: E402,F401  isort: skip
from transferlab.diagnostics.drift import cka_section  # noqa: E402,F401  isort: skip
from transferlab.diagnostics.forgetting import _source_data, forgetting_section  # noqa: E402,F401  isort: skip
