"""Data for multi-exposure fusion: SICE, unlabelled pair folders, real exposure sequences,
synthetic pairs.

Every dataset yields sample dicts::

    {"under": (3, H, W) float32 in [0, 1],   # darker input
     "over":  (3, H, W) float32 in [0, 1],   # brighter input
     "gt":    (3, H, W) float32 in [0, 1],   # ground truth (absent for pairs / sequences)
     "name":  str,
     # misaligned data only:
     "valid": (1, H, W) float32 in {0, 1},   # 1 where the warped input is real content
     "homography": (3, 3) float32}           # reference pixel -> warped-input pixel

and batches are their default collation (``(B, 3, H, W)``, ``name`` a list). Models are
called as ``model(batch["under"], batch["over"])``.

Entry points: :func:`build_dataset` (``--data PATH|synthetic``) and :func:`make_loader`.
"""

from __future__ import annotations

from nas.data.augment import (
    IMAGE_KEYS,
    PairAugment,
    center_crop,
    crop_sample,
    random_crop,
    random_flip_rot,
)
from nas.data.base import PairDataset, make_generator, sample_seed, split_counts, split_items
from nas.data.folder import FolderPairs, find_folder_pairs, mean_luminance
from nas.data.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    PairSizeError,
    list_images,
    load_image,
    resize_image,
    save_image,
)
from nas.data.loader import (
    EpochDataLoader,
    SeededSampler,
    build_dataset,
    collate_pairs,
    describe_spec,
    eval_batches,
    make_loader,
    set_dataset_epoch,
)
from nas.data.misalign import (
    MisalignedPairs,
    corner_homography,
    misalign_sample,
    valid_margin,
    valid_mask,
    warp_image,
)
from nas.data.sequences import SequenceFolder, candidate_pairs, find_sequences
from nas.data.sice import SICEDataset, SICESequence, detect_sice_layout, scan_sice, select_pair
from nas.data.synthetic import (
    SyntheticPairs,
    bundled_photo_paths,
    expose,
    sample_exposure_params,
    synthesize_pair,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_KEYS",
    "EpochDataLoader",
    "FolderPairs",
    "ImageReadError",
    "MisalignedPairs",
    "PairAugment",
    "PairDataset",
    "PairSizeError",
    "SICEDataset",
    "SICESequence",
    "SeededSampler",
    "SequenceFolder",
    "SyntheticPairs",
    "build_dataset",
    "bundled_photo_paths",
    "candidate_pairs",
    "center_crop",
    "collate_pairs",
    "corner_homography",
    "crop_sample",
    "describe_spec",
    "detect_sice_layout",
    "expose",
    "find_folder_pairs",
    "find_sequences",
    "list_images",
    "load_image",
    "make_generator",
    "eval_batches",
    "make_loader",
    "mean_luminance",
    "misalign_sample",
    "random_crop",
    "random_flip_rot",
    "resize_image",
    "sample_exposure_params",
    "sample_seed",
    "save_image",
    "scan_sice",
    "select_pair",
    "set_dataset_epoch",
    "split_counts",
    "split_items",
    "synthesize_pair",
    "valid_margin",
    "valid_mask",
    "warp_image",
]
