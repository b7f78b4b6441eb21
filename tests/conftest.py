import os
from pathlib import Path

import pytest
import torch

# pytest runs with -n 2 on 2 cores: more than one thread per worker oversubscribes the CPU and
# makes small convolutions up to 100x slower
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# The real COCO fixture (100 images, official layout) is vendored in tests/data so that the
# tests run on a fresh clone; BPNET_COCO_FIXTURE points them at another copy.
FIXTURE = Path(os.environ.get("BPNET_COCO_FIXTURE", REPO / "tests" / "data" / "coco_fixture"))


@pytest.fixture(scope="session")
def coco_fixture() -> Path:
    """The real COCO fixture (100 images): tests/data/coco_fixture, see its README."""
    assert (FIXTURE / "annotations").is_dir(), (
        f"COCO fixture missing at {FIXTURE}; set BPNET_COCO_FIXTURE to its folder"
    )
    return FIXTURE


COCO17 = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip

# A custom skeleton: two joints made from several keypoints, four limbs, one flip pair.
FIVE_JOINTS = f"""
name: five
dataset_keypoints: {COCO17}
joints:
  - {{name: nose, from: nose}}
  - {{name: neck, from: [left_shoulder, right_shoulder]}}
  - {{name: left_wrist, from: left_wrist}}
  - {{name: right_wrist, from: right_wrist}}
  - {{name: pelvis, from: [left_hip, right_hip]}}
limbs: [[neck, nose], [neck, left_wrist], [neck, right_wrist], [neck, pelvis]]
flip_pairs: [[left_wrist, right_wrist]]
"""


@pytest.fixture
def five_joint_config(tmp_path) -> Path:
    """A 5-joint pose-config file: the custom skeleton that must work with no code change."""
    path = tmp_path / "five.yaml"
    path.write_text(FIVE_JOINTS)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small real BodyPoseNet (default skeleton) saved the way `bpnet train` saves one."""
    from bpnet.config import load_experiment_spec
    from bpnet.models import build_model
    from bpnet.models.checkpoint import save_checkpoint
    from bpnet.pose import load_pose_config

    spec = load_experiment_spec(
        None, ["model.backbone_attributes.width_multiplier=0.1", "model.num_filters=16"]
    )
    pose = load_pose_config()
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(
        folder / "model.pth", build_model(spec.model, pose), spec=spec, pose=pose
    )


@pytest.fixture(scope="module")
def tiny_coco(coco_fixture, tmp_path_factory) -> Path:
    """4 training images and 3 validation images of the real COCO fixture."""
    from coco_subset import TRAIN_IDS, VAL_IDS, subset

    root = tmp_path_factory.mktemp("tiny_coco")
    subset(coco_fixture, "train2017", TRAIN_IDS, root, "train")
    subset(coco_fixture, "val2017", VAL_IDS, root, "val")
    return root
