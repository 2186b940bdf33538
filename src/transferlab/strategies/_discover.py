"""Import every public module of a package, so that the classes they decorate register themselves: adding a
strategy or a PEFT method means adding its file (or folder), not editing an import list."""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str, package_path, skip: frozenset[str] = frozenset()) -> list[str]:
    """Import `package_name`'s modules and sub-packages whose names do not start with '_' and are not in
    `skip`, in name order; return their names."""
    names = sorted(info.name for info in pkgutil.iter_modules(package_path)
                   if not info.name.startswith("_") and info.name not in skip)
    for name in names:
        importlib.import_module(f"{package_name}.{name}")
    return names
