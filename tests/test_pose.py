"""The pose config: default skeleton facts, neck rule, mapping to and from COCO, custom files."""

import numpy as np
import pytest

from bpnet.errors import SpecError
from bpnet.pose import load_pose_config
from bpnet.pose.skeleton import parse_pose_config
from conftest import COCO17, FIVE_JOINTS


def test_default_skeleton_matches_design():
    pose = load_pose_config()
    assert pose.num_joints == 18
    assert pose.num_limbs == 19
    assert pose.num_heatmap_channels == 19
    assert pose.num_paf_channels == 38
    assert list(pose.dataset_keypoints) == COCO17
    assert pose.joint_names[1] == "neck"


def test_flip_swaps_left_and_right_names():
    pose = load_pose_config()
    perm = pose.flip_permutation
    assert np.array_equal(perm[perm], np.arange(pose.num_joints))  # an involution
    for j, name in enumerate(pose.joint_names):
        other = pose.joint_names[perm[j]]
        if name.startswith("left_"):
            assert other == "right_" + name[5:]
        elif name.startswith("right_"):
            assert other == "left_" + name[6:]
        else:
            assert other == name


def test_limbs_form_a_connected_tree_first_order():
    pose = load_pose_config()
    reached = set(pose.limbs[0])
    for a, b in pose.limbs[1:]:
        assert a in reached or b in reached, (a, b)
        reached |= {a, b}
    assert reached == set(range(pose.num_joints))


def test_neck_rule():
    pose = load_pose_config()
    kpts = np.zeros((3, 17, 3), np.float32)
    ls, rs = COCO17.index("left_shoulder"), COCO17.index("right_shoulder")
    kpts[0, ls] = [10, 20, 2]
    kpts[0, rs] = [30, 40, 1]
    kpts[1, ls] = [10, 20, 2]  # right shoulder unlabelled: no neck
    joints = pose.joints_from_dataset(kpts)
    neck = pose.joint_names.index("neck")
    assert joints.shape == (3, 18, 3)
    np.testing.assert_allclose(joints[0, neck], [20, 30, 1])  # mean, smallest v
    np.testing.assert_allclose(joints[1, neck], [0, 0, 0])
    np.testing.assert_allclose(joints[2], 0)


def test_joints_round_trip_to_coco():
    pose = load_pose_config()
    rng = np.random.default_rng(0)
    kpts = np.concatenate(
        [rng.uniform(0, 100, (4, 17, 2)), rng.integers(0, 3, (4, 17, 1))], -1
    ).astype(np.float32)
    kpts[kpts[..., 2] == 0] = 0
    back = pose.joints_to_dataset(pose.joints_from_dataset(kpts))
    np.testing.assert_allclose(back, kpts)


def test_custom_five_joint_skeleton(five_joint_config):
    pose = load_pose_config(five_joint_config)
    assert (pose.num_joints, pose.num_limbs, pose.num_paf_channels) == (5, 4, 8)
    assert list(pose.flip_permutation) == [0, 1, 3, 2, 4]
    kpts = np.zeros((1, 17, 3), np.float32)
    for name, xy in [("left_hip", (0, 100)), ("right_hip", (20, 100)), ("nose", (10, 0))]:
        kpts[0, COCO17.index(name)] = [*xy, 2]
    joints = pose.joints_from_dataset(kpts)
    np.testing.assert_allclose(joints[0, 4], [10, 100, 2])  # pelvis
    np.testing.assert_allclose(joints[0, 0], [10, 0, 2])  # nose
    # only single-source joints map back to COCO keypoints
    back = pose.joints_to_dataset(joints)
    assert back[0, COCO17.index("nose"), 2] == 2
    assert back[0, COCO17.index("left_hip"), 2] == 0


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda r: r["limbs"].append(["neck", "tail"]), "limbs[4]"),
        (lambda r: r["joints"].append({"name": "x", "from": "tail"}), "joints[5].from"),
        (lambda r: r["joints"].append({"name": "neck", "from": "nose"}), "unique"),
        (lambda r: r["limbs"].append(["nose", "neck"]), "listed twice"),
        (lambda r: r["limbs"].append(["nose", "nose"]), "must differ"),
        (lambda r: r.update(colour=1), "colour"),
        (lambda r: r.pop("limbs"), "limbs"),
    ],
)
def test_bad_pose_configs(tmp_path, edit, needle):
    import yaml

    raw = yaml.safe_load(FIVE_JOINTS)
    edit(raw)
    with pytest.raises(SpecError) as err:
        parse_pose_config(raw, source="five.yaml")
    assert "five.yaml" in str(err.value)
    assert needle in str(err.value)


def test_missing_pose_config(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_pose_config(tmp_path / "none.yaml")


def test_pose_config_round_trips_through_its_dict(five_joint_config):
    for pose in (load_pose_config(), load_pose_config(five_joint_config)):
        assert parse_pose_config(pose.to_dict()) == pose
    with_sigmas = parse_pose_config({**load_pose_config().to_dict(), "oks_sigmas": [0.05] * 17})
    assert parse_pose_config(with_sigmas.to_dict()).oks_sigmas == (0.05,) * 17
