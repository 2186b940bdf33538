"""Data loading: image folders, text files and scikit-learn's digits, as train/val/test splits.

    bundle = load_data("path/to/data", cfg, DataOptions(max_train=500), tokenizer=None)
    loader = DataLoader(bundle.train, batch_size=32, shuffle=True, collate_fn=bundle.collate)

Bad user data raises DataError (one line for the CLI); unreadable inputs are skipped and listed in
``bundle.skipped``.
"""
from ._bundle import DataBundle
from ._errors import DataError, SkipLog
from ._images import DecodedImages
from ._load import load_data, load_single_image
from ._options import DataOptions
from ._source import load_source_data, source_label_map

__all__ = ["DataBundle", "DataError", "DataOptions", "DecodedImages", "SkipLog", "load_data", "load_single_image", "load_source_data",
           "source_label_map"]
