"""Data loading: image folders, text files, scikit-learn's digits and numeric vectors (``sklearn:wine``, ``.npz``
files), as train/val/test splits.

    bundle = load_data("path/to/data", cfg, DataOptions(max_train=500), tokenizer=None)
    loader = DataLoader(bundle.train, batch_size=32, shuffle=True, collate_fn=bundle.collate)

``load_unlabelled(path, cfg, options)``: unlabelled examples (a domain-adaptation target), also from a flat folder
of images. ``shared_dataset("hymenoptera")`` finds a real data set under --data-root or $TRANSFERLAB_DATA
(docs/data.md).
``example_ids(bundle, dataset)`` names each example as `transferlab contamination` does (an image's path
under the data set's folder, a text row's index in its file, a vector's row); ``split_file(dataset)`` names a text
split's file. ``is_builtin_spec(spec)``: ``digits`` or ``sklearn:NAME``, a name and not a path.

Bad user data raises DataError (one line for the CLI); unreadable inputs are skipped and listed in
``bundle.skipped``.
"""
from ._bundle import DataBundle
from ._data_root import DATA_ENV, data_root, shared_dataset, shared_datasets
from ._errors import DataError, SkipLog
from ._ids import example_ids, image_id, split_file
from ._images import DecodedImages
from ._load import is_builtin_spec, load_data, load_single_image
from ._options import DataOptions
from ._source import load_source_data, source_label_map
from ._unlabelled import NO_LABEL, is_flat_image_folder, load_unlabelled
from ._vectors import SKLEARN_SETS, is_vector_spec

__all__ = ["DATA_ENV", "NO_LABEL", "SKLEARN_SETS", "DataBundle", "DataError", "DataOptions", "DecodedImages",
           "SkipLog", "data_root", "example_ids", "image_id", "is_builtin_spec", "is_flat_image_folder",
           "is_vector_spec", "load_data", "load_single_image", "load_source_data", "load_unlabelled", "shared_dataset",
           "shared_datasets", "source_label_map", "split_file"]
