"""Loss masks: which pixels of an image count in the loss (1) and which are ignored (0).

The rule (CMU's ``mask_miss``, which TAO inherits): people the annotators outlined but did not
label -- crowd regions (``iscrowd = 1``) and people with no keypoints -- are masked out, because
the network must not be told "no person here" where there is one. Labelled people are never
masked: their own region is carved back in where a crowd or unlabelled region overlaps them.
Everything else, including the border added by augmentation, counts.

Masks are rasterised lazily, one image at a time, with pycocotools (polygons, uncompressed and
compressed RLE), so nothing holds a mask per image in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from bpnet.errors import DatasetError


def segmentation_rle(segmentation: Any, height: int, width: int) -> dict | None:
    """One compressed RLE for a COCO segmentation, or None when it covers no area.

    Args:
        segmentation: a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (a single flat
            polygon is accepted too, and so is a list of RLEs), an uncompressed RLE
            ``{"counts": [..], "size": [h, w]}`` or a compressed RLE
            ``{"counts": "..." or b"...", "size": [h, w]}``.
        height: image height in pixels.
        width: image width in pixels.
    """
    if not segmentation:
        return None
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        if isinstance(counts, list):
            return mask_utils.frPyObjects(segmentation, height, width)
        if isinstance(counts, str):
            return {"size": list(segmentation["size"]), "counts": counts.encode("ascii")}
        return segmentation
    polygons = list(segmentation)
    if isinstance(polygons[0], dict):  # a list of RLE pieces, as pycocotools' annToRLE allows
        pieces = [segmentation_rle(piece, height, width) for piece in polygons]
        pieces = [p for p in pieces if p is not None]
        return mask_utils.merge(pieces) if pieces else None
    if not isinstance(polygons[0], (list, tuple)):
        polygons = [polygons]
    # fewer than 3 points enclose nothing, and pycocotools would read 4 numbers as a box
    polygons = [list(p) for p in polygons if len(p) >= 6]
    if not polygons:
        return None
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def loss_mask(
    height: int,
    width: int,
    ignore: Sequence[Any],
    keep: Sequence[Any] = (),
    *,
    source: str = "<segmentation>",
) -> np.ndarray:
    """Rasterise a loss mask.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        ignore: segmentations to mask out (crowd regions, people without keypoints).
        keep: segmentations that always count (labelled people), even inside ``ignore``.
        source: names the image in error messages.

    Returns:
        (H, W) uint8, C-contiguous: 1 where the loss counts, 0 where it is ignored.

    Raises:
        DatasetError: a segmentation pycocotools cannot rasterise.
    """
    try:
        ignore_rles = [r for r in (segmentation_rle(s, height, width) for s in ignore) if r]
        if not ignore_rles:
            return np.ones((height, width), np.uint8)
        ignored = mask_utils.decode(mask_utils.merge(ignore_rles)).astype(bool)  # (H, W)
        keep_rles = [r for r in (segmentation_rle(s, height, width) for s in keep) if r]
        if keep_rles:
            ignored &= ~mask_utils.decode(mask_utils.merge(keep_rles)).astype(bool)
    except Exception as err:  # pycocotools raises bare Exception for malformed input
        raise DatasetError(
            f"{source}: a segmentation cannot be rasterised ({type(err).__name__}: {err}); "
            "fix its polygon or RLE in the annotation file"
        ) from None
    # pycocotools decodes column-major; the warp wants row-major
    return np.ascontiguousarray(~ignored, dtype=np.uint8)


def record_mask(record) -> np.ndarray:
    """The loss mask of an :class:`~bpnet.data.coco.ImageRecord` at its original size.

    Returns:
        (H, W) uint8, 1 = counts.
    """
    return loss_mask(
        record.height, record.width, record.ignore, record.keep, source=str(record.path)
    )
