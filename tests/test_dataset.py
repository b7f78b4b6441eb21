"""The dataset and loader on the real COCO fixture: shapes, contents, determinism, errors."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bpnet.config import load_experiment_spec
from bpnet.data.coco import split_paths
from bpnet.data.dataset import EpochSampler, build_dataloader, build_dataset, collate
from bpnet.data.masks import record_mask
from bpnet.data.transforms import letterbox_matrix, transform_keypoints, warp_image, warp_mask
from bpnet.errors import DatasetError
from bpnet.pose import load_pose_config

SPEC = load_experiment_spec(None)  # TAO's defaults: 368x368, max_people 40


def flipped(matrix: torch.Tensor) -> bool:
    return bool(np.linalg.det(matrix[:, :2].numpy()) < 0)


def expected_keypoints(dataset, index: int, sample: dict) -> np.ndarray:
    """What the sample's keypoints must be: the record's, moved by the sample's own matrix."""
    record = dataset.records[dataset.samples[index][0]]
    perm = dataset.flip_permutation if flipped(sample["matrix"]) else None
    return transform_keypoints(record.keypoints, sample["matrix"].numpy(), perm)


@pytest.fixture(scope="module")
def train_set(coco_fixture):
    return build_dataset(SPEC, coco_fixture, "train2017", train=True)


@pytest.fixture(scope="module")
def val_set(coco_fixture):
    return build_dataset(SPEC, coco_fixture, "val2017", train=False)


def check_item(item: dict, num_joints: int = 18) -> None:
    assert item["image"].shape == (3, 368, 368) and item["image"].dtype == torch.float32
    assert item["keypoints"].shape == (40, num_joints, 3)
    assert item["keypoints"].dtype == torch.float32
    assert item["num_people"].dtype == torch.int64 and item["num_people"].ndim == 0
    assert item["mask"].shape == (368, 368) and item["mask"].dtype == torch.uint8
    assert set(item["mask"].unique().tolist()) <= {0, 1}
    assert item["image_id"].dtype == torch.int64
    assert item["matrix"].shape == (2, 3) and item["matrix"].dtype == torch.float64
    assert item["image_size"].shape == (2,)
    # default normalisation: rgb / 256 - 0.5
    assert item["image"].min() >= -0.5 and item["image"].max() <= 255 / 256 - 0.5
    assert not item["keypoints"][item["num_people"] :].any()  # padding rows are zeros


def test_train_samples_are_person_centric_crops(train_set):
    assert len(train_set) == sum(len(r.main_people) for r in train_set.records) == 36
    size = np.array([367 / 2, 367 / 2])
    for index in range(0, len(train_set), 3):
        item = train_set[index]
        check_item(item)
        record_index, person = train_set.samples[index]
        record = train_set.records[record_index]
        assert item["image_id"] == record.image_id
        n = int(item["num_people"])
        assert n == record.num_people
        np.testing.assert_allclose(
            item["keypoints"][:n].numpy(), expected_keypoints(train_set, index, item), atol=1e-4
        )
        # the main person's box centre lands near the crop centre (up to the translation)
        x, y, w, h = record.boxes[person]
        centre = item["matrix"].numpy() @ [x + w / 2, y + h / 2, 1]
        assert (np.abs(centre - size) <= 40 + 1e-6).all()


def test_whole_image_samples_fit_the_picture_then_augment(coco_fixture):
    overrides = ["dataloader.augmentation_config.spatial_augmentation_mode=whole_image"]
    spec = load_experiment_spec(None, overrides)
    dataset = build_dataset(spec, coco_fixture, "train2017", train=True)
    # one sample per image with main people, not one per person
    assert len(dataset) == sum(len(r.main_people) > 0 for r in dataset.records) == 23  # vs 36
    scale = spec.dataloader.augmentation_config.spatial_aug_params
    for index in range(0, len(dataset), 4):
        item = dataset[index]
        check_item(item)
        record = dataset.records[dataset.samples[index][0]]
        n = int(item["num_people"])
        assert n == record.num_people
        np.testing.assert_allclose(
            item["keypoints"][:n].numpy(), expected_keypoints(dataset, index, item), atol=1e-4
        )
        # the picture fits the (square) crop exactly before the random zoom
        matrix = item["matrix"].numpy()
        zoom = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        fit = 368 / max(record.height, record.width)
        assert fit * scale.zoom_ratio_min - 1e-6 <= zoom <= fit * scale.zoom_ratio_max + 1e-6


def test_eval_samples_are_whole_letterboxed_images(coco_fixture, val_set):
    assert len(val_set) == 50  # every image, people or not
    index = next(i for i, r in enumerate(val_set.records) if r.image_id == 329323)  # has a crowd
    item = val_set[index]
    check_item(item)
    record = val_set.records[index]
    matrix = letterbox_matrix(record.width, record.height, (368, 368))
    np.testing.assert_allclose(item["matrix"].numpy(), matrix)
    assert item["image_size"].tolist() == [record.height, record.width]
    np.testing.assert_allclose(
        item["keypoints"][: record.num_people].numpy(),
        transform_keypoints(record.keypoints, matrix),
        atol=1e-4,
    )
    # the mask is the record's loss mask, moved by the same matrix
    mask = warp_mask(record_mask(record), matrix, (368, 368))
    assert (mask == 0).any()
    np.testing.assert_array_equal(item["mask"].numpy(), mask)
    # RGB order and normalisation, against a plain OpenCV read
    bgr = cv2.imread(str(record.path))
    rgb = cv2.cvtColor(warp_image(bgr, matrix, (368, 368)), cv2.COLOR_BGR2RGB)
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 256 - 0.5
    torch.testing.assert_close(item["image"], expected)


def test_items_are_deterministic_per_seed_epoch_and_index(coco_fixture, train_set):
    again = build_dataset(SPEC, coco_fixture, "train2017", train=True)
    other_seed = build_dataset(SPEC, coco_fixture, "train2017", train=True, seed=123)
    a, b = train_set[(4, 2)], again[(4, 2)]
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a["matrix"], train_set[(4, 3)]["matrix"])  # another epoch
    assert not torch.equal(a["matrix"], other_seed[(4, 2)]["matrix"])
    torch.testing.assert_close(train_set[4]["image"], train_set[(4, 0)]["image"])


def test_epoch_sampler_shuffles_per_epoch_and_shards():
    sampler = EpochSampler(10, shuffle=True, seed=1)
    first, second = list(sampler), list(sampler)
    assert sorted(i for i, _ in first) == list(range(10))
    assert {e for _, e in first} == {0} and {e for _, e in second} == {1}
    assert [i for i, _ in first] != [i for i, _ in second]
    sampler.set_epoch(0)
    assert list(sampler) == first
    shards = [list(EpochSampler(10, shuffle=True, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert {i for s in shards for i, _ in s} == set(range(10))
    assert [i for i, _ in EpochSampler(4, shuffle=False)] == [0, 1, 2, 3]


def test_dataloader_batches_are_reproducible_with_or_without_workers(coco_fixture):
    def first_batches(workers: int) -> list[dict]:
        loader = build_dataloader(
            SPEC, coco_fixture, "train2017", train=True, batch_size=4, num_workers=workers
        )
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == 2:
                break
        return batches

    inline, again, worker = first_batches(0), first_batches(0), first_batches(1)
    assert inline[0]["image"].shape == (4, 3, 368, 368)
    assert inline[0]["keypoints"].shape == (4, 40, 18, 3)
    assert inline[0]["mask"].shape == (4, 368, 368)
    assert inline[0]["num_people"].shape == (4,)
    for a, b, c in zip(inline, again, worker, strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key])
            torch.testing.assert_close(a[key], c[key])


def test_collate_stacks_every_entry(val_set):
    batch = collate([val_set[0], val_set[1]])
    assert batch["image"].shape == (2, 3, 368, 368) and batch["image_id"].shape == (2,)
    assert batch["matrix"].shape == (2, 2, 3)


def test_custom_five_joint_skeleton_needs_no_code_change(five_joint_config, coco_fixture):
    pose = load_pose_config(five_joint_config)
    assert pose.flip_permutation.tolist() == [0, 1, 3, 2, 4]  # wrists swap
    dataset = build_dataset(SPEC, coco_fixture, "val2017", train=True, pose=pose)
    mirrored = 0
    for index in range(len(dataset)):
        item = dataset[index]
        check_item(item, num_joints=5)
        n = int(item["num_people"])
        np.testing.assert_allclose(
            item["keypoints"][:n].numpy(), expected_keypoints(dataset, index, item), atol=1e-4
        )
        if flipped(item["matrix"]):
            record = dataset.records[dataset.samples[index][0]]
            matrix = item["matrix"].numpy()
            # the left wrist channel now holds the (mirrored) right wrist, and vice versa
            moved = transform_keypoints(record.keypoints, matrix)
            np.testing.assert_allclose(item["keypoints"][:n, 2].numpy(), moved[:, 3], atol=1e-4)
            np.testing.assert_allclose(item["keypoints"][:n, 3].numpy(), moved[:, 2], atol=1e-4)
            mirrored += 1
    assert mirrored > 0


def test_images_without_main_people_become_negatives(coco_fixture, train_set):
    spec = load_experiment_spec(None, ["dataloader.dataset_config.use_images_without_people=true"])
    dataset = build_dataset(spec, coco_fixture, "train2017", train=True)
    negatives = sum(len(r.main_people) == 0 for r in train_set.records)
    assert len(dataset) == len(train_set) + negatives
    index = next(i for i, (_, person) in enumerate(dataset.samples) if person < 0)
    check_item(dataset[index])


def _copy_split(tmp_path: Path, fixture: Path, split: str = "val2017") -> Path:
    ann, images = split_paths(tmp_path, split)
    ann.parent.mkdir(parents=True)
    shutil.copy(split_paths(fixture, split)[0], ann)
    images.mkdir()
    for path in split_paths(fixture, split)[1].iterdir():
        (images / path.name).symlink_to(path)
    return tmp_path


def test_corrupt_or_resized_image_is_a_dataset_error(tmp_path, coco_fixture):
    root = _copy_split(tmp_path, coco_fixture)
    dataset = build_dataset(SPEC, root, "val2017", train=False)
    broken, resized = dataset.records[0].path, dataset.records[1].path
    broken.unlink()
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    resized.unlink()
    cv2.imwrite(str(resized), np.zeros((10, 20, 3), np.uint8))
    with pytest.raises(DatasetError, match=rf"{broken}: not a readable image"):
        dataset[0]
    with pytest.raises(DatasetError, match=rf"{resized}: image is 20x10 pixels but .* says"):
        dataset[1]
    broken.unlink()
    with pytest.raises(DatasetError, match=rf"{broken}: cannot read image file"):
        dataset[0]


def test_loader_needs_a_root_and_training_samples(coco_fixture):
    with pytest.raises(DatasetError, match="no dataset root"):
        build_dataloader(SPEC, None, "val2017", train=False)
    strict = load_experiment_spec(None, ["dataloader.dataset_config.min_acceptable_kpts=99"])
    with pytest.raises(DatasetError, match="has no training sample"):
        build_dataloader(strict, coco_fixture, "train2017", train=True)
