"""The COCO pose dataset and its loader: (image, keypoints, loss mask) at network input size.

Training yields one sample per (image, main person): the crop is centred on that person and
augmented (see :mod:`bpnet.data.transforms`). Evaluation yields one sample per image, resized
to fit the input with its aspect ratio kept and padded right/bottom. Targets (heatmaps, PAFs)
are not made here; an encoder turns ``keypoints`` into them.

Every sample's randomness comes from ``(seed, epoch, index)`` alone, so a sample is the same
whatever the number of workers, the batch size or the order in which it is asked for.

Example:
    >>> spec = load_experiment_spec("specs/coco.yaml")  # doctest: +SKIP
    >>> loader = build_dataloader(spec, "coco", "train2017", train=True)  # doctest: +SKIP
    >>> batch = next(iter(loader))  # doctest: +SKIP
    >>> batch["image"].shape, batch["keypoints"].shape, batch["mask"].shape  # doctest: +SKIP
    (torch.Size([10, 3, 368, 368]), torch.Size([10, 40, 18, 3]), torch.Size([10, 368, 368]))
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bpnet.config import resolve_pose_config
from bpnet.config.spec import (
    AugmentationConfig,
    DatasetConfig,
    ExperimentSpec,
    NormalizationParams,
)
from bpnet.data.coco import ImageRecord, build_records, empty_record, load_coco_split
from bpnet.data.masks import record_mask
from bpnet.data.transforms import (
    color_jitter,
    letterbox_matrix,
    normalize_image,
    sample_person_centric,
    transform_keypoints,
    warp_image,
    warp_mask,
)
from bpnet.errors import DatasetError, UnreadableImageError
from bpnet.io import image_files
from bpnet.pose import PoseConfig

# EXIF rotation is ignored: COCO annotations refer to the stored pixel grid, and width/height
# in the annotation file describe that grid
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 BGR (OpenCV's order).

    Args:
        path: image file.
        size: the (height, width) the annotation file gives; checked when not None.

    Raises:
        UnreadableImageError: the file is missing, unreadable or not an image (its message
            advises an annotated dataset's fix; ``path`` and ``reason`` let callers advise
            another).
        DatasetError: the image is of another size than ``size``.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as err:
        reason = f"cannot read image file ({err.strerror or err})"
        raise UnreadableImageError(
            f"{path}: {reason}; restore the file or remove its entry from the annotation file",
            path=path,
            reason=reason,
        ) from None
    image = cv2.imdecode(data, IMREAD_FLAGS) if data.size else None
    if image is None:
        reason = "not a readable image (corrupt or not an image format OpenCV decodes)"
        raise UnreadableImageError(
            f"{path}: {reason}; replace the file or remove its entry from the annotation file",
            path=path,
            reason=reason,
        )
    if size is not None and image.shape[:2] != tuple(size):
        raise DatasetError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]} pixels but the annotation file "
            f"says {size[1]}x{size[0]}; fix its width/height entry or the file"
        )
    return image


def unlabelled_records(folder: str | os.PathLike, num_joints: int) -> list[ImageRecord]:
    """Records of the pictures in a folder that has no annotations (``unlabelled_images``).

    Each image is read once for its size. Image ids are negative (-1, -2, ... by file name),
    apart from any COCO id.

    Raises:
        DatasetError: the folder is missing or holds no image, or an image is unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: unlabelled_images folder not found; fix "
            "dataloader.dataset_config.unlabelled_images"
        )
    files = image_files(folder)
    if not files:
        raise DatasetError(
            f"{folder}: no .jpg / .png / .bmp images in the unlabelled_images folder"
        )
    records = []
    for index, path in enumerate(files, start=1):
        try:
            height, width = read_image(path).shape[:2]
        except UnreadableImageError as err:  # a folder of pictures: no annotation file to fix
            raise DatasetError(
                err.advise("replace the file or remove it from the unlabelled_images folder")
            ) from None
        info = {"id": -index, "file_name": path.name, "width": width, "height": height}
        records.append(empty_record(folder, info, num_joints, labelled=False))
    return records


class CocoPoseDataset(Dataset):
    """Samples of (image, keypoints, loss mask) at network input size.

    Args:
        records: per-image records (:func:`bpnet.data.coco.build_records`).
        size: network input (height, width).
        pose: the skeleton (for ``flip_permutation``).
        train: True for augmented person-centric crops, False for whole resized images.
        max_people: keypoints are padded (or cut) to this many people.
        normalization: ``image = rgb / image_scale - image_offset``.
        augmentation: spatial and colour augmentation settings (training only).
        use_images_without_people: in training, also use each image without a main person
            once, as a negative (a whole-image crop with the same random transform).
        seed: base seed of every sample's augmentation.

    Items are dicts (:func:`collate` stacks them):
        image: (3, H, W) float32, normalised RGB.
        keypoints: (max_people, J, 3) float32 x, y, v in input pixels; rows past
            ``num_people`` and unlabelled joints are zeros. Joints may lie outside the input.
        num_people: int64 scalar.
        mask: (H, W) uint8 loss mask, 1 = counts.
        image_id: int64 scalar.
        matrix: (2, 3) float64 map from original image pixels to input pixels
            (:func:`bpnet.data.transforms.invert_affine` maps predictions back).
        image_size: (2,) int64 original (height, width).

    An index is an int or ``(index, epoch)`` (what :class:`EpochSampler` yields); the
    augmentation of a sample is drawn from ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        *,
        size: tuple[int, int],
        pose: PoseConfig,
        train: bool,
        max_people: int = 40,
        normalization: NormalizationParams | None = None,
        augmentation: AugmentationConfig | None = None,
        use_images_without_people: bool = False,
        seed: int = 0,
    ):
        self.records = list(records)
        self.size = (int(size[0]), int(size[1]))
        self.flip_permutation = pose.flip_permutation
        self.num_joints = pose.num_joints
        self.train = train
        self.max_people = max_people
        normalization = normalization or NormalizationParams()
        self.augmentation = augmentation or AugmentationConfig()
        self.seed = seed
        self.normalization = normalization
        self.samples = self._index(use_images_without_people)

    def _index(self, use_images_without_people: bool) -> list[tuple[int, int]]:
        """(record index, main person index or -1) for every sample."""
        if not self.train:
            return [(r, -1) for r in range(len(self.records))]
        centred = self.augmentation.spatial_augmentation_mode == "person_centric"
        samples = []
        for r, record in enumerate(self.records):
            if not record.labelled:  # asked for by name: always a (whole-image) sample
                samples.append((r, -1))
            elif len(record.main_people) == 0:
                if use_images_without_people:
                    samples.append((r, -1))
            elif centred:
                samples.extend((r, int(p)) for p in record.main_people)
            else:
                samples.append((r, -1))
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = (index, 0) if isinstance(index, (int, np.integer)) else index
        record_index, person = self.samples[index]
        record = self.records[record_index]
        rng = np.random.default_rng([self.seed, epoch, index])

        matrix, flipped = self._matrix(record, person, rng)
        image = warp_image(
            read_image(record.path, (record.height, record.width)), matrix, self.size
        )
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if self.train:
            image = color_jitter(image, self.augmentation.color_aug_params, rng)
        if not record.labelled:  # nothing here counts in the loss on labels
            mask = np.zeros(self.size, np.uint8)
        elif record.ignore:
            mask = warp_mask(record_mask(record), matrix, self.size)
        else:  # nothing to ignore, and the warp border counts too
            mask = np.ones(self.size, np.uint8)

        keypoints = np.zeros((self.max_people, self.num_joints, 3), np.float32)
        people = min(record.num_people, self.max_people)
        keypoints[:people] = transform_keypoints(
            record.keypoints[:people], matrix, self.flip_permutation if flipped else None
        )
        return {
            "image": torch.from_numpy(normalize_image(image, self.normalization)),
            "keypoints": torch.from_numpy(keypoints),
            "num_people": torch.tensor(people, dtype=torch.int64),
            "mask": torch.from_numpy(mask),
            "image_id": torch.tensor(record.image_id, dtype=torch.int64),
            "matrix": torch.from_numpy(matrix),
            "image_size": torch.tensor([record.height, record.width], dtype=torch.int64),
        }

    def _matrix(
        self, record: ImageRecord, person: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, bool]:
        mode = self.augmentation.spatial_augmentation_mode
        if not self.train or mode == "none":
            return letterbox_matrix(record.width, record.height, self.size), False
        params = self.augmentation.spatial_aug_params
        if person >= 0:  # person_centric
            # The box height, as CMU's and TAO's generators use: it is what the min height filter
            # reads, and it stays sensible for people with few labelled keypoints, where a
            # keypoint extent (say, only the head) would zoom in far too much.
            x, y, w, h = record.boxes[person].tolist()
            return sample_person_centric((x + w / 2, y + h / 2), h, self.size, params, rng)
        # whole_image, or a negative: the whole image fits the crop (before the random zoom)
        height, width = self.size
        fit = params.target_person_scale * max(record.height, record.width * height / width)
        centre = ((record.width - 1) / 2, (record.height - 1) / 2)
        return sample_person_centric(centre, fit, self.size, params, rng)


def collate(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of dataset items into a batch: every entry gains a leading B dimension."""
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


class EpochSampler(Sampler):
    """Yields ``(index, epoch)`` pairs: a (shuffled) pass over the dataset per iteration.

    The dataset draws each sample's augmentation from ``(seed, epoch, index)``, so runs with
    the same seed are identical whatever the worker count. The epoch advances by one each time
    the sampler is iterated; :meth:`set_epoch` sets it (e.g. when resuming training).

    Args:
        num_samples: dataset length.
        shuffle: permute the order, with a permutation drawn from ``(seed, epoch)``.
        seed: shuffling seed.
        rank: this process's shard (data-parallel training), ``0 <= rank < world_size``.
        world_size: number of shards; each gets ``ceil(num_samples / world_size)`` indices
            (the order wraps around to fill the last ones).
    """

    def __init__(
        self, num_samples: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        if self.world_size > 1 and self.num_samples:
            order = np.resize(order, len(self) * self.world_size)[self.rank :: self.world_size]
        return iter([(int(i), epoch) for i in order])


def build_dataset(
    spec: ExperimentSpec,
    root: str | os.PathLike | None = None,
    split: str | None = None,
    *,
    train: bool,
    pose: PoseConfig | None = None,
    check_images: bool = True,
    seed: int | None = None,
) -> CocoPoseDataset:
    """Load a split and wrap it in a :class:`CocoPoseDataset` configured by the spec.

    Args:
        spec: the experiment spec (``dataloader`` section).
        root: dataset root; ``dataloader.dataset_config.root_data_path`` when None.
        split: split name; the spec's ``train_split`` / ``val_split`` when None.
        train: augmented person-centric samples (True) or whole letterboxed images (False).
        pose: the skeleton; the spec's ``pose_config`` when None.
        check_images: check that every image file exists while loading.
        seed: augmentation seed; ``spec.random_seed`` when None.

    Raises:
        DatasetError: bad dataset files or no dataset root given.
    """
    config = spec.dataloader
    data_config = config.dataset_config
    extra = data_config.unlabelled_images if train else None
    root = dataset_root(root, data_config, required=extra is None)
    split = split or (data_config.train_split if train else data_config.val_split)
    pose = pose or resolve_pose_config(config)
    records = []
    if root is not None and split is not None:
        split_data = load_coco_split(root, split, check_images=check_images)
        records = build_records(split_data, pose, data_config)
    if extra is not None:
        records += unlabelled_records(extra, pose.num_joints)
    dims = config.image_config.image_dims
    return CocoPoseDataset(
        records,
        size=(dims.height, dims.width),
        pose=pose,
        train=train,
        max_people=data_config.max_people,
        normalization=config.normalization_params,
        augmentation=config.augmentation_config,
        use_images_without_people=data_config.use_images_without_people,
        seed=spec.random_seed if seed is None else seed,
    )


def dataset_root(
    root: str | os.PathLike | None,
    config: DatasetConfig,
    *,
    required: bool = True,
    command: str = "bpnet ...",
) -> Path | None:
    """The dataset root: ``root`` (the command line's ``-d``) when given, else the spec's
    ``root_data_path``; None when neither is set and it is not ``required``.

    Raises:
        DatasetError: neither is set and ``required``.
    """
    root = root if root is not None else config.root_data_path
    if root is None and required:
        raise DatasetError(
            f"no dataset root: pass one ({command} -d ROOT) or set "
            "dataloader.dataset_config.root_data_path in the spec"
        )
    return None if root is None else Path(root)


def build_dataloader(
    spec: ExperimentSpec,
    root: str | os.PathLike | None = None,
    split: str | None = None,
    *,
    train: bool,
    pose: PoseConfig | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    seed: int | None = None,
    check_images: bool = True,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over one split, configured by the spec.

    Args:
        spec: the experiment spec; ``dataloader.batch_size`` and ``num_workers`` are defaults.
        root: dataset root (see :func:`build_dataset`).
        split: split name (see :func:`build_dataset`).
        train: training samples (augmented, shuffled, last partial batch dropped) or
            evaluation samples (one per image, in image id order, every image).
        pose: the skeleton; the spec's ``pose_config`` when None.
        batch_size: overrides ``dataloader.batch_size``.
        num_workers: overrides ``dataloader.num_workers``.
        shuffle: defaults to ``train``.
        drop_last: defaults to ``train``.
        seed: shuffling and augmentation seed; ``spec.random_seed`` when None.
        check_images: check that every image file exists while loading.
        rank: data-parallel shard of this process.
        world_size: number of data-parallel shards.
        pin_memory: passed to the DataLoader (True when copying batches to a GPU).

    Returns:
        A DataLoader whose batches are :func:`collate` dicts; its ``sampler`` is an
        :class:`EpochSampler` (call ``set_epoch`` when resuming).

    Raises:
        DatasetError: bad dataset files; also when a training split has no sample.
    """
    seed = spec.random_seed if seed is None else seed
    dataset = build_dataset(
        spec, root, split, train=train, pose=pose, check_images=check_images, seed=seed
    )
    if train and len(dataset) == 0:
        raise DatasetError(
            f"{root or spec.dataloader.dataset_config.root_data_path}: split "
            f"'{split or spec.dataloader.dataset_config.train_split}' has no training sample: no "
            "person passes dataloader.dataset_config's min_acceptable_* filters; relax them or "
            "set use_images_without_people: true"
        )
    workers = spec.dataloader.num_workers if num_workers is None else num_workers
    sampler = EpochSampler(
        len(dataset),
        shuffle=train if shuffle is None else shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    # No worker_init_fn: torch already runs each worker on one thread, and OpenCV in a forked
    # worker runs serially; calling cv2.setNumThreads there deadlocks once the parent has used
    # OpenCV's thread pool.
    return DataLoader(
        dataset,
        batch_size=batch_size or spec.dataloader.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        drop_last=train if drop_last is None else drop_last,
    )


__all__ = [
    "CocoPoseDataset",
    "EpochSampler",
    "build_dataloader",
    "build_dataset",
    "collate",
    "read_image",
]
