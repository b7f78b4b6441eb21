"""Loss masks: crowd and unlabelled people are ignored, labelled people always count."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bpnet.data.coco import build_records, load_coco_split
from bpnet.data.masks import loss_mask, record_mask, segmentation_rle
from bpnet.errors import DatasetError
from bpnet.pose import load_pose_config

H, W = 60, 80
SQUARE = [[10, 10, 40, 10, 40, 40, 10, 40]]  # polygon covering pixels 10..39


def uncompressed_rle(binary: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a binary (H, W) mask: column-major run lengths, zeros first."""
    flat = binary.T.reshape(-1).astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": list(binary.shape)}


def test_every_segmentation_format_gives_the_same_region():
    binary = np.zeros((H, W), np.uint8)
    binary[10:40, 10:40] = 1
    compressed = mask_utils.encode(np.asfortranarray(binary))
    as_text = {"size": compressed["size"], "counts": compressed["counts"].decode("ascii")}
    formats = {
        "polygon": SQUARE,
        "flat polygon": SQUARE[0],
        "uncompressed RLE": uncompressed_rle(binary),
        "compressed RLE": compressed,
        "compressed RLE (text)": as_text,
    }
    for name, seg in formats.items():
        mask = loss_mask(H, W, [seg])
        assert mask.shape == (H, W) and mask.dtype == np.uint8 and mask.flags.c_contiguous
        # polygon rasterisation may differ on the outline; the inside and outside must not
        assert (mask[12:38, 12:38] == 0).all(), name
        assert mask[:8].all() and mask[42:].all() and mask[:, :8].all() and mask[:, 42:].all(), name
    np.testing.assert_array_equal(loss_mask(H, W, [compressed]), 1 - binary)


def test_labelled_person_is_carved_back_into_an_ignored_region():
    crowd = [[0, 0, 50, 0, 50, 60, 0, 60]]  # left part of the image
    person = [[30, 20, 70, 20, 70, 50, 30, 50]]  # overlaps the crowd at x in 30..49
    mask = loss_mask(H, W, ignore=[crowd], keep=[person])
    assert (mask[5:55, 5:25] == 0).all()  # crowd only
    assert (mask[25:45, 35:45] == 1).all()  # crowd and person: the person wins
    assert (mask[25:45, 55:65] == 1).all()  # person only
    assert (mask[:, 55:] == 1).all()  # nothing there


def test_no_ignore_regions_means_all_ones_and_degenerate_polygons_are_skipped():
    np.testing.assert_array_equal(loss_mask(H, W, []), np.ones((H, W), np.uint8))
    np.testing.assert_array_equal(loss_mask(H, W, [[[1, 2, 3, 4]], []]), np.ones((H, W)))
    assert segmentation_rle([], H, W) is None


def test_broken_segmentation_is_a_dataset_error():
    with pytest.raises(DatasetError, match=r"img\.jpg: a segmentation cannot be rasterised"):
        loss_mask(H, W, [{"counts": [1, 2]}], source="img.jpg")  # no size


@pytest.fixture(scope="module")
def fixture_records(coco_fixture):
    out = {}
    for split in ("train2017", "val2017"):
        data = load_coco_split(coco_fixture, split)
        for record in build_records(data, load_pose_config()):
            out[(split, record.image_id)] = (data, record)
    return out


def _ann_masks(data, image_id, which):
    anns = data.coco.imgToAnns[image_id]
    picked = [a for a in anns if which(a)]
    if not picked:
        return np.zeros((data.coco.imgs[image_id]["height"], data.coco.imgs[image_id]["width"]))
    return np.max([data.coco.annToMask(a) for a in picked], axis=0).astype(bool)


def _is_labelled(ann):
    return not ann["iscrowd"] and ann["num_keypoints"] > 0


@pytest.mark.parametrize("split, image_id", [("train2017", 293802), ("val2017", 329323)])
def test_fixture_crowd_is_zero_and_labelled_people_are_one(fixture_records, split, image_id):
    """Real images where a crowd region (RLE) overlaps labelled people."""
    data, record = fixture_records[(split, image_id)]
    mask = record_mask(record)
    assert mask.shape == (record.height, record.width)
    crowd = _ann_masks(data, image_id, lambda a: a["iscrowd"])
    unlabelled = _ann_masks(data, image_id, lambda a: not a["iscrowd"] and a["num_keypoints"] == 0)
    labelled = _ann_masks(data, image_id, _is_labelled)
    assert crowd.any() and (crowd & labelled).any()  # the case this test is about
    assert (mask[crowd & ~labelled] == 0).all()
    assert (mask[unlabelled & ~labelled] == 0).all()
    assert (mask[labelled] == 1).all()
    assert (mask[~crowd & ~unlabelled] == 1).all()


def test_fixture_images_without_ignore_regions_are_all_ones(fixture_records):
    checked = 0
    for (_, image_id), (data, record) in fixture_records.items():
        anns = data.coco.imgToAnns[image_id]
        if all(_is_labelled(a) for a in anns):
            assert not record.ignore
            assert record_mask(record).all()
            checked += 1
    assert checked >= 30  # includes the person-free images


def test_a_list_of_rle_pieces_is_masked():
    piece = np.zeros((10, 10), np.uint8, order="F")
    piece[2:5, 2:5] = 1
    rle = mask_utils.encode(piece)
    rle["counts"] = rle["counts"].decode("ascii")
    assert (loss_mask(10, 10, [rle]) == 0).sum() == 9
    assert (loss_mask(10, 10, [[rle]]) == 0).sum() == 9
