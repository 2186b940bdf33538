"""Where the labs find the real data sets they read in place (never copied into a lab's folder)."""
from __future__ import annotations

import os
from pathlib import Path

from transferlab.errors import ConfigError


def shared_data(name: str) -> str:
    """$TRANSFERLAB_DATA/NAME, by default the checkout's ../shared/data/NAME (hymenoptera, sst2_clean, cifar10)."""
    root = Path(os.environ.get("TRANSFERLAB_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data"))
    folder = root / name
    if not folder.is_dir():
        raise ConfigError(f"this lab reads the data set {name} from {folder}, which is not there: set "
                          f"TRANSFERLAB_DATA to the folder that holds {name}/")
    return str(folder)
