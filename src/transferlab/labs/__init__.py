"""The chapter's claims as labs: each one a small real experiment, its figure, its numbers and a verdict that
comes from them (labs/verdict.py). `transferlab lab list`, `transferlab lab run NAME|all [--quick] --out DIR`."""
from transferlab.labs.base import Lab, LabContext, LabResult, execute
from transferlab.labs.registry import LABS, get_lab
from transferlab.labs.runner import run_all, run_lab
from transferlab.labs.verdict import RULE, Check, check_verdict, lab_verdict

__all__ = ["Check", "LABS", "Lab", "LabContext", "LabResult", "RULE", "check_verdict", "execute", "get_lab",
           "lab_verdict", "run_all", "run_lab"]
