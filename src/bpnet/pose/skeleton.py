"""The pose config: one file that defines the skeleton for every stage of the pipeline.

Joints are the network's heatmap channels (plus one background channel); limbs are its PAF
channel pairs. A joint is taken from one dataset keypoint or the mean of several (the neck is
the mean of the shoulders), so a custom skeleton (hands, animals, a 5-joint body) is a new
YAML file and no code change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from bpnet.errors import SpecError
from bpnet.io import read_yaml

DEFAULT_POSE_CONFIG = Path(__file__).parent / "configs" / "bpnet_18joints.yaml"


@dataclass(frozen=True)
class Joint:
    """A network joint: its name and the dataset keypoints it is made from."""

    name: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class PoseConfig:
    """Skeleton definition shared by targets, model heads, decoder, augmentation and drawing.

    Attributes:
        name: a label for reports.
        dataset_keypoints: keypoint names of the dataset category (COCO 17 by default), in the
            order of the annotation file's ``keypoints`` arrays.
        joints: network joints in heatmap channel order.
        limbs: (a, b) joint indices; limb i owns PAF channels 2i (x) and 2i+1 (y), a -> b.
        flip_pairs: (left, right) joint indices that swap under a horizontal flip.
        oks_sigmas: per dataset keypoint, the OKS falloff COCO evaluation uses; None means
            COCO's own values (only valid for the 17 COCO keypoints).
    """

    name: str
    dataset_keypoints: tuple[str, ...]
    joints: tuple[Joint, ...]
    limbs: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    oks_sigmas: tuple[float, ...] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def num_heatmap_channels(self) -> int:
        """Joints plus one background channel."""
        return len(self.joints) + 1

    @property
    def num_limbs(self) -> int:
        return len(self.limbs)

    @property
    def num_paf_channels(self) -> int:
        return 2 * len(self.limbs)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @cached_property
    def flip_permutation(self) -> np.ndarray:
        """(J,) index array: ``joints[..., flip_permutation, :]`` swaps left and right."""
        perm = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @cached_property
    def _source_matrix(self) -> np.ndarray:
        """(J, K) 0/1 matrix: joint j is the mean of the dataset keypoints k it marks."""
        matrix = np.zeros((self.num_joints, len(self.dataset_keypoints)), np.float32)
        for j, sources in enumerate(self._source_indices):
            matrix[j, list(sources)] = 1.0
        return matrix

    @cached_property
    def dataset_to_joint(self) -> np.ndarray:
        """(K,) joint index that *is* dataset keypoint k (a single-source joint), or -1."""
        out = np.full(len(self.dataset_keypoints), -1, np.int64)
        for j, joint in enumerate(self.joints):
            if len(joint.sources) == 1:
                out[self.dataset_keypoints.index(joint.sources[0])] = j
        return out

    def to_dict(self) -> dict:
        """The skeleton in pose-config file form (:func:`parse_pose_config` reads it back)."""
        names = self.joint_names
        out = {
            "name": self.name,
            "dataset_keypoints": list(self.dataset_keypoints),
            "joints": [{"name": j.name, "from": list(j.sources)} for j in self.joints],
            "limbs": [[names[a], names[b]] for a, b in self.limbs],
            "flip_pairs": [[names[a], names[b]] for a, b in self.flip_pairs],
        }
        if self.oks_sigmas is not None:
            out["oks_sigmas"] = list(self.oks_sigmas)
        return out

    def joints_from_dataset(self, keypoints: np.ndarray) -> np.ndarray:
        """Map dataset keypoints to network joints.

        Args:
            keypoints: (P, K, 3) x, y, v in dataset keypoint order (v: 0 unlabelled,
                1 labelled but occluded, 2 visible).

        Returns:
            (P, J, 3) float32 in joint order. A multi-source joint is the mean of its sources,
            labelled only when all of them are, with the smallest of their v.
        """
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, len(self.dataset_keypoints), 3)
        mean = self._source_matrix / self._source_matrix.sum(1, keepdims=True)  # (J, K)
        xy = mean @ keypoints[..., :2]  # (P, J, 2)
        # a joint's v is the smallest v of its sources: 0 (unlabelled) as soon as one is missing
        v = np.stack(
            [keypoints[:, list(s), 2].min(1) for s in self._source_indices], axis=1
        )  # (P, J)
        xy[v == 0] = 0.0
        return np.concatenate([xy, v[..., None]], axis=-1)

    @cached_property
    def _source_indices(self) -> tuple[tuple[int, ...], ...]:
        index = {name: k for k, name in enumerate(self.dataset_keypoints)}
        return tuple(tuple(index[s] for s in joint.sources) for joint in self.joints)

    def joints_to_dataset(self, joints: np.ndarray) -> np.ndarray:
        """Map network joints back to dataset keypoints (e.g. COCO 17 for evaluation).

        Args:
            joints: (P, J, C) in joint order, C = 3: (x, y, v) or (x, y, score).

        Returns:
            (P, K, C) in dataset keypoint order; keypoints no single joint provides are zeros.
        """
        joints = np.asarray(joints)
        out = np.zeros(
            (joints.shape[0], len(self.dataset_keypoints), joints.shape[2]), joints.dtype
        )
        has = self.dataset_to_joint >= 0
        out[:, has] = joints[:, self.dataset_to_joint[has]]
        return out


def load_pose_config(path: str | Path | None = None) -> PoseConfig:
    """Read and check a pose-config YAML file (the default 18-joint skeleton when None).

    Raises:
        SpecError: naming the file and field when the skeleton is inconsistent.
    """
    path = Path(path) if path is not None else DEFAULT_POSE_CONFIG
    raw = read_yaml(path, "pose config")
    return parse_pose_config(raw, source=str(path))


def parse_pose_config(raw: object, source: str = "<pose config>") -> PoseConfig:
    """Build a :class:`PoseConfig` from the mapping read out of a pose-config file."""

    def fail(field: str, message: str) -> SpecError:
        return SpecError(f"{source}: {field}: {message}")

    if not isinstance(raw, dict):
        raise fail("<top>", "expected a mapping with keys name, dataset_keypoints, joints, limbs")
    known = {"name", "dataset_keypoints", "joints", "limbs", "flip_pairs", "oks_sigmas"}
    for key in raw:
        if key not in known:
            raise fail(key, f"unknown key; expected one of {sorted(known)}")
    for key in ("dataset_keypoints", "joints", "limbs"):
        if key not in raw:
            raise fail(key, "missing; every pose config needs it")

    dataset_keypoints = raw["dataset_keypoints"]
    if not (isinstance(dataset_keypoints, list) and dataset_keypoints):
        raise fail("dataset_keypoints", "expected a non-empty list of keypoint names")
    dataset_keypoints = tuple(str(k) for k in dataset_keypoints)
    if len(set(dataset_keypoints)) != len(dataset_keypoints):
        raise fail("dataset_keypoints", "names must be unique")

    joints = []
    for i, entry in enumerate(raw["joints"] or []):
        field = f"joints[{i}]"
        if not isinstance(entry, dict) or "name" not in entry or "from" not in entry:
            raise fail(field, "expected {name: ..., from: keypoint or [keypoints]}")
        sources = entry["from"] if isinstance(entry["from"], list) else [entry["from"]]
        for s in sources:
            if s not in dataset_keypoints:
                raise fail(f"{field}.from", f"{s!r} is not in dataset_keypoints")
        if not sources:
            raise fail(f"{field}.from", "needs at least one dataset keypoint")
        joints.append(Joint(str(entry["name"]), tuple(str(s) for s in sources)))
    if len(joints) < 2:
        raise fail("joints", "a skeleton needs at least two joints")
    names = [j.name for j in joints]
    if len(set(names)) != len(names):
        raise fail("joints", "joint names must be unique")
    index = {n: i for i, n in enumerate(names)}

    def pairs(key: str) -> tuple[tuple[int, int], ...]:
        out = []
        for i, pair in enumerate(raw.get(key) or []):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise fail(f"{key}[{i}]", "expected a pair [joint_a, joint_b]")
            for name in pair:
                if name not in index:
                    raise fail(f"{key}[{i}]", f"{name!r} is not a joint name")
            if pair[0] == pair[1]:
                raise fail(f"{key}[{i}]", "the two joints must differ")
            out.append((index[pair[0]], index[pair[1]]))
        return tuple(out)

    limbs = pairs("limbs")
    if not limbs:
        raise fail("limbs", "a skeleton needs at least one limb")
    if len({frozenset(limb) for limb in limbs}) != len(limbs):
        raise fail("limbs", "a limb is listed twice")
    flip_pairs = pairs("flip_pairs")
    flipped = [j for pair in flip_pairs for j in pair]
    if len(set(flipped)) != len(flipped):
        raise fail("flip_pairs", "a joint appears in more than one flip pair")
    return PoseConfig(
        name=str(raw.get("name", Path(source).stem)),
        dataset_keypoints=dataset_keypoints,
        joints=tuple(joints),
        limbs=limbs,
        flip_pairs=flip_pairs,
        oks_sigmas=_oks_sigmas(raw.get("oks_sigmas"), len(dataset_keypoints), fail),
    )


def _oks_sigmas(value: object, count: int, fail) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise fail("oks_sigmas", f"expected {count} positive numbers, one per dataset keypoint")
    return tuple(float(v) for v in value)
