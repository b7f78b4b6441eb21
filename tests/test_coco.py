"""Loading and validating COCO keypoint splits, and the per-image records built from them."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bpnet.config.spec import DatasetConfig
from bpnet.data.coco import build_records, load_coco_split, select_main_people, split_paths
from bpnet.errors import DatasetError
from bpnet.pose import load_pose_config
from conftest import FIVE_JOINTS

SPLIT = "train2017"


def raw_annotations(root: Path, split: str = SPLIT) -> dict:
    return json.loads(split_paths(root, split)[0].read_text())


def broken_copy(tmp_path: Path, fixture: Path, mutate, split: str = SPLIT) -> Path:
    """A dataset root whose annotation file is the fixture's after ``mutate(data)``.

    ``mutate`` edits the dict in place, or returns the file's text. The image folder is a
    symlink to the fixture's, so only the JSON is copied.
    """
    data = raw_annotations(fixture, split)
    result = mutate(data)
    ann_file, image_dir = split_paths(tmp_path, split)
    ann_file.parent.mkdir(parents=True)
    ann_file.write_text(result if isinstance(result, str) else json.dumps(data))
    image_dir.symlink_to(split_paths(fixture, split)[1])
    return tmp_path


def first_labelled(data: dict) -> dict:
    return next(a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])


@pytest.mark.parametrize(
    "split, images, annotations, labelled, crowd, without_people",
    [("train2017", 50, 99, 57, 3, 24), ("val2017", 50, 127, 46, 4, 27)],
)
def test_fixture_counts_match_readme(
    coco_fixture, split, images, annotations, labelled, crowd, without_people
):
    data = load_coco_split(coco_fixture, split)
    assert len(data.image_ids) == images
    assert data.image_ids == sorted(data.image_ids)
    assert len(data.coco.anns) == annotations
    assert data.keypoint_names[0] == "nose" and len(data.keypoint_names) == 17
    assert data.category["name"] == "person"
    table = data.table
    assert table.keypoints.shape == (annotations, 17, 3)
    assert int((~table.iscrowd & (table.num_keypoints > 0)).sum()) == labelled
    assert int(table.iscrowd.sum()) == crowd
    assert len(set(data.image_ids) - set(table.image_ids.tolist())) == without_people
    # the counted keypoints agree with the file's own num_keypoints
    stated = np.array([a["num_keypoints"] for a in table.entries])
    np.testing.assert_array_equal(table.num_keypoints, stated)


def test_split_paths_is_the_official_layout():
    ann, images = split_paths("/data/coco", "val2017")
    assert ann == Path("/data/coco/annotations/person_keypoints_val2017.json")
    assert images == Path("/data/coco/val2017")


def test_missing_annotation_file_names_expected_path(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_coco_split(tmp_path, "val2017")
    message = str(err.value)
    assert str(tmp_path / "annotations" / "person_keypoints_val2017.json") in message
    assert "annotations/person_keypoints_<split>.json" in message and "\n" not in message


def test_missing_image_folder(tmp_path, coco_fixture):
    root = broken_copy(tmp_path, coco_fixture, lambda d: None)
    (root / SPLIT).unlink()
    with pytest.raises(DatasetError, match=rf"{root / SPLIT}: image folder .* not found"):
        load_coco_split(root, SPLIT)


def _truncate(data):
    return json.dumps(data, indent=1)[:5000]


def _drop_key(key):
    def mutate(data):
        del data[key]

    return mutate


def _no_keypoint_category(data):
    for cat in data["categories"]:
        del cat["keypoints"]


def _short_keypoints(data):
    first_labelled(data)["keypoints"].pop()


def _text_keypoints(data):
    first_labelled(data)["keypoints"][3] = "12"


def _unknown_image(data):
    first_labelled(data)["image_id"] = 987654321


def _negative_bbox(data):
    first_labelled(data)["bbox"][2] = -5.0


def _short_bbox(data):
    first_labelled(data)["bbox"] = [1, 2, 3]


def _image_without(key):
    def mutate(data):
        del data["images"][3][key]

    return mutate


def _duplicate_image(data):
    data["images"].append(dict(data["images"][0]))


def _duplicate_annotation(data):
    data["annotations"].append(dict(first_labelled(data)))


def _rle_wrong_size(data):
    crowd = next(a for a in data["annotations"] if a["iscrowd"])
    crowd["segmentation"]["size"] = [10, 10]


def _missing_image_file(data):
    data["images"][5]["file_name"] = "not_there.jpg"


def _fixture_ids(fixture: Path) -> tuple[int, int, int]:
    data = raw_annotations(fixture)
    return first_labelled(data)["id"], data["images"][3]["id"], data["images"][0]["id"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_truncate, r"malformed JSON at line \d+ column \d+"),
        (_drop_key("annotations"), r"annotations: missing top-level key"),
        (_drop_key("images"), r"images: missing top-level key"),
        (_no_keypoint_category, r"categories: no category has a 'keypoints' list"),
        (_short_keypoints, r"annotations\[id={ann}\]\.keypoints: 50 values, expected 51"),
        (_text_keypoints, r"annotations\[id={ann}\]\.keypoints: expected finite numbers"),
        (_unknown_image, r"annotations\[id={ann}\]\.image_id: 987654321 is not the id"),
        (_negative_bbox, r"annotations\[id={ann}\]\.bbox: .*negative width"),
        (_short_bbox, r"annotations\[id={ann}\]\.bbox: 3 values, expected 4"),
        (_image_without("file_name"), r"images\[id={img}\]: missing file_name"),
        (_image_without("width"), r"images\[id={img}\]: missing width"),
        (_image_without("height"), r"images\[id={img}\]: missing height"),
        (_duplicate_image, r"images\[id={first}\]: id appears 2 times"),
        (_duplicate_annotation, r"annotations\[id={ann}\]: id appears 2 times"),
        (_rle_wrong_size, r"segmentation: RLE size \[10, 10\] differs"),
        (_missing_image_file, r"file_name: .*not_there\.jpg does not exist"),
    ],
)
def test_malformed_files_name_file_and_entry(tmp_path, coco_fixture, mutate, expected):
    ann, img, first = _fixture_ids(coco_fixture)
    root = broken_copy(tmp_path, coco_fixture, mutate)
    with pytest.raises(DatasetError) as err:
        load_coco_split(root, SPLIT)
    message = str(err.value)
    assert message.startswith(f"{split_paths(root, SPLIT)[0]}: ")
    assert "\n" not in message
    assert re.search(expected.format(ann=ann, img=img, first=first), message), message


def test_missing_image_file_is_fine_without_check_images(tmp_path, coco_fixture):
    root = broken_copy(tmp_path, coco_fixture, _missing_image_file)
    assert len(load_coco_split(root, SPLIT, check_images=False).image_ids) == 50


def test_missing_optional_fields_get_coco_defaults(tmp_path, coco_fixture):
    def strip(data):
        for ann in data["annotations"]:
            for key in ("iscrowd", "num_keypoints", "area"):
                ann.pop(key, None)

    data = load_coco_split(broken_copy(tmp_path, coco_fixture, strip), SPLIT)
    ann = first_labelled(data.coco.dataset)
    assert ann["num_keypoints"] == int((np.array(ann["keypoints"][2::3]) > 0).sum())
    assert ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3])


def test_records_follow_the_target_and_ignore_rules(coco_fixture):
    data = load_coco_split(coco_fixture, SPLIT)
    pose = load_pose_config()
    records = build_records(data, pose)
    assert [r.image_id for r in records] == data.image_ids
    raw = data.coco.dataset["annotations"]
    targets = [a for a in raw if not a["iscrowd"] and a["num_keypoints"] > 0]
    ignored = [a for a in raw if a["iscrowd"] or a["num_keypoints"] == 0]
    assert sum(r.num_people for r in records) == len(targets) == 57
    assert sum(len(r.ignore) for r in records) == len(ignored) == 42
    for record in records:
        assert record.keypoints.shape == (record.num_people, pose.num_joints, 3)
        assert record.keypoints.dtype == np.float32
        assert record.boxes.shape == (record.num_people, 4)
        assert len(record.keep) == record.num_people
        areas = record.boxes[:, 2] * record.boxes[:, 3]
        assert (np.diff(areas) <= 0).all()  # largest first

    # one person checked by hand: skeleton order and the neck made from the shoulders
    ann = targets[0]
    record = next(r for r in records if r.image_id == ann["image_id"])
    person = record.keypoints[list(record.annotation_ids).index(ann["id"])]
    coco = np.array(ann["keypoints"], np.float32).reshape(17, 3)
    names = pose.joint_names
    assert person[names.index("left_wrist")].tolist() == coco[9].tolist()
    assert person[names.index("right_ankle")].tolist() == coco[16].tolist()
    if coco[5, 2] > 0 and coco[6, 2] > 0:
        np.testing.assert_allclose(person[names.index("neck"), :2], (coco[5, :2] + coco[6, :2]) / 2)


def test_max_people_moves_the_smallest_people_to_ignore(coco_fixture):
    data = load_coco_split(coco_fixture, SPLIT)
    pose = load_pose_config()
    full = {r.image_id: r for r in build_records(data, pose)}
    cut = {r.image_id: r for r in build_records(data, pose, DatasetConfig(max_people=2))}
    busy = next(i for i, r in full.items() if r.num_people > 2)
    assert cut[busy].num_people == 2
    assert len(cut[busy].ignore) == len(full[busy].ignore) + full[busy].num_people - 2
    np.testing.assert_array_equal(cut[busy].keypoints, full[busy].keypoints[:2])


def test_main_people_filters():
    boxes = np.array(
        [
            [0, 0, 100, 200],  # big
            [10, 10, 100, 200],  # centre 14 px from the big one's: < 0.3 * 200, a duplicate
            [300, 0, 20, 200],  # too narrow
            [500, 0, 100, 200],  # too few keypoints
            [700, 0, 50, 100],  # fine, smaller
        ],
        np.float32,
    )
    kpts = np.array([10, 10, 10, 3, 6])
    main = select_main_people(
        boxes, kpts, min_kpts=5, min_width=32, min_height=32, min_dist_ratio=0.3
    )
    assert main.tolist() == [0, 4]
    no_dedup = select_main_people(
        boxes, kpts, min_kpts=5, min_width=32, min_height=32, min_dist_ratio=0.0
    )
    assert no_dedup.tolist() == [0, 1, 4]


def test_custom_skeleton_records(five_joint_config, coco_fixture):
    pose = load_pose_config(five_joint_config)
    records = build_records(load_coco_split(coco_fixture, SPLIT), pose)
    people = [r for r in records if r.num_people]
    assert people and all(r.keypoints.shape == (r.num_people, 5, 3) for r in people)


def test_pose_config_with_unknown_keypoint_names_is_a_dataset_error(tmp_path, coco_fixture):
    text = FIVE_JOINTS.replace("'right_ankle'", "'tail'").replace("right_wrist}", "tail}")
    path = tmp_path / "tail.yaml"
    path.write_text(text)
    with pytest.raises(DatasetError, match=r"keypoints has no tail"):
        build_records(load_coco_split(coco_fixture, SPLIT), load_pose_config(path))
