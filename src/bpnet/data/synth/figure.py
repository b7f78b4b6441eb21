"""The articulated body model: proportions, joint-angle pose sampling and 3D posing.

A figure is a kinematic tree posed in 3D and seen by an orthographic camera, so front, back
and side views, foreshortened limbs and hidden face points all come from one set of joint
angles. Units are fractions of standing height (sole to crown = 1).

Frames: the body frame has x = the person's left, y = up, z = forward (the way the person
faces). The camera frame has X = image right, Y = up, Z = towards the camera; a person with
yaw 0 faces the camera, so their left side appears on the right of the image, as in COCO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from bpnet.data.coco import COCO_KEYPOINTS

KEYPOINT_NAMES = COCO_KEYPOINTS  # the order of the annotation arrays

COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
"""The official COCO person skeleton: 1-based keypoint index pairs."""

NUM_KEYPOINTS = len(KEYPOINT_NAMES)
FACE = slice(0, 5)  # nose, eyes, ears: the keypoints a turned head can hide
HEAD_ASPECT = 1.2  # head height over head width

T = TypeVar("T")

# Face points on the unit head sphere, in the head frame (x left, y up, z forward), with the
# smallest z-component of their surface normal (towards the camera) at which an annotator
# would still mark them: ears stick out and stay visible from behind, eyes need a real view.
_FACE_DIRS = np.array(
    [
        [0.0, -0.22, 0.97],  # nose
        [0.36, 0.12, 0.92],  # left eye
        [-0.36, 0.12, 0.92],  # right eye
        [0.97, 0.0, -0.05],  # left ear
        [-0.97, 0.0, -0.05],  # right ear
    ]
)
_FACE_DIRS /= np.linalg.norm(_FACE_DIRS, axis=1, keepdims=True)
_FACE_MIN_NZ = np.array([0.0, 0.2, 0.2, -0.4, -0.4])


def pick(
    rng: np.random.Generator, options: Sequence[T], weights: Sequence[float] | None = None
) -> T:
    """One of ``options``, with probabilities proportional to ``weights`` (uniform if None).

    Pure Python: ``Generator.choice`` costs ~20 us a call and a picture makes hundreds.
    """
    r = rng.random() * (len(options) if weights is None else sum(weights))
    if weights is None:
        return options[min(int(r), len(options) - 1)]
    acc = 0.0
    for option, weight in zip(options, weights, strict=True):
        acc += weight
        if r < acc:
            return option
    return options[-1]


def rot_x(deg: float) -> np.ndarray:
    """(3, 3) rotation about x; positive tips +y towards +z (a forward bend)."""
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    """(3, 3) rotation about y (vertical); positive turns +z towards +x."""
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(deg: float) -> np.ndarray:
    """(3, 3) rotation about z; positive turns +x towards +y."""
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Body:
    """Segment lengths and radii of one person, as fractions of standing height.

    Radii are already multiplied by the person's build, so the renderer uses them as they are.
    """

    hip_half: float  # pelvis centre to hip joint
    shoulder_half: float  # neck base to shoulder joint
    torso: float  # pelvis centre to neck base
    neck: float
    head_r: float  # head half-width; the head is HEAD_ASPECT times taller than wide
    upper_arm: float
    forearm: float
    hand: float
    thigh: float
    shin: float
    foot: float
    ankle_h: float  # ankle joint above the sole
    r_upper_arm: float
    r_forearm: float
    r_wrist: float
    r_hand: float
    r_thigh: float
    r_knee: float
    r_shin: float
    r_ankle: float
    r_foot: float
    r_neck: float
    chest_half_width: float
    chest_half_depth: float
    waist_half_width: float
    hip_half_width: float  # half-width of the pelvis silhouette (outside of the hips)


def sample_body(rng: np.random.Generator) -> Body:
    """Draw one person's proportions: adult or child, slim to heavy build."""
    child = rng.random() < 0.08
    head_r = rng.uniform(0.07, 0.082) if child else rng.uniform(0.055, 0.063)
    lengths = {
        "torso": rng.uniform(0.28, 0.31),
        "neck": rng.uniform(0.025, 0.04),
        "upper_arm": rng.uniform(0.165, 0.19),
        "forearm": rng.uniform(0.14, 0.16),
        "hand": rng.uniform(0.07, 0.085),
        "thigh": rng.uniform(0.235, 0.26),
        "shin": rng.uniform(0.23, 0.255),
        "foot": rng.uniform(0.11, 0.14),
        "ankle_h": rng.uniform(0.035, 0.045),
    }
    # the head's centre sits one half-height above the neck top, its crown one more above that
    standing = (
        lengths["ankle_h"]
        + lengths["shin"]
        + lengths["thigh"]
        + lengths["torso"]
        + lengths["neck"]
        + 2 * HEAD_ASPECT * head_r
    )
    k = 1.0 / standing
    lengths = {name: value * k for name, value in lengths.items()}
    build = rng.uniform(0.85, 1.3) if not child else rng.uniform(0.85, 1.05)
    female_hips = rng.uniform(0.0, 0.015)
    return Body(
        hip_half=rng.uniform(0.075, 0.09) + female_hips * 0.5,
        shoulder_half=rng.uniform(0.095, 0.11) * (0.92 if child else 1.0),
        head_r=head_r * k,
        r_upper_arm=0.029 * build,
        r_forearm=0.025 * build,
        r_wrist=0.018 * build,
        r_hand=0.019 * build,
        r_thigh=0.054 * build,
        r_knee=0.036 * build,
        r_shin=0.034 * build,
        r_ankle=0.021 * build,
        r_foot=0.021 * build,
        r_neck=0.031 * build,
        chest_half_width=0.11 * build**0.5,
        chest_half_depth=0.07 * build,
        waist_half_width=(0.095 + female_hips * -0.5) * build,
        hip_half_width=(0.125 + female_hips) * build**0.7,
        **lengths,
    )


@dataclass(frozen=True)
class Limb:
    """Joint angles of one arm or leg, in degrees.

    Arm: ``elevation`` from hanging (0) to overhead (180); ``azimuth`` 0 raises it sideways,
    90 forwards, negative backwards; ``bend`` is elbow flexion; ``twist`` turns the plane the
    forearm bends in (positive: towards the body's midline).
    Leg: ``elevation`` is hip flexion (positive: thigh forward); ``azimuth`` abduction
    (positive: outwards); ``bend`` knee flexion (the shin folds backwards); ``twist`` the
    ankle (positive: toes up).
    """

    elevation: float
    azimuth: float
    bend: float
    twist: float


@dataclass(frozen=True)
class Pose:
    """Joint angles of a whole figure, in degrees."""

    yaw: float  # 0 faces the camera, 90 faces image right (right side seen), 180 their back
    camera_pitch: float  # positive: camera above, looking down
    roll: float  # in-plane tilt of the whole figure
    lean_forward: float  # upper body about the pelvis
    lean_side: float
    torso_twist: float
    head_yaw: float
    head_pitch: float  # positive: looking down
    head_roll: float
    arms: tuple[Limb, Limb]  # left, right
    legs: tuple[Limb, Limb]  # left, right


ARCHETYPES: tuple[str, ...] = (
    "stand",
    "walk",
    "run",
    "arms_up",
    "wave",
    "hands_on_hips",
    "reach",
    "crouch",
    "sit",
    "kick",
    "dance",
)
_ARCHETYPE_P = (0.16, 0.16, 0.1, 0.07, 0.07, 0.05, 0.08, 0.07, 0.07, 0.07, 0.1)


def _hanging_arm(rng: np.random.Generator) -> Limb:
    return Limb(rng.uniform(3, 28), rng.uniform(-30, 70), rng.uniform(0, 40), rng.uniform(-20, 40))


def _straight_leg(rng: np.random.Generator) -> Limb:
    return Limb(rng.uniform(-5, 12), rng.uniform(-2, 10), rng.uniform(0, 12), rng.uniform(-10, 10))


def _sample_limbs(rng: np.random.Generator, kind: str) -> tuple[list[Limb], list[Limb], float]:
    """Arms, legs (left, right) and a forward lean for one pose archetype."""
    u = rng.uniform
    lean = rng.normal(0, 5)
    arms = [_hanging_arm(rng), _hanging_arm(rng)]
    legs = [_straight_leg(rng), _straight_leg(rng)]
    side = int(rng.integers(2))  # which arm/leg does the one-sided action
    if kind in ("walk", "run"):
        running = kind == "run"
        swing = u(30, 55) if running else u(12, 30)
        swing *= 1 if rng.random() < 0.5 else -1
        for i, sign in ((0, 1.0), (1, -1.0)):
            thigh = sign * swing
            knee = u(40, 110) if (running and thigh < 0) else u(5, 45) if thigh < 0 else u(0, 25)
            if running and thigh > 0:
                knee = u(20, 80)
            legs[i] = Limb(thigh, u(0, 8), knee, u(-20, 15))
            arm_swing = -thigh * u(0.6, 1.0)  # arms swing against the legs
            arms[i] = Limb(
                abs(arm_swing) + u(3, 10),
                (90 if arm_swing > 0 else -60) + u(-15, 15),
                u(70, 110) if running else u(5, 45),
                u(-10, 40),
            )
        lean = u(5, 20) if running else u(-2, 8)
    elif kind == "arms_up":
        for i in range(2) if rng.random() < 0.6 else (side,):
            arms[i] = Limb(u(100, 175), u(-20, 100), u(0, 70), u(-60, 60))
    elif kind == "wave":
        arms[side] = Limb(u(60, 115), u(-10, 45), u(60, 135), -u(50, 100))
    elif kind == "hands_on_hips":
        for i in range(2) if rng.random() < 0.7 else (side,):
            arms[i] = Limb(u(25, 45), u(-15, 20), u(85, 125), u(65, 100))
    elif kind == "reach":
        arms[side] = Limb(u(55, 125), u(20, 100), u(0, 25), u(-30, 30))
        if rng.random() < 0.4:
            arms[1 - side] = Limb(u(30, 100), u(40, 110), u(20, 110), u(-30, 60))
    elif kind == "crouch":
        for i in range(2):
            legs[i] = Limb(u(55, 110), u(5, 30), u(90, 145), u(0, 30))
            arms[i] = Limb(u(15, 80), u(40, 100), u(20, 100), u(-20, 50))
        lean = u(15, 45)
    elif kind == "sit":
        for i in range(2):
            legs[i] = Limb(u(70, 100), u(0, 20), u(65, 105), u(-10, 20))
            arms[i] = Limb(u(5, 45), u(30, 90), u(30, 100), u(0, 60))
        lean = u(-10, 15)
    elif kind == "kick":
        if rng.random() < 0.6:
            legs[side] = Limb(u(35, 100), u(-5, 25), u(0, 90), u(-20, 20))
        else:
            legs[side] = Limb(u(-10, 30), u(30, 60), u(0, 40), u(-20, 20))
        legs[1 - side] = Limb(u(-5, 10), u(0, 10), u(0, 25), u(-10, 10))
        for i in range(2):
            arms[i] = Limb(u(45, 110), u(-20, 60), u(0, 60), u(-40, 40))
        lean = u(-15, 20)
    elif kind == "dance":  # anything within the joint limits
        for i in range(2):
            arms[i] = Limb(u(0, 175), u(-40, 120), u(0, 150), u(-90, 90))
            legs[i] = Limb(u(-20, 90), u(-5, 45), u(0, 120), u(-20, 30))
        lean = u(-15, 35)
    return arms, legs, lean


def _clamp(value: float, lo: float, hi: float) -> float:
    return float(min(max(value, lo), hi))


def _clip_limbs(arms: list[Limb], legs: list[Limb]) -> tuple[tuple[Limb, Limb], tuple[Limb, Limb]]:
    """Keep joint angles inside human ranges."""
    out_arms = []
    for a in arms:
        az = _clamp(a.azimuth, -60, 135)
        # a shoulder extends backwards and across the chest much less far than it raises
        top = 70.0 if az < -15 else 130.0 if az > 110 else 178.0
        elevation = _clamp(a.elevation, 0, top)
        out_arms.append(Limb(elevation, az, _clamp(a.bend, 0, 150), _clamp(a.twist, -100, 100)))
    out_legs = []
    for g in legs:
        elevation, azimuth = _clamp(g.elevation, -30, 125), _clamp(g.azimuth, -10, 60)
        out_legs.append(Limb(elevation, azimuth, _clamp(g.bend, 0, 150), _clamp(g.twist, -35, 35)))
    return (out_arms[0], out_arms[1]), (out_legs[0], out_legs[1])


def sample_yaw(rng: np.random.Generator) -> float:
    """Facing direction: mostly front views, then side and back views."""
    r = rng.random()
    if r < 0.45:
        return float(rng.normal(0, 25))
    if r < 0.7:
        return pick(rng, (-90.0, 90.0)) + float(rng.normal(0, 20))
    if r < 0.85:
        return float(180 + rng.normal(0, 25))
    return float(rng.uniform(-180, 180))


def sample_pose(rng: np.random.Generator, kind: str | None = None) -> Pose:
    """Draw a pose: an archetype (walk, wave, crouch, ...) with random joint angles around it.

    Args:
        rng: the random source.
        kind: one of :data:`ARCHETYPES`; drawn at random when None.
    """
    if kind is None:
        kind = pick(rng, ARCHETYPES, _ARCHETYPE_P)
    arms, legs, lean = _sample_limbs(rng, kind)
    arms_t, legs_t = _clip_limbs(arms, legs)
    roll = rng.normal(0, 4) if rng.random() < 0.95 else rng.uniform(-35, 35)
    return Pose(
        yaw=sample_yaw(rng),
        camera_pitch=float(rng.uniform(-8, 22)),
        roll=float(roll),
        lean_forward=_clamp(lean, -20, 55),
        lean_side=_clamp(rng.normal(0, 5), -15, 15),
        torso_twist=_clamp(rng.normal(0, 12), -35, 35),
        head_yaw=_clamp(rng.normal(0, 25), -70, 70),
        head_pitch=_clamp(rng.normal(5, 12), -30, 40),
        head_roll=_clamp(rng.normal(0, 7), -20, 20),
        arms=arms_t,
        legs=legs_t,
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


@dataclass(frozen=True)
class PosedFigure:
    """A figure posed in the camera frame (unit height; X right, Y up, Z towards the camera).

    Attributes:
        keypoints: (17, 3) COCO keypoints.
        face_visible: (17,) False for face points the head hides (turned away); True elsewhere.
        points: named extra points (3,): neck_base, neck_top, head_centre, pelvis, hand tips,
            toes.
        head_axes: (3, 3) the head frame's x (left), y (up), z (forward) axes as rows.
        upper_axes, pelvis_axes: the same for the upper torso and the pelvis.
        body: the proportions the figure was built with.
    """

    keypoints: np.ndarray
    face_visible: np.ndarray
    points: dict[str, np.ndarray]
    head_axes: np.ndarray
    upper_axes: np.ndarray
    pelvis_axes: np.ndarray
    body: Body


def pose_figure(body: Body, pose: Pose) -> PosedFigure:
    """Run the kinematic tree: joint angles -> 3D joint positions in the camera frame."""
    # whole figure: turn to face `yaw`, tilt by the camera's pitch, then roll in the image plane
    world = rot_z(pose.roll) @ rot_x(pose.camera_pitch) @ rot_y(pose.yaw)
    pelvis_r = world
    upper_r = pelvis_r @ rot_x(pose.lean_forward) @ rot_z(pose.lean_side) @ rot_y(pose.torso_twist)
    head_r = upper_r @ rot_y(pose.head_yaw) @ rot_x(pose.head_pitch) @ rot_z(pose.head_roll)
    b = body
    pelvis = np.zeros(3)
    neck_base = upper_r @ np.array([0.0, b.torso, 0.0])
    neck_top = neck_base + upper_r @ np.array([0.0, b.neck, 0.01])
    head_centre = neck_top + head_r @ np.array([0.0, HEAD_ASPECT * b.head_r * 0.9, 0.01])

    kp = np.zeros((NUM_KEYPOINTS, 3))
    # face points on the head ellipsoid, a little inside its outline
    face = _FACE_DIRS * np.array([b.head_r, HEAD_ASPECT * b.head_r, b.head_r]) * 0.97
    kp[FACE] = head_centre + face @ head_r.T
    normals_z = (_FACE_DIRS @ head_r.T)[:, 2]
    face_visible = np.ones(NUM_KEYPOINTS, bool)
    face_visible[FACE] = normals_z > _FACE_MIN_NZ

    points = {
        "pelvis": pelvis,
        "neck_base": neck_base,
        "neck_top": neck_top,
        "head_centre": head_centre,
    }
    forward = np.array([0.0, 0.0, 1.0])
    for i, side in ((0, 1.0), (1, -1.0)):
        name = "left" if i == 0 else "right"
        # arm, in the upper-torso frame
        arm = pose.arms[i]
        el, az = np.radians(arm.elevation), np.radians(arm.azimuth)
        d = np.array([side * np.cos(az) * np.sin(el), -np.cos(el), np.sin(az) * np.sin(el)])
        p0 = forward - (forward @ d) * d
        if np.linalg.norm(p0) < 0.2:  # arm points straight forward: bend it upwards
            up = np.array([0.0, 1.0, 0.0])
            p0 = up - (up @ d) * d
        p0 = _unit(p0)
        medial = _unit(side * np.cross(d, p0))
        tw = np.radians(arm.twist)
        p = np.cos(tw) * p0 + np.sin(tw) * medial
        bend = np.radians(arm.bend)
        f = np.cos(bend) * d + np.sin(bend) * p
        shoulder = neck_base + upper_r @ np.array([side * b.shoulder_half, -0.025, -0.005])
        elbow = shoulder + b.upper_arm * (upper_r @ d)
        wrist = elbow + b.forearm * (upper_r @ f)
        hand_dir = _unit(f + 0.25 * p)  # a relaxed wrist curls a little
        points[f"{name}_hand"] = wrist + b.hand * (upper_r @ hand_dir)
        kp[5 + i], kp[7 + i], kp[9 + i] = shoulder, elbow, wrist

        # leg, in the pelvis frame
        leg = pose.legs[i]
        frame = rot_x(-leg.elevation) @ rot_z(side * leg.azimuth)
        d = frame @ np.array([0.0, -1.0, 0.0])
        p = frame @ forward  # knee bends the shin backwards, away from p
        k = np.radians(leg.bend)
        shin = np.cos(k) * d - np.sin(k) * p
        foot_dir = np.sin(k) * d + np.cos(k) * p  # forward, perpendicular to the shin
        toe = np.radians(leg.twist)
        foot_dir = _unit(
            np.cos(toe) * foot_dir - np.sin(toe) * shin + 0.15 * side * np.array([1, 0, 0])
        )
        hip = pelvis_r @ np.array([side * b.hip_half, -0.01, 0.0])
        knee = hip + b.thigh * (pelvis_r @ d)
        ankle = knee + b.shin * (pelvis_r @ shin)
        points[f"{name}_toe"] = (
            ankle + b.foot * (pelvis_r @ foot_dir) + b.ankle_h * 0.6 * (pelvis_r @ shin)
        )
        kp[11 + i], kp[13 + i], kp[15 + i] = hip, knee, ankle

    return PosedFigure(
        keypoints=kp,
        face_visible=face_visible,
        points=points,
        head_axes=head_r.T.copy(),
        upper_axes=upper_r.T.copy(),
        pelvis_axes=pelvis_r.T.copy(),
        body=body,
    )
