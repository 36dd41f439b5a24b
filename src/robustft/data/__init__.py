"""Datasets as in-memory uint8 tensors, deterministic splits, and vectorised on-device augmentation and batching.

``load_dataset(spec, split)`` (``spec``: a ``DataSpec``, or a name or path) is the single entry point for every
dataset (named, image folder, zip, npz); ``iterate_batches`` turns the result into float batches, with ``Augment`` applied on the batch's device.
"""

from .cifar_c import available_corruptions, load_corrupted
from .dataset import ArrayDataset, to_device
from .limits import DecodeLimits
from .load import NAMED_DATASETS, load_dataset, load_splits, open_source
from .loader import iterate_batches, num_batches
from .packed import PackedDataset, PackedImages
from .paths import default_cache_dir, default_data_root
from .source import Source
from .spec import DataSpec
from .splits import SPLITS, stratified_split, subset_indices
from .transforms import Augment, random_crop, random_hflip, resize
from .views import View

__all__ = [
    "ArrayDataset", "Augment", "DataSpec", "DecodeLimits", "available_corruptions", "load_corrupted",
    "NAMED_DATASETS", "SPLITS", "Source", "default_cache_dir", "default_data_root",
    "iterate_batches", "load_dataset", "load_splits", "num_batches", "open_source", "PackedDataset", "PackedImages",
    "random_crop", "random_hflip", "resize", "stratified_split", "subset_indices", "to_device", "View",
]
