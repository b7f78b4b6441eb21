"""The synthetic COCO-format generator: official layout, sound annotations, reproducible, atomic."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from bpnet.data.synth import generate_dataset, writer
from bpnet.data.synth.figure import COCO_SKELETON, KEYPOINT_NAMES
from bpnet.data.synth.scene import rle_encode
from bpnet.errors import DatasetError
from bpnet.pose import load_pose_config
from bpnet.visualize import draw_people


def _ann_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"person_keypoints_{split}.json"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """60 train + 12 val pictures: enough for every annotation kind and size class."""
    root = tmp_path_factory.mktemp("synth") / "data"
    return root, generate_dataset(root, 60, 12, seed=0)


@pytest.fixture(scope="module")
def cocos(dataset: tuple[Path, dict]) -> dict[str, COCO]:
    root, _ = dataset
    return {split: COCO(str(_ann_file(root, split))) for split in ("train", "val")}


def _annotations(coco: COCO) -> list[dict]:
    return coco.dataset["annotations"]


def test_official_layout(dataset: tuple[Path, dict], cocos: dict[str, COCO]) -> None:
    root, _ = dataset
    for split, coco in cocos.items():
        data = coco.dataset
        assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)
        (category,) = data["categories"]
        assert category["id"] == 1 and category["name"] == "person"
        assert tuple(category["keypoints"]) == KEYPOINT_NAMES
        assert [tuple(p) for p in category["skeleton"]] == list(COCO_SKELETON)
        for image in data["images"]:
            pixels = cv2.imread(str(root / split / image["file_name"]))
            assert pixels.shape == (image["height"], image["width"], 3)
        for ann in _annotations(coco):
            assert ann["category_id"] == 1
            assert len(ann["keypoints"]) == 51 and len(ann["bbox"]) == 4
            image = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]


def test_every_annotation_decodes_to_a_mask(cocos: dict[str, COCO]) -> None:
    for coco in cocos.values():
        for ann in _annotations(coco):
            mask = coco.annToMask(ann)
            image = coco.imgs[ann["image_id"]]
            assert mask.shape == (image["height"], image["width"])
            if ann["iscrowd"]:  # RLE is exact
                assert isinstance(ann["segmentation"]["counts"], list)
                assert mask.sum() == ann["area"]
            else:  # outlines through boundary pixel centres, holes filled (as in COCO)
                assert mask.sum() >= 0.3 * ann["area"]
                x, y, w, h = (int(v) for v in ann["bbox"])
                assert mask.sum() == mask[y : y + h, x : x + w].sum()


def test_keypoints_and_counts_agree(cocos: dict[str, COCO]) -> None:
    for coco in cocos.values():
        for ann in _annotations(coco):
            kp = np.array(ann["keypoints"], float).reshape(17, 3)
            assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
            assert (kp[kp[:, 2] == 0] == 0).all()  # unlabelled: x = y = v = 0
            if ann["iscrowd"] or ann["num_keypoints"] == 0:
                assert (kp == 0).all()
                continue
            image = coco.imgs[ann["image_id"]]
            xy = kp[kp[:, 2] > 0, :2]
            size = np.array([image["width"], image["height"]])
            assert (xy >= 0).all() and (xy <= size - 1).all()
            # no tiny labelled people: the oracle AP on this data must stay near 1
            assert np.ptp(xy, axis=0).max() >= 40


def _dilated_mask(coco: COCO, ann: dict) -> np.ndarray:
    # polygons run through boundary pixel centres: give them back the pixels they cut off
    return cv2.dilate(coco.annToMask(ann), np.ones((5, 5), np.uint8)) > 0


def test_visibility_flags_follow_the_drawing(cocos: dict[str, COCO]) -> None:
    occluded = 0
    for coco in cocos.values():
        for ann in _annotations(coco):
            if ann["num_keypoints"] == 0:
                continue
            kp = np.array(ann["keypoints"], float).reshape(17, 3)
            own = _dilated_mask(coco, ann)
            others = [
                _dilated_mask(coco, other)
                for other in coco.imgToAnns[ann["image_id"]]
                if other["id"] != ann["id"] and not other["iscrowd"]
            ]
            for x, y, v in kp:
                px, py = round(x), round(y)
                if v == 2:  # visible: on the person's own visible pixels
                    assert own[py, px]
                elif v == 1:  # occluded: under another person
                    occluded += 1
                    assert any(m[py, px] for m in others)
    assert occluded > 0


def test_all_annotation_kinds_and_size_classes(
    dataset: tuple[Path, dict], cocos: dict[str, COCO]
) -> None:
    _, summary = dataset
    anns = _annotations(cocos["train"])
    crowd = [a for a in anns if a["iscrowd"]]
    unlabelled = [a for a in anns if not a["iscrowd"] and a["num_keypoints"] == 0]
    labelled = [a for a in anns if a["num_keypoints"] > 0]
    assert crowd and unlabelled and labelled
    for ann in crowd:
        image = cocos["train"].imgs[ann["image_id"]]
        assert ann["segmentation"]["size"] == [image["height"], image["width"]]
        assert sum(ann["segmentation"]["counts"]) == image["height"] * image["width"]
        assert ann["num_keypoints"] == 0 and not any(ann["keypoints"])
    for ann in unlabelled:
        assert isinstance(ann["segmentation"], list) and not any(ann["keypoints"])
    areas = np.array([a["area"] for a in labelled])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any()
    assert (areas >= 96**2).any()
    counts = summary["train"]
    assert (counts["crowd"], counts["unlabelled"], counts["people"]) == (
        len(crowd),
        len(unlabelled),
        len(labelled),
    )
    assert counts["small"] + counts["medium"] + counts["large"] == len(labelled)
    people_per_image = np.bincount([a["image_id"] for a in anns if not a["iscrowd"]])
    assert people_per_image.max() <= 6


def test_easy_difficulty_has_fewer_and_bigger_people(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "easy", 25, 0, seed=0, difficulty="easy")
    coco = json.loads(_ann_file(tmp_path / "easy", "train").read_text())
    assert "difficulty easy" in coco["info"]["description"]
    people = [a for a in coco["annotations"] if not a["iscrowd"]]
    per_image = np.bincount([a["image_id"] for a in people], minlength=26)[1:]
    assert per_image.max() <= 3 and (per_image > 0).mean() > 0.9
    standard = generate_dataset(tmp_path / "std", 25, 0, seed=0)["train"]
    # no small people are drawn; a few labelled ones still have a small visible area
    # (covered by a person in front), far fewer than in the standard setting
    assert summary["train"]["small"] < 0.4 * standard["small"]
    assert summary["train"]["people"] < standard["people"]
    with pytest.raises(DatasetError, match="--difficulty hard"):
        generate_dataset(tmp_path / "x", 1, 1, difficulty="hard")
    assert not (tmp_path / "x").exists()


def _read_all(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", 4, 2, seed=7)
    generate_dataset(tmp_path / "b", 4, 2, seed=7)
    generate_dataset(tmp_path / "c", 4, 2, seed=8)
    a, b, c = (_read_all(tmp_path / n) for n in "abc")
    assert a == b
    train = "annotations/person_keypoints_train.json"
    assert a[train] != c[train]
    # the splits are different pictures, not copies
    assert a["train/000000000001.jpg"] != a["val/000000000001.jpg"]


def test_refuses_a_non_empty_folder_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="--force") as err:
        generate_dataset(out, 1, 1)
    assert str(out) in str(err.value) and "\n" not in str(err.value)
    assert (out / "old.txt").read_text() == "keep me"

    generate_dataset(out, 1, 1, force=True)
    assert not (out / "old.txt").exists()
    assert _ann_file(out, "val").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folders left


def test_empty_folder_is_fine(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    generate_dataset(out, 1, 0)
    assert json.loads(_ann_file(out, "val").read_text())["images"] == []


def test_no_half_written_dataset_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = writer._write_image

    def failing(path: Path, image: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real(path, image)

    monkeypatch.setattr(writer, "_write_image", failing)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(tmp_path / "data", 5, 1)
    assert list(tmp_path.iterdir()) == []

    # with --force, a failed run leaves the old dataset as it was
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("x")
    calls.clear()
    with pytest.raises(OSError):
        generate_dataset(old, 5, 1, force=True)
    assert [p.name for p in old.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


def test_bad_arguments_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--train"):
        generate_dataset(tmp_path / "x", -1, 1)
    with pytest.raises(DatasetError, match="image_size"):
        generate_dataset(tmp_path / "x", 1, 1, image_size=(500, 300))
    (tmp_path / "file").write_text("")
    with pytest.raises(DatasetError, match="not a folder"):
        generate_dataset(tmp_path / "file", 1, 1, force=True)


def test_rle_round_trip() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for shape in ((5, 7), (1, 1), (30, 20)):
        mask = rng.random(shape) < 0.4
        mask[0, 0] = True  # a run of zeros of length 0 first
        rle = rle_encode(mask)
        compressed = mask_utils.frPyObjects(rle, *shape)
        assert (mask_utils.decode(compressed) == mask).all()


def test_draw_people_draws_visible_and_occluded_joints() -> None:
    pose = load_pose_config()
    image = np.zeros((120, 100, 3), np.uint8)
    kp = np.zeros((2, 17, 3))
    kp[0, 5] = (30, 40, 2)  # left shoulder
    kp[0, 7] = (25, 70, 2)  # left elbow
    kp[0, 14] = (70, 100, 1)  # right knee, occluded, no limb reaches it
    drawn = draw_people(image, kp, pose)
    assert drawn.shape == image.shape and not image.any()  # a copy, input untouched
    assert drawn[40, 30].any() and drawn[70, 25].any()  # filled joints
    assert not drawn[100, 70].any() and drawn[100, 70 + 3].any()  # hollow: ring, no centre
    assert drawn[55, 27].any()  # the upper-arm limb
    empty = draw_people(image, np.zeros((1, 17, 3)), pose)
    assert not empty.any()
