"""COCO keypoint files: load and validate one split, turn it into per-image records, and write
the people found as COCO keypoint results (:func:`detections_for_image`).

A dataset root has the official COCO layout, unchanged::

    ROOT/annotations/person_keypoints_<split>.json
    ROOT/<split>/<file_name of each image>

:func:`load_coco_split` reads it with pycocotools after checking every entry the pipeline relies
on, so a broken file fails with one :class:`~bpnet.errors.DatasetError` line that names the file
and the entry instead of a traceback deep inside training. :func:`build_records` then sorts the
annotations of each image into what training needs (TAO / CMU semantics):

- target people: every non-crowd annotation with at least one labelled keypoint, in the pose
  config's joint order (the neck is made from the shoulders there);
- ignore regions: crowd annotations and people without keypoints, masked out of the loss;
- main people: target people that pass the dataset filters and anchor person-centric crops.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from bpnet.config.spec import DatasetConfig
from bpnet.errors import DatasetError
from bpnet.io import read_json
from bpnet.pose import PoseConfig

PERSON_CATEGORY_ID = 1  # COCO's "person"
COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
"""The 17 COCO person keypoints, in the order of the annotation arrays."""
COCO_OKS_SIGMAS = (
    *(0.026, 0.025, 0.025, 0.035, 0.035),  # nose, eyes, ears
    *(0.079, 0.079, 0.072, 0.072, 0.062, 0.062),  # shoulders, elbows, wrists
    *(0.107, 0.107, 0.087, 0.087, 0.089, 0.089),  # hips, knees, ankles
)
"""COCO's OKS falloff of each of :data:`COCO_KEYPOINTS` (the values pycocotools scores with)."""
TOP_LEVEL_KEYS = ("images", "annotations", "categories")
MAX_AREA = 1e10  # COCOeval's "all" area range is [0, 1e10]: people outside it are not scored
IMAGE_KEYS = ("id", "file_name", "width", "height")
LAYOUT_HINT = (
    "a dataset root must hold annotations/person_keypoints_<split>.json and a <split>/ folder "
    "with the images (the official COCO layout)"
)


def oks_sigmas(pose: PoseConfig) -> tuple[float, ...]:
    """The OKS falloff per dataset keypoint (tracking, agreement between models): the pose config's
    ``oks_sigmas``, else COCO's for the COCO 17, else COCO's mean for every keypoint."""
    if pose.oks_sigmas is not None:
        return pose.oks_sigmas
    if tuple(pose.dataset_keypoints) == COCO_KEYPOINTS:
        return COCO_OKS_SIGMAS
    return (float(np.mean(COCO_OKS_SIGMAS)),) * len(pose.dataset_keypoints)


def split_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """Where a split lives: ``(ROOT/annotations/person_keypoints_<split>.json, ROOT/<split>/)``."""
    root = Path(root)
    return root / "annotations" / f"person_keypoints_{split}.json", root / split


@dataclass(eq=False)
class AnnotationTable:
    """Every annotation of the keypoint category as column arrays (N rows, file order).

    Built once while validating, so that per-image records and statistics are array work
    instead of loops over dicts.

    Attributes:
        entries: the N annotation dicts themselves (references into ``CocoSplit.coco``).
        ann_ids: (N,) int64 annotation ids.
        image_ids: (N,) int64.
        iscrowd: (N,) bool.
        bboxes: (N, 4) float32 x, y, width, height in pixels.
        keypoints: (N, K, 3) float32 x, y, v in the category's keypoint order.
        num_keypoints: (N,) int64 labelled keypoints (v > 0), counted from ``keypoints``.
    """

    entries: list[dict]
    ann_ids: np.ndarray
    image_ids: np.ndarray
    iscrowd: np.ndarray
    bboxes: np.ndarray
    keypoints: np.ndarray
    num_keypoints: np.ndarray


@dataclass(eq=False)
class CocoSplit:
    """A loaded, validated split.

    Attributes:
        root: the dataset root.
        split: split name (``train2017``, ``val``, ...).
        ann_file: ``ROOT/annotations/person_keypoints_<split>.json``.
        image_dir: ``ROOT/<split>/``.
        coco: the pycocotools index over the file's contents (unchanged, except that missing
            optional fields ``iscrowd`` and ``num_keypoints`` get COCO's meaning and a missing
            ``area`` becomes the box area, so
            that COCOeval can read them).
        category: the category entry that has ``keypoints`` (the person).
        keypoint_names: the category's keypoint names, in annotation order.
        image_ids: every image id, sorted.
        table: the keypoint category's annotations as arrays (see :class:`AnnotationTable`).
    """

    root: Path
    split: str
    ann_file: Path
    image_dir: Path
    coco: COCO
    category: dict
    keypoint_names: tuple[str, ...]
    image_ids: list[int]
    table: AnnotationTable

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]


def load_coco_split(root: str | os.PathLike, split: str, *, check_images: bool = True) -> CocoSplit:
    """Read and validate one split of a COCO-layout dataset.

    Args:
        root: dataset root (see the module docstring for the layout).
        split: split name; the folder ``ROOT/<split>`` and the file
            ``ROOT/annotations/person_keypoints_<split>.json`` must exist.
        check_images: also check that every listed image file exists (one directory listing).

    Raises:
        DatasetError: a one-line message naming the file and the entry at fault and the fix.

    Example:
        >>> data = load_coco_split("coco", "val2017")  # doctest: +SKIP
        >>> len(data.image_ids), data.keypoint_names[:2]  # doctest: +SKIP
        (5000, ('nose', 'left_eye'))
    """
    root = Path(root)
    ann_file, image_dir = split_paths(root, split)
    if not ann_file.is_file():
        missing_root = "" if root.is_dir() else f" (the dataset root {root} does not exist)"
        raise DatasetError(f"{ann_file}: annotation file not found{missing_root}; {LAYOUT_HINT}")
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder of split '{split}' not found; {LAYOUT_HINT}")
    data = read_json(ann_file)
    category, table = _validate(data, ann_file)
    if check_images:
        _check_image_files(data["images"], image_dir, ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    return CocoSplit(
        root=root,
        split=split,
        ann_file=ann_file,
        image_dir=image_dir,
        coco=coco,
        category=category,
        keypoint_names=tuple(str(n) for n in category["keypoints"]),
        image_ids=sorted(coco.imgs),
        table=table,
    )


# validation ------------------------------------------------------------------------------------


def _entry(kind: str, item: Any, index: int) -> str:
    """How a message names a list entry: by its id when it has one, else by position."""
    if isinstance(item, dict) and isinstance(item.get("id"), int):
        return f"{kind}[id={item['id']}]"
    return f"{kind}[{index}]"


def _validate(data: Any, ann_file: Path) -> tuple[dict, AnnotationTable]:
    """Check everything the pipeline relies on; return the keypoint category and the table.

    Loops are list comprehensions and the checks are array work, so a COCO train file (262k
    annotations) validates in about two seconds; the slow search for the offending entry runs
    only once something is known to be wrong.
    """

    def fail(entry: str, message: str) -> DatasetError:
        return DatasetError(f"{ann_file}: {entry}: {message}")

    if not isinstance(data, dict):
        raise fail("<top level>", "expected a JSON object with keys " + ", ".join(TOP_LEVEL_KEYS))
    for key in TOP_LEVEL_KEYS:
        if key not in data:
            keys = ", ".join(TOP_LEVEL_KEYS)
            raise fail(key, f"missing top-level key; a COCO keypoint file has {keys}")
        if not isinstance(data[key], list):
            raise fail(key, f"expected a list, got {type(data[key]).__name__}")

    category = _keypoint_category(data["categories"], fail)
    num_kpts = len(category["keypoints"])
    image_ids, sizes = _validate_images(data["images"], fail)

    anns = data["annotations"]
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise fail(f"annotations[{i}]", "expected an object")
    for key in ("id", "image_id", "category_id"):
        _require_key(anns, "annotations", key, fail)
    ann_ids = _int_column(anns, "annotations", "id", fail)
    _require_unique(ann_ids, "annotations", fail)
    ann_image_ids = _int_column(anns, "annotations", "image_id", fail)
    unknown = np.flatnonzero(~np.isin(ann_image_ids, image_ids))
    if unknown.size:
        i = int(unknown[0])
        raise fail(
            f"annotations[id={ann_ids[i]}].image_id",
            f"{ann_image_ids[i]} is not the id of any entry in images "
            f"({unknown.size} annotation(s) like this); fix the id or add the image entry",
        )

    # only the keypoint category matters below; other categories pass through untouched
    cat_ids = np.array([a["category_id"] for a in anns], dtype=object)
    rows = np.flatnonzero(cat_ids == category["id"])
    entries = [anns[i] for i in rows]
    ids = ann_ids[rows]
    for key in ("keypoints", "bbox"):
        _require_key(entries, "annotations", key, fail)
    layout = f"x, y, v for each of the {num_kpts} keypoints of category '{category.get('name')}'"
    keypoints = _number_rows(entries, ids, "keypoints", 3 * num_kpts, fail, what=layout)
    keypoints = keypoints.reshape(-1, num_kpts, 3)  # (N, K, 3)
    bboxes = _number_rows(entries, ids, "bbox", 4, fail, what="x, y, width, height")
    bad = np.flatnonzero((bboxes[:, 2] < 0) | (bboxes[:, 3] < 0))
    if bad.size:
        i = int(bad[0])
        raise fail(
            f"annotations[id={ids[i]}].bbox",
            f"{entries[i]['bbox']}: negative width or height; a box is [x, y, width, height]",
        )
    iscrowd = _flag_column(entries, ids, fail)
    _check_segmentations(entries, ids, ann_image_ids[rows], sizes, fail)

    num_labelled = (keypoints[..., 2] > 0).sum(1).astype(np.int64)  # (N,)
    # COCOeval reads these fields; files written by other tools sometimes leave them out
    for ann, n, box in zip(entries, num_labelled.tolist(), bboxes.tolist(), strict=True):
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
        if "num_keypoints" not in ann:
            ann["num_keypoints"] = n
        if "area" not in ann:
            ann["area"] = box[2] * box[3]
    _check_areas(entries, ids, fail)
    table = AnnotationTable(
        entries=entries,
        ann_ids=ids,
        image_ids=ann_image_ids[rows],
        iscrowd=iscrowd,
        bboxes=bboxes,
        keypoints=keypoints,
        num_keypoints=num_labelled,
    )
    return category, table


def _keypoint_category(categories: list, fail) -> dict:
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise fail(f"categories[{i}]", "expected an object with an integer id")
    with_kpts = [c for c in categories if isinstance(c.get("keypoints"), list) and c["keypoints"]]
    if not with_kpts:
        raise fail(
            "categories",
            "no category has a 'keypoints' list; this is not a COCO keypoint file "
            "(use person_keypoints_<split>.json, not instances_<split>.json)",
        )
    if len(with_kpts) > 1:
        people = [c for c in with_kpts if c.get("name") == "person"]
        if len(people) != 1:
            ids = [c["id"] for c in with_kpts]
            raise fail("categories", f"categories {ids} all have keypoints; keep only one")
        with_kpts = people
    category = with_kpts[0]
    names = category["keypoints"]
    if len(set(map(str, names))) != len(names):
        raise fail(f"categories[id={category['id']}].keypoints", "keypoint names must be unique")
    return category


def _validate_images(images: list, fail) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Check image entries; return their ids and ``{id: (height, width)}``."""
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            raise fail(f"images[{i}]", "expected an object")
        missing = [k for k in IMAGE_KEYS if k not in img]
        if missing:
            raise fail(
                _entry("images", img, i),
                f"missing {', '.join(missing)}; every image entry needs " + ", ".join(IMAGE_KEYS),
            )
        for key in ("width", "height"):
            value = img[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise fail(f"{_entry('images', img, i)}.{key}", f"{value!r}: expected pixels > 0")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise fail(f"{_entry('images', img, i)}.file_name", "expected a non-empty string")
    ids = _int_column(images, "images", "id", fail)
    _require_unique(ids, "images", fail)
    sizes = {img["id"]: (img["height"], img["width"]) for img in images}
    return ids, sizes


def _require_key(items: list[dict], kind: str, key: str, fail) -> None:
    present = [key in item for item in items]
    if not all(present):
        i = present.index(False)
        raise fail(_entry(kind, items[i], i), f"missing '{key}'")


def _int_column(items: list[dict], kind: str, key: str, fail) -> np.ndarray:
    values = [item[key] for item in items]
    ok = [isinstance(v, int) and not isinstance(v, bool) for v in values]
    if not all(ok):
        i = ok.index(False)
        raise fail(f"{_entry(kind, items[i], i)}.{key}", f"{values[i]!r}: expected an integer")
    return np.array(values, dtype=np.int64)


def _require_unique(ids: np.ndarray, kind: str, fail) -> None:
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = int(unique[counts > 1][0])
        raise fail(
            f"{kind}[id={dup}]",
            f"id appears {int(counts[counts > 1][0])} times; {kind} ids must be unique",
        )


def _number_rows(
    entries: list[dict], ids: np.ndarray, key: str, length: int, fail, what: str
) -> np.ndarray:
    """Stack ``entry[key]`` (lists of ``length`` finite numbers) into an (N, length) array."""
    values = [e[key] for e in entries]
    lengths = np.array([len(v) if isinstance(v, list) else -1 for v in values], np.int64)
    bad = np.flatnonzero(lengths != length)
    if bad.size:
        i = int(bad[0])
        got = f"{lengths[i]} values" if lengths[i] >= 0 else f"{type(values[i]).__name__}"
        raise fail(f"annotations[id={ids[i]}].{key}", f"{got}, expected {length} ({what})")
    # no dtype: numpy would turn "12" into 12.0; strings or None show up as a non-number dtype
    try:
        array = np.array(values).reshape(len(values), length)
        ok = array.dtype.kind in "iuf" and bool(np.isfinite(array).all())
    except (TypeError, ValueError):  # nested lists
        ok = False
    if not ok:
        for i, v in enumerate(values):
            if not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
                for x in v
            ):
                raise fail(f"annotations[id={ids[i]}].{key}", f"expected finite numbers ({what})")
        array = np.array(values, np.float64)  # plain numbers after all (say, huge integers)
    return array.astype(np.float32)


def _flag_column(entries: list[dict], ids: np.ndarray, fail) -> np.ndarray:
    values = [e.get("iscrowd", 0) for e in entries]
    ok = [v in (0, 1) for v in values]  # True and False compare equal to 1 and 0
    if not all(ok):
        i = ok.index(False)
        raise fail(f"annotations[id={ids[i]}].iscrowd", f"{values[i]!r}: expected 0 or 1")
    return np.array(values, dtype=bool)


def _check_areas(entries: list[dict], ids: np.ndarray, fail) -> None:
    """``area``, when given, is a finite number >= 0: COCOeval silently leaves out a person
    whose area is outside its [0, 1e10] range, and compares it as a number."""
    for i, entry in enumerate(entries):
        area = entry["area"]
        if isinstance(area, bool) or not isinstance(area, int | float) or not math.isfinite(area):
            raise fail(f"annotations[id={ids[i]}].area", f"{area!r}: expected a number of pixels")
        if not 0 <= area <= MAX_AREA:
            what = "is negative" if area < 0 else f"is above COCOeval's largest area ({MAX_AREA:g})"
            raise fail(
                f"annotations[id={ids[i]}].area",
                f"{area!r} {what}, and evaluation would silently leave this person out; set it "
                "to the person's segmentation area (or remove the key: the box area is used)",
            )


def _check_segmentations(
    entries: list[dict], ids: np.ndarray, image_ids: np.ndarray, sizes: dict, fail
) -> None:
    """Segmentations are polygon lists or RLE dicts whose size is their image's size."""
    for i, entry in enumerate(entries):
        seg = entry.get("segmentation")
        if seg is None or isinstance(seg, list):
            continue
        field = f"annotations[id={ids[i]}].segmentation"
        if not (isinstance(seg, dict) and "counts" in seg and "size" in seg):
            raise fail(field, "expected a list of polygons or an RLE {counts, size}")
        height, width = sizes[int(image_ids[i])]
        if not isinstance(seg["size"], list) or seg["size"] != [height, width]:
            raise fail(
                field,
                f"RLE size {seg['size']} differs from its image's [height, width] "
                f"[{height}, {width}]",
            )


def _check_image_files(images: list[dict], image_dir: Path, ann_file: Path) -> None:
    # one directory listing instead of a stat() per image: COCO train has 118k files
    present = set(os.listdir(image_dir))
    missing = [
        img
        for img in images
        if not (
            img["file_name"] in present
            or ("/" in img["file_name"] and (image_dir / img["file_name"]).is_file())
        )
    ]
    if missing:
        img = missing[0]
        raise DatasetError(
            f"{ann_file}: images[id={img['id']}].file_name: {image_dir / img['file_name']} "
            f"does not exist ({len(missing)} of {len(images)} listed images are missing); "
            f"put the images in {image_dir} or remove their entries"
        )


# records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its annotations in the form training needs.

    Attributes:
        image_id: COCO image id.
        image_dir: the split's image folder.
        file_name: the image's ``file_name`` (``path`` joins the two).
        width: image width in pixels (from the annotation file).
        height: image height in pixels.
        keypoints: (P, J, 3) float32 x, y, v of the target people, in the pose config's joint
            order; v = 0 where a joint is not labelled. People are sorted by decreasing box area.
        boxes: (P, 4) float32 x, y, width, height of the same people.
        num_keypoints: (P,) int64 labelled dataset keypoints of each person.
        annotation_ids: (P,) int64.
        main_people: (M,) int64 indices into P of the people that anchor training crops.
        keep: P segmentations (polygon list or RLE dict; the box as a polygon when the
            annotation has none): regions that always count in the loss.
        ignore: segmentations of crowd regions, people without keypoints and people beyond
            ``max_people``: masked out of the loss unless a kept region covers them.
        labelled: False for a picture without annotations (:func:`unlabelled_records`): no
            pixel of it counts in the loss on labels.
    """

    image_id: int
    image_dir: Path
    file_name: str
    width: int
    height: int
    keypoints: np.ndarray
    boxes: np.ndarray
    num_keypoints: np.ndarray
    annotation_ids: np.ndarray
    main_people: np.ndarray
    keep: tuple
    ignore: tuple
    labelled: bool = True

    @property
    def path(self) -> Path:
        """The image file."""
        return self.image_dir / self.file_name

    @property
    def num_people(self) -> int:
        return len(self.keypoints)


def select_main_people(
    boxes: np.ndarray,
    num_keypoints: np.ndarray,
    *,
    min_kpts: int,
    min_width: float,
    min_height: float,
    min_dist_ratio: float,
) -> np.ndarray:
    """TAO's filter of the people that anchor person-centric crops.

    A person qualifies with at least ``min_kpts`` labelled keypoints and a box at least
    ``min_width`` x ``min_height``. Going from the largest box to the smallest, a qualifying
    person is skipped when its box centre is closer than ``min_dist_ratio`` times the larger
    side of an already chosen person's box to that person's centre (a near-duplicate crop).

    Args:
        boxes: (P, 4) x, y, width, height.
        num_keypoints: (P,) labelled keypoints per person.

    Returns:
        (M,) int64 indices into P, in the order chosen (largest first).
    """
    # a handful of people per image: plain Python beats numpy calls on arrays this small
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4).tolist()
    candidates = [
        i
        for i, ((_, _, w, h), n) in enumerate(
            zip(boxes, np.asarray(num_keypoints).tolist(), strict=True)
        )
        if n >= min_kpts and w >= min_width and h >= min_height
    ]
    candidates.sort(key=lambda i: -boxes[i][2] * boxes[i][3])  # stable: ties keep file order
    chosen: list[int] = []
    taken: list[tuple[float, float, float]] = []  # centre x, centre y, reach of chosen people
    for i in candidates:
        x, y, w, h = boxes[i]
        cx, cy = x + w / 2, y + h / 2
        if all(math.hypot(cx - px, cy - py) >= reach for px, py, reach in taken):
            chosen.append(i)
            taken.append((cx, cy, min_dist_ratio * max(w, h)))
    return np.array(chosen, np.int64)


def keypoint_order(split: CocoSplit, pose: PoseConfig) -> np.ndarray:
    """(K',) columns of the split's keypoints that give ``pose.dataset_keypoints``, by name.

    Raises:
        DatasetError: when the category lacks a keypoint the pose config needs.
    """
    index = {name: k for k, name in enumerate(split.keypoint_names)}
    missing = [n for n in pose.dataset_keypoints if n not in index]
    if missing:
        raise DatasetError(
            f"{split.ann_file}: categories[id={split.category['id']}].keypoints has no "
            f"{', '.join(missing)}, which pose config '{pose.name}' lists in dataset_keypoints; "
            "use a pose config written for this dataset"
        )
    return np.array([index[n] for n in pose.dataset_keypoints], np.int64)


def build_records(
    split: CocoSplit, pose: PoseConfig, filters: DatasetConfig | None = None
) -> list[ImageRecord]:
    """Per-image records (one per image id, sorted), ready for masks and augmentation.

    Args:
        split: a loaded split.
        pose: the skeleton; its ``dataset_keypoints`` are matched to the category's by name.
        filters: main-person filters and ``max_people`` (TAO's ``dataset_config``).

    Returns:
        One :class:`ImageRecord` per image, including images without people.
    """
    filters = filters or DatasetConfig()
    table = split.table
    columns = keypoint_order(split, pose)
    # in chunks: the mapping makes a (N, J, K) temporary, 300 MB for all of COCO train at once
    joints = np.concatenate(
        [
            pose.joints_from_dataset(table.keypoints[start : start + 8192, columns])
            for start in range(0, max(len(table.keypoints), 1), 8192)
        ]
    )  # (N, J, 3)
    boxes = table.bboxes
    is_target = ~table.iscrowd & (table.num_keypoints > 0)
    candidate = (
        is_target
        & (table.num_keypoints >= filters.min_acceptable_kpts)
        & (boxes[:, 2] >= filters.min_acceptable_width)
        & (boxes[:, 3] >= filters.min_acceptable_height)
    )
    # one sort for every image: grouped by image, target people first, largest box first
    order = np.lexsort((-(boxes[:, 2] * boxes[:, 3]), ~is_target, table.image_ids))
    image_ids = np.array(split.image_ids, np.int64)
    starts = np.searchsorted(table.image_ids[order], image_ids, "left")
    ends = np.searchsorted(table.image_ids[order], image_ids, "right")
    image_of = np.searchsorted(image_ids, table.image_ids)  # (N,) position of each row's image
    targets = np.bincount(image_of[is_target], minlength=len(image_ids))
    candidates = np.bincount(image_of[candidate], minlength=len(image_ids))
    regions = [_region(e, b) for e, b in zip(table.entries, boxes.tolist(), strict=True)]
    images = split.coco.imgs
    no_one = np.zeros(0, np.int64)

    records = []
    for image_id, lo, hi, num_targets, num_candidates in zip(
        split.image_ids,
        starts.tolist(),
        ends.tolist(),
        targets.tolist(),
        candidates.tolist(),
        strict=True,
    ):
        info = images[image_id]
        if lo == hi:  # about half of COCO: no person annotation at all
            records.append(empty_record(split.image_dir, info, joints.shape[1]))
            continue
        rows = order[lo:hi]
        # people beyond max_people get no targets, so they must not count as background either
        kept = min(num_targets, filters.max_people)
        people = rows[:kept]
        if num_candidates == 0:
            main = no_one
        elif num_candidates == 1:  # no one to be a near-duplicate of
            main = np.flatnonzero(candidate[people])
        else:
            main = select_main_people(
                boxes[people],
                table.num_keypoints[people],
                min_kpts=filters.min_acceptable_kpts,
                min_width=filters.min_acceptable_width,
                min_height=filters.min_acceptable_height,
                min_dist_ratio=filters.min_acceptable_interperson_dist_ratio,
            )
        records.append(
            ImageRecord(
                image_id=image_id,
                image_dir=split.image_dir,
                file_name=info["file_name"],
                width=info["width"],
                height=info["height"],
                keypoints=joints[people],
                boxes=boxes[people],
                num_keypoints=table.num_keypoints[people],
                annotation_ids=table.ann_ids[people],
                main_people=main,
                keep=tuple(regions[i] for i in people.tolist()),
                ignore=tuple(regions[i] for i in rows[kept:].tolist()),
            )
        )
    return records


def empty_record(
    image_dir: Path, info: dict, num_joints: int, *, labelled: bool = True
) -> ImageRecord:
    """The record of an image without people (``info``: its id, file_name, width, height);
    ``labelled`` False for a picture that has no annotations at all."""
    return ImageRecord(
        image_id=info["id"],
        image_dir=image_dir,
        file_name=info["file_name"],
        width=info["width"],
        height=info["height"],
        keypoints=np.zeros((0, num_joints, 3), np.float32),
        boxes=np.zeros((0, 4), np.float32),
        num_keypoints=np.zeros(0, np.int64),
        annotation_ids=np.zeros(0, np.int64),
        main_people=np.zeros(0, np.int64),
        keep=(),
        ignore=(),
        labelled=labelled,
    )


def detections_for_image(
    image_id: int, keypoints: np.ndarray, scores: np.ndarray, category_id: int
) -> list[dict]:
    """COCO result records for the people found in one image.

    Args:
        image_id: the image's id in the annotation file.
        keypoints: (N, K, 3) x, y, confidence in original image pixels, in the dataset's
            keypoint order; keypoints not found are zeros.
        scores: (N,) person scores (they rank detections for AP).
        category_id: the keypoint category's id.
    """
    out = []
    for person, score in zip(keypoints, scores, strict=True):
        flat = np.round(person.astype(np.float64), 2).reshape(-1)
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "keypoints": flat.tolist(),
                "score": round(float(score), 5),
            }
        )
    return out


def _region(entry: dict, box: list[float]) -> Any:
    """The annotation's segmentation, or its box as a polygon when it has none."""
    seg = entry.get("segmentation")
    if seg:
        return seg
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]
