"""Drawing: shaded bodies, clothing textures, backgrounds, clutter and limb-like distractors.

Bodies and distractors go through the same rasteriser, so a stick in the background is shaded,
coloured and textured exactly like an arm: a network trained on these images has to learn the
structure of a person, not the look of a limb. The rasteriser draws convex parts back to front
into a small canvas as two label maps (which part, which material) and then shades every part
like a tube: the distance to the part's outline stands in for the depth of its surface.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import cv2
import numpy as np

from bpnet.data.synth.figure import HEAD_ASPECT, PosedFigure, pick

_SHIFT = 3  # sub-pixel bits for cv2 polygon filling
_ONE = 1 << _SHIFT
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))

# RGB, light to dark; a person's skin is a random mix of two neighbours
_SKIN_RGB = np.array(
    [
        [255, 224, 200],
        [241, 198, 170],
        [226, 176, 140],
        [200, 140, 105],
        [165, 108, 75],
        [125, 80, 55],
        [92, 58, 40],
        [62, 42, 32],
    ],
    np.float32,
)
_HAIR_RGB = np.array(
    [
        [24, 20, 18],
        [45, 32, 24],
        [80, 55, 35],
        [120, 85, 50],
        [195, 160, 105],
        [150, 70, 35],
        [150, 148, 145],
        [215, 212, 205],
    ],
    np.float32,
)
_HAIR_P = (0.3, 0.22, 0.16, 0.1, 0.08, 0.05, 0.05, 0.04)


@dataclass(frozen=True)
class Material:
    """A surface colour: solid, stripes, checks or smooth noise between two BGR colours."""

    kind: str
    c1: np.ndarray  # (3,) BGR, 0..255
    c2: np.ndarray  # (3,)
    period: float = 8.0  # pixels, stripes and checks
    angle: float = 0.0  # radians, stripes and checks
    duty: float = 0.5  # fraction of a stripe period in c1

    def paint(self, ys: np.ndarray, xs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Colours at canvas pixels ``(ys, xs)``: (N, 3) float32.

        Args:
            ys, xs: (N,) pixel coordinates in the canvas.
            noise: (H, W) float32 smooth noise in [0, 1] over the canvas, for noise textures.
        """
        if self.kind == "solid":
            return np.broadcast_to(self.c1, (len(ys), 3))
        if self.kind == "noise":
            t = noise[ys, xs][:, None]
            return self.c1 * (1 - t) + self.c2 * t
        c, s = np.cos(self.angle), np.sin(self.angle)
        u = (xs * c + ys * s) / self.period
        if self.kind == "stripes":
            first = (u % 1.0) < self.duty
        else:  # checks
            v = (-xs * s + ys * c) / self.period
            first = (np.floor(u) + np.floor(v)) % 2 == 0
        return np.where(first[:, None], self.c1, self.c2)


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.array([b, g, r], np.float32)


def _clip255(a: np.ndarray) -> np.ndarray:
    # np.clip costs several microseconds per call on tiny arrays; this is called thousands of times
    return np.minimum(np.maximum(a, 0.0), 255.0).astype(np.float32)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A clothing or object colour (BGR, 0..255): greys, dark, pastel and saturated hues."""
    r = rng.random()
    if r < 0.25:  # greys, black and white
        v = rng.uniform(0.08, 0.95)
        return _clip255(np.full(3, v * 255) + rng.normal(0, 6, 3))
    if r < 0.35:  # denim, khaki, olive: everyday trousers and jackets
        rgb = [(0.25, 0.35, 0.55), (0.75, 0.68, 0.5), (0.4, 0.42, 0.25), (0.35, 0.25, 0.2)][
            int(rng.integers(4))
        ]
        rgb = np.array(rgb[::-1]) * rng.uniform(0.7, 1.2) + rng.normal(0, 0.03, 3)
        return _clip255(rgb * 255)
    h = rng.random()
    s = rng.uniform(0.3, 0.95)
    v = rng.uniform(0.25, 0.98)
    return _rgb(*(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255))


def skin_colour(rng: np.random.Generator) -> np.ndarray:
    """A skin tone (BGR, 0..255) from very light to very dark."""
    i = int(rng.integers(len(_SKIN_RGB) - 1))
    t = rng.random()
    rgb = _SKIN_RGB[i] * (1 - t) + _SKIN_RGB[i + 1] * t
    return _clip255(rgb[::-1] * rng.uniform(0.94, 1.06))


def random_material(rng: np.random.Generator, scale: float) -> Material:
    """A clothing/object material; ``scale`` (pixels per unit height) sets the pattern size."""
    c1 = random_colour(rng)
    c2 = random_colour(rng)
    if rng.random() < 0.5:  # a second shade of the same colour reads as a print, not a costume
        c2 = _clip255(c1 * rng.uniform(0.4, 0.8) + rng.uniform(0, 40))
    kind = pick(rng, ("solid", "stripes", "checks", "noise"), (0.5, 0.22, 0.1, 0.18))
    period = max(2.5, scale * rng.uniform(0.02, 0.07))
    angle = rng.normal(np.pi / 2, 0.15) if rng.random() < 0.7 else rng.uniform(0, np.pi)
    return Material(kind, c1, c2, period, float(angle), float(rng.uniform(0.3, 0.7)))


@dataclass(frozen=True)
class Appearance:
    """How one person looks: skin, hair, clothes and their cut."""

    skin: Material
    hair: Material
    top: Material
    bottom: Material
    shoes: Material
    eyes: Material
    sleeves: str  # none | short | long
    legwear: str  # pants | shorts | skirt
    hair_style: str  # short | long | bald | cap
    tuck: float  # how far the top reaches below the waist, fraction of height
    sleeve_len: float  # short sleeves: fraction of the upper arm
    shorts_len: float  # shorts and skirts: fraction of the thigh


def sample_appearance(rng: np.random.Generator, scale: float) -> Appearance:
    """Draw skin tone, hair and clothing for a person ``scale`` pixels tall."""
    skin = Material("solid", skin_colour(rng), skin_colour(rng))
    hair_rgb = pick(rng, _HAIR_RGB, _HAIR_P) * rng.uniform(0.85, 1.15)
    hair = Material("solid", _clip255(hair_rgb[::-1]), _rgb(0, 0, 0))
    hair_style = pick(rng, ("short", "long", "bald", "cap"), (0.5, 0.3, 0.07, 0.13))
    if hair_style == "cap":
        hair = random_material(rng, scale)
    top = random_material(rng, scale)
    legwear = pick(rng, ("pants", "shorts", "skirt"), (0.65, 0.17, 0.18))
    bottom = random_material(rng, scale)
    if legwear == "skirt" and rng.random() < 0.4:  # a dress
        bottom = top
    shoe_rgb = [(25, 25, 25), (240, 240, 240), (90, 60, 40)][int(rng.integers(3))]
    shoes = Material(
        "solid", random_colour(rng) if rng.random() < 0.3 else _rgb(*shoe_rgb), skin.c1
    )
    eyes = Material("solid", _rgb(30, 25, 25), skin.c1)
    return Appearance(
        skin=skin,
        hair=hair,
        top=top,
        bottom=bottom,
        shoes=shoes,
        eyes=eyes,
        sleeves=pick(rng, ("none", "short", "long"), (0.15, 0.4, 0.45)),
        legwear=legwear,
        hair_style=hair_style,
        tuck=float(rng.uniform(-0.02, 0.06)),
        sleeve_len=float(rng.uniform(0.35, 0.7)),
        shorts_len=float(rng.uniform(0.35, 0.8)),
    )


@dataclass
class Part:
    """A convex piece of a sprite, drawn back to front by ``depth``.

    ``overlays`` are (polygon, material) drawn right after the part with the same shape id:
    sleeves, shorts and the like change the colour without adding an outline.
    """

    poly: np.ndarray  # (N, 2) float pixel coordinates in the image
    shape: int  # parts with the same shape id shade as one surface
    material: int
    depth: float
    radius: float  # pixels: the half-thickness the tube shading assumes
    overlays: list[tuple[np.ndarray, int]] = field(default_factory=list)


@dataclass(frozen=True)
class HeadInfo:
    """What the per-pixel head painter needs: the head ellipse and which way the face points."""

    shape: int
    centre: np.ndarray  # (2,) pixels
    e1: np.ndarray  # (2,) unit image direction of the head's width axis
    e2: np.ndarray  # (2,) unit image direction of the crown
    r1: float  # pixels
    r2: float
    axes: np.ndarray  # (3, 3) head frame axes (rows) in the camera frame
    style: str
    eyes: tuple[np.ndarray, ...]  # (2,) pixel centres of the eyes that can be seen
    eye_r: float
    hair_material: int = 2
    eye_material: int = 6


@dataclass(frozen=True)
class Light:
    """A directional light; ``direction`` is in image axes (x right, y down, z to the viewer)."""

    direction: np.ndarray  # (3,) unit
    ambient: float


def sample_light(rng: np.random.Generator) -> Light:
    d = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.9, 0.2), rng.uniform(0.5, 1.0)])
    return Light(d / np.linalg.norm(d), float(rng.uniform(0.35, 0.55)))


@dataclass
class Sprite:
    """A rendered object: colours and coverage on a canvas whose top-left is (x0, y0)."""

    x0: int
    y0: int
    image: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) bool


# --- geometry --------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _arc(n: int) -> np.ndarray:
    """(n, 2) cos, sin of n angles over a half turn, -90 to 90 degrees."""
    t = np.linspace(-np.pi / 2, np.pi / 2, n)
    return np.stack([np.cos(t), np.sin(t)], 1)


def capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """(N, 2) outline of a tapered capsule: two half-discs joined along the segment."""
    dx, dy = float(p1[0] - p0[0]), float(p1[1] - p0[1])
    length = math.hypot(dx, dy)
    ux, uy = (dx / length, dy / length) if length > 1e-6 else (1.0, 0.0)
    # rows: the axis direction and its normal; arc @ frame sweeps the half-disc around p1
    half = _arc(max(5, min(11, int(2 + max(r0, r1))))) @ np.array([[ux, uy], [-uy, ux]])
    return np.concatenate([p1 + r1 * half, p0 - r0 * half])


def ellipse(centre: np.ndarray, e1: np.ndarray, r1: float, r2: float, n: int = 24) -> np.ndarray:
    """(n, 2) outline of an ellipse with semi-axis r1 along unit e1 and r2 across it."""
    e2 = np.array([-e1[1], e1[0]])
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return centre + np.cos(t)[:, None] * (r1 * e1) + np.sin(t)[:, None] * (r2 * e2)


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


# --- figure -> parts -------------------------------------------------------------------------

# material ids inside a figure sprite: indices into the list figure_materials returns
SKIN, HAIR, TOP, BOTTOM, SHOES, EYES = 1, 2, 3, 4, 5, 6


def _section(axes: np.ndarray, y: float, half_w: float, half_d: float, n: int = 10) -> np.ndarray:
    """(n, 3) ring of a horizontal body cross-section at height y of a frame."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    local = np.stack([half_w * np.cos(t), np.full(n, y), half_d * np.sin(t)], 1)
    return local @ axes  # rows of `axes` are the frame's axes in the camera frame


def figure_parts(
    fig: PosedFigure, look: Appearance, scale: float, origin: np.ndarray
) -> tuple[list[Part], HeadInfo, np.ndarray]:
    """Turn a posed figure into drawable parts.

    Args:
        fig: the figure in the camera frame (unit height).
        look: clothing and colours.
        scale: pixels per unit height.
        origin: (2,) image position of the camera-frame origin (the pelvis).

    Returns:
        parts, the head description, and (17, 2) keypoints in image pixels.
    """
    b = fig.body

    def px(v: np.ndarray) -> np.ndarray:  # (..., 3) camera frame -> (..., 2) pixels
        return origin + scale * np.stack([v[..., 0], -v[..., 1]], -1)

    kp = fig.keypoints
    kp2 = px(kp)
    parts: list[Part] = []
    shape_id = iter(range(1, 255))

    # torso: the pelvis and the upper body are one surface (no outline at the belt)
    torso_id = next(shape_id)
    pelvis3 = np.concatenate(
        [
            _section(fig.pelvis_axes, -0.03, b.hip_half_width, 0.08),
            _section(fig.pelvis_axes, 0.07, (b.hip_half_width + b.waist_half_width) / 2, 0.07),
        ]
    )
    top_low = 0.07 - look.tuck
    upper3 = np.concatenate(
        [
            _section(fig.upper_axes, top_low, b.waist_half_width + 0.005, 0.068),
            _section(fig.upper_axes, 0.55 * b.torso, b.chest_half_width, b.chest_half_depth),
            _section(fig.upper_axes, b.torso - 0.012, b.shoulder_half + 0.005, 0.05),
            fig.points["neck_base"] + _section(fig.upper_axes, 0.0, 0.045, 0.035, 6),
        ]
    )
    radius_torso = 0.09 * scale
    parts.append(
        Part(_hull(px(pelvis3)), torso_id, BOTTOM, pelvis3[:, 2].mean() - 0.001, radius_torso)
    )
    top_depth = upper3[:, 2].mean()
    parts.append(Part(_hull(px(upper3)), torso_id, TOP, top_depth, radius_torso))

    # neck and head: the head always covers its neck
    head_c3 = fig.points["head_centre"]
    head_depth = max(head_c3[2], top_depth + 0.002)
    neck3 = np.stack([fig.points["neck_base"], fig.points["neck_top"]])
    parts.append(
        Part(
            capsule(*px(neck3), b.r_neck * scale, b.r_neck * scale * 0.95),
            next(shape_id),
            SKIN,
            head_depth - 0.001,
            b.r_neck * scale,
        )
    )
    up = fig.head_axes[1]
    up2 = np.array([up[0], -up[1]])
    tilt = float(np.hypot(*up2))
    e2 = up2 / tilt if tilt > 1e-6 else np.array([0.0, -1.0])
    e1 = np.array([-e2[1], e2[0]])
    r1 = b.head_r * scale
    # an ellipsoid seen from above or below looks rounder
    r2 = r1 * float(np.sqrt(1 + (HEAD_ASPECT**2 - 1) * min(tilt, 1.0) ** 2))
    head_c2 = px(head_c3)
    head_id = next(shape_id)
    parts.append(Part(ellipse(head_c2, e1, r1, r2), head_id, SKIN, head_depth, 0.95 * r1))
    eyes = tuple(kp2[i] for i in (1, 2) if fig.face_visible[i])
    head = HeadInfo(
        head_id,
        head_c2,
        e1,
        e2,
        r1,
        r2,
        fig.head_axes,
        look.hair_style,
        eyes,
        max(0.55, 0.14 * r1),
        HAIR,
        EYES,
    )

    # arms
    for i in (0, 1):
        sh, el, wr = kp[5 + i], kp[7 + i], kp[9 + i]
        hand = fig.points["left_hand" if i == 0 else "right_hand"]
        sh2, el2, wr2, hand2 = px(np.stack([sh, el, wr, hand]))
        upper_m = SKIN if look.sleeves == "none" else TOP
        fore_m = TOP if look.sleeves == "long" else SKIN
        if look.sleeves == "short":
            upper_m = SKIN
        r_ua, r_fa = b.r_upper_arm * scale, b.r_forearm * scale
        upper = Part(
            capsule(sh2, el2, r_ua, r_ua * 0.85),
            next(shape_id),
            upper_m,
            (sh[2] + el[2]) / 2 + 0.02,
            r_ua,
        )
        if look.sleeves == "short":
            end = sh2 + look.sleeve_len * (el2 - sh2)
            upper.overlays.append((capsule(sh2, end, r_ua * 1.1, r_ua * 1.12), TOP))
        parts.append(upper)
        parts.append(
            Part(
                capsule(el2, wr2, r_fa, b.r_wrist * scale),
                next(shape_id),
                fore_m,
                (el[2] + wr[2]) / 2 + 0.021,
                r_fa,
            )
        )
        parts.append(
            Part(
                capsule(wr2, hand2, b.r_hand * scale, b.r_hand * scale * 0.8),
                next(shape_id),
                SKIN,
                (wr[2] + hand[2]) / 2 + 0.022,
                b.r_hand * scale,
            )
        )

    # legs
    thigh_depths = []
    for i in (0, 1):
        hip, knee, ankle = kp[11 + i], kp[13 + i], kp[15 + i]
        toe = fig.points["left_toe" if i == 0 else "right_toe"]
        hip2, knee2, ankle2, toe2 = px(np.stack([hip, knee, ankle, toe]))
        r_th = b.r_thigh * scale
        covered = look.legwear == "pants"
        thigh = Part(
            capsule(hip2, knee2, r_th, b.r_knee * scale),
            next(shape_id),
            BOTTOM if covered else SKIN,
            (hip[2] + knee[2]) / 2 - 0.02,
            r_th * 0.8,
        )
        thigh_depths.append(thigh.depth)
        if look.legwear == "shorts":
            end = hip2 + look.shorts_len * (knee2 - hip2)
            r_end = (r_th + look.shorts_len * (b.r_knee * scale - r_th)) * 1.1
            thigh.overlays.append((capsule(hip2, end, r_th * 1.08, r_end), BOTTOM))
        parts.append(thigh)
        parts.append(
            Part(
                capsule(knee2, ankle2, b.r_shin * scale, b.r_ankle * scale),
                next(shape_id),
                BOTTOM if covered else SKIN,
                (knee[2] + ankle[2]) / 2 - 0.019,
                b.r_shin * scale,
            )
        )
        parts.append(
            Part(
                capsule(ankle2, toe2, b.r_foot * scale * 1.1, b.r_foot * scale * 0.85),
                next(shape_id),
                SHOES,
                (ankle[2] + toe[2]) / 2 - 0.018,
                b.r_foot * scale,
            )
        )

    if look.legwear == "skirt":
        # a bell from the hips to the hem; it hangs over both thighs, whichever is nearer
        hem = np.stack(
            [px(kp[11 + i] + look.shorts_len * (kp[13 + i] - kp[11 + i])) for i in (0, 1)]
        )
        r_hem = b.r_thigh * scale * 1.2
        ring = ellipse(np.zeros(2), np.array([1.0, 0.0]), r_hem, r_hem, 10)
        pts = np.concatenate([_hull(px(pelvis3)), hem[0] + ring, hem[1] + ring])
        parts.append(Part(_hull(pts), torso_id, BOTTOM, max(thigh_depths) + 0.001, radius_torso))

    parts.sort(key=lambda p: p.depth)
    return parts, head, kp2


# --- rasterising -----------------------------------------------------------------------------


def _fill(canvas: np.ndarray, poly: np.ndarray, value: int) -> None:
    pts = np.round(poly * _ONE).astype(np.int32)
    cv2.fillConvexPoly(canvas, pts, int(value), cv2.LINE_8, _SHIFT)


def _paint_head(head: HeadInfo, shape: np.ndarray, material: np.ndarray, x0: int, y0: int) -> None:
    """Hair, cap and eyes on the head's pixels, from where each pixel lies on the skull."""
    ys, xs = np.nonzero(shape == head.shape)
    if len(ys) == 0 or (head.style == "bald" and not head.eyes):
        return
    dx = xs + x0 - head.centre[0]
    dy = ys + y0 - head.centre[1]
    a1 = (dx * head.e1[0] + dy * head.e1[1]) / head.r1
    a2 = (dx * head.e2[0] + dy * head.e2[1]) / head.r2
    nz = np.sqrt(np.clip(1 - a1 * a1 - a2 * a2, 0, 1))
    # surface normal in the camera frame (Y up), then in the head frame
    e1c = np.array([head.e1[0], -head.e1[1], 0.0])
    e2c = np.array([head.e2[0], -head.e2[1], 0.0])
    normal = a1[:, None] * e1c + a2[:, None] * e2c + nz[:, None] * np.array([0.0, 0.0, 1.0])
    local = normal @ head.axes.T  # (N, 3): x left, y up, z forward
    if head.style == "short":
        hair = (local[:, 1] > 0.45 - 0.25 * local[:, 2].clip(-1, 0)) | (
            (local[:, 2] < -0.25) & (local[:, 1] > -0.45)
        )
    elif head.style == "long":
        hair = (local[:, 1] > 0.45) | (local[:, 2] < 0.05) | (np.abs(local[:, 0]) > 0.8)
    elif head.style == "cap":
        hair = local[:, 1] > 0.35
    else:
        hair = np.zeros(len(ys), bool)
    material[ys[hair], xs[hair]] = head.hair_material
    for eye in head.eyes:
        near = (xs + x0 - eye[0]) ** 2 + (ys + y0 - eye[1]) ** 2 <= head.eye_r**2
        material[ys[near], xs[near]] = head.eye_material


def rasterize(
    parts: list[Part],
    materials: list[Material | None],
    light: Light,
    rng: np.random.Generator,
    heads: Sequence[HeadInfo] = (),
) -> Sprite:
    """Draw parts (already in back-to-front order) into a shaded, textured sprite.

    Args:
        parts: the convex pieces, back to front.
        materials: index = a part's material id (index 0 is unused).
        light: the scene's light.
        rng: random source for noise textures.
        heads: when drawing figures, paints hair and eyes on their head parts.
    """
    polys = [p.poly for p in parts] + [o[0] for p in parts for o in p.overlays]
    allpts = np.concatenate(polys)
    x0 = int(np.floor(allpts[:, 0].min())) - 2
    y0 = int(np.floor(allpts[:, 1].min())) - 2
    w = int(np.ceil(allpts[:, 0].max())) - x0 + 3
    h = int(np.ceil(allpts[:, 1].max())) - y0 + 3
    offset = np.array([x0, y0], np.float64)
    shape = np.zeros((h, w), np.uint8)
    material = np.zeros((h, w), np.uint8)
    radius = np.ones(256, np.float32)
    for part in parts:
        _fill(shape, part.poly - offset, part.shape)
        _fill(material, part.poly - offset, part.material)
        radius[part.shape] = max(part.radius, 0.75)
        for poly, mat in part.overlays:
            _fill(shape, poly - offset, part.shape)
            _fill(material, poly - offset, mat)
    for head in heads:
        _paint_head(head, shape, material, x0, y0)

    mask = shape > 0
    shade, highlight = _tube_shading(shape, mask, radius, light, max(p.radius for p in parts))

    # solid colours through a lookup table, patterns pixel by pixel
    lut = np.zeros((1, 256, 3), np.float32)
    for m, mat in enumerate(materials):
        if mat is not None:
            lut[0, m] = mat.c1
    colour = cv2.LUT(cv2.merge([material, material, material]), lut)
    noise = None
    for m, mat in enumerate(materials):
        if mat is None or mat.kind == "solid":
            continue
        ys, xs = np.nonzero(material == m)
        if len(ys) == 0:
            continue
        if mat.kind == "noise" and noise is None:
            grid = rng.random((max(2, h // 10), max(2, w // 10))).astype(np.float32)
            noise = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        colour[ys, xs] = mat.paint(ys, xs, noise)
    # cv2 arithmetic on 3-channel copies: numpy's (h, w, 1) broadcasting is several times slower
    image = cv2.multiply(colour, cv2.merge([shade, shade, shade]))
    image = cv2.add(image, cv2.merge([highlight, highlight, highlight]))
    return Sprite(x0, y0, cv2.convertScaleAbs(image), mask)  # values are >= 0: abs is a no-op


def _tube_shading(
    shape: np.ndarray, mask: np.ndarray, radius: np.ndarray, light: Light, max_radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Brightness (h, w) and specular highlight (h, w) of parts shaded as tubes.

    The distance to a part's outline, against the part's radius, gives how far the surface
    normal tilts away from the viewer; the distance's gradient gives the direction it tilts.
    """
    # a pixel is on an outline when its 4-neighbourhood holds another part or the background
    inside = (cv2.dilate(shape, _CROSS) == cv2.erode(shape, _CROSS)) & mask
    dist = cv2.distanceTransform(inside.view(np.uint8), cv2.DIST_L2, 3)
    dist += 0.5
    ratio = cv2.divide(dist, cv2.LUT(shape, radius.reshape(1, 256)))
    np.minimum(ratio, 1.0, out=ratio)
    offaxis = 1.0 - ratio  # 0 on the axis, 1 at the outline
    gx = cv2.Sobel(dist, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(dist, cv2.CV_32F, 0, 1, ksize=3)
    lx, ly, lz = (float(v) for v in light.direction)
    # the outward normal points down the gradient: in-plane light term = -(g . l) / |g|
    inplane = cv2.addWeighted(gx, -lx, gy, -ly, 0.0)
    # not cv2.magnitude: its result depends on the arrays' memory alignment, and the same
    # seed must give the same bytes
    inplane /= np.sqrt(gx * gx + gy * gy) + 1e-6
    inplane *= offaxis
    nz = 1.0 - offaxis * offaxis
    cv2.sqrt(nz, nz)
    diffuse = cv2.scaleAdd(nz, lz, inplane)
    np.maximum(diffuse, 0.0, out=diffuse)
    shade = cv2.addWeighted(diffuse, 1.0 - light.ambient, diffuse, 0.0, light.ambient)
    # soften the creases a polygon's medial axis leaves in the shading
    shade = cv2.GaussianBlur(shade, (0, 0), max(0.6, max_radius / 12))
    d4 = cv2.multiply(diffuse, diffuse)
    d4 = cv2.multiply(d4, d4)
    highlight = cv2.multiply(cv2.multiply(d4, d4), d4, scale=60.0)  # 60 * diffuse ** 12
    return shade, highlight


def figure_materials(look: Appearance) -> list[Material | None]:
    """Materials in the order of the ids SKIN .. EYES."""
    return [None, look.skin, look.hair, look.top, look.bottom, look.shoes, look.eyes]


def merge_figures(
    figures: Sequence[tuple[list[Part], HeadInfo, Appearance]],
) -> tuple[list[Part], list[Material | None], list[HeadInfo]]:
    """Put several figures (back to front) into one rasteriser call: a crowd is many small
    figures, and one canvas for all of them is much cheaper than a canvas each."""
    parts: list[Part] = []
    materials: list[Material | None] = [None]
    heads = []
    shape_base = 0
    for figure_parts_, head, look in figures:
        mat_base = len(materials) - 1
        used = max(p.shape for p in figure_parts_)
        if shape_base + used > 255:  # uint8 label maps: reuse ids, losing a few outlines
            shape_base = 0
        for p in figure_parts_:
            overlays = [(poly, m + mat_base) for poly, m in p.overlays]
            parts.append(
                Part(
                    p.poly, p.shape + shape_base, p.material + mat_base, p.depth, p.radius, overlays
                )
            )
        heads.append(
            replace(
                head,
                shape=head.shape + shape_base,
                hair_material=head.hair_material + mat_base,
                eye_material=head.eye_material + mat_base,
            )
        )
        materials.extend(figure_materials(look)[1:])
        shape_base += used
    return parts, materials, heads


def paste(image: np.ndarray, owner: np.ndarray, sprite: Sprite, owner_id: int) -> None:
    """Draw ``sprite`` over ``image`` and mark its pixels as ``owner_id``, clipped to the image."""
    h, w = image.shape[:2]
    sh, sw = sprite.mask.shape
    x0, y0 = max(sprite.x0, 0), max(sprite.y0, 0)
    x1, y1 = min(sprite.x0 + sw, w), min(sprite.y0 + sh, h)
    if x0 >= x1 or y0 >= y1:
        return
    sub = (slice(y0 - sprite.y0, y1 - sprite.y0), slice(x0 - sprite.x0, x1 - sprite.x0))
    m = sprite.mask[sub]
    np.copyto(image[y0:y1, x0:x1], sprite.image[sub], where=m[..., None])
    np.copyto(owner[y0:y1, x0:x1], owner_id, where=m)


# --- backgrounds and clutter -----------------------------------------------------------------


_GRAIN_SIZE = 640


@lru_cache(maxsize=1)
def _grain_tile() -> np.ndarray:
    """A fixed tile of Gaussian noise; pictures crop it at random offsets (cheap, deterministic)."""
    rng = np.random.default_rng(20240601)
    return rng.standard_normal((_GRAIN_SIZE, _GRAIN_SIZE, 3), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w) float32 smooth noise in about [-1, 1] with ``cells`` bumps along the long side."""
    gh = max(2, round(cells * h / max(h, w)))
    gw = max(2, round(cells * w / max(h, w)))
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _vertical_gradient(h: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """(h, 1, 3) colours blending from ``top`` to ``bottom``; broadcasts across the width."""
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return top * (1 - t) + bottom * t


def render_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 scene: outdoor, indoor or textured base, noise and random shapes."""
    kind = pick(rng, ("outdoor", "indoor", "texture", "flat"), (0.35, 0.35, 0.15, 0.15))
    c1, c2, c3 = random_colour(rng), random_colour(rng), random_colour(rng)
    if kind == "outdoor":
        horizon = int(rng.uniform(0.15, 0.7) * h)
        sky = _clip255(np.array([225, 170, 120]) * rng.uniform(0.6, 1.2) + rng.normal(0, 20, 3))
        base = np.concatenate(
            [
                _vertical_gradient(horizon, sky * 0.85, sky * 1.1),
                _vertical_gradient(h - horizon, c1, c1 * 0.6),
            ]
        )
    elif kind == "indoor":
        floor = int(rng.uniform(0.45, 0.85) * h)
        base = np.concatenate(
            [
                _vertical_gradient(floor, c1 * 1.05, c1 * 0.85),
                _vertical_gradient(h - floor, c2 * 0.8, c2),
            ]
        )
    elif kind == "texture":
        t = _smooth_noise(rng, h, w, int(rng.integers(3, 12))) * 0.5 + 0.5
        base = None
    else:
        base = _vertical_gradient(h, c1, c3)
    # lighting blotches and fine texture
    light = _smooth_noise(rng, h, w, int(rng.integers(2, 6))) * rng.uniform(5, 35)
    light += _smooth_noise(rng, h, w, int(rng.integers(20, 60))) * rng.uniform(0, 18)
    # channel by channel: numpy broadcasting of (h, 1, 3) against (h, w, 1) is slow
    channels = []
    for c in range(3):
        channel = light + (c1[c] + (c2[c] - c1[c]) * t if base is None else base[:, :, c])
        np.maximum(channel, 0.0, out=channel)
        channels.append(cv2.convertScaleAbs(channel))  # saturates at 255
    image = cv2.merge(channels)
    _draw_shapes(rng, image, int(rng.integers(2, 14)))
    return image


def _draw_shapes(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Rectangles (furniture, windows, posters), discs, polygons and lines, some striped."""
    h, w = image.shape[:2]
    for _ in range(count):
        colour = tuple(float(c) for c in random_colour(rng))
        kind = rng.random()
        if kind < 0.4:
            x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
            x1 = x0 + int(rng.uniform(0.05, 0.5) * w)
            y1 = y0 + int(rng.uniform(0.05, 0.6) * h)
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
            if rng.random() < 0.35:  # stripes, a window grid or shelves
                other = tuple(float(c) for c in random_colour(rng))
                step = int(rng.integers(4, 20))
                thick = int(rng.integers(1, max(2, step // 2)))
                vertical = rng.random() < 0.5
                for pos in range(x0 if vertical else y0, x1 if vertical else y1, step):
                    a, b = ((pos, y0), (pos, y1)) if vertical else ((x0, pos), (x1, pos))
                    cv2.line(image, a, b, other, thick)
            elif rng.random() < 0.4:
                cv2.rectangle(image, (x0, y0), (x1, y1), tuple(c * 0.5 for c in colour), 2)
        elif kind < 0.6:
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(4, w // 4)), int(rng.integers(4, h // 4)))
            cv2.ellipse(
                image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA
            )
        elif kind < 0.8:
            centre = rng.uniform([0, 0], [w, h])
            pts = centre + rng.normal(0, 0.12 * min(h, w), (int(rng.integers(3, 7)), 2))
            hull = cv2.convexHull(pts.astype(np.int32))
            cv2.fillConvexPoly(image, hull, colour, cv2.LINE_AA)
        else:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(image, p0, p1, colour, int(rng.integers(1, 5)), cv2.LINE_AA)


def distractor_sprite(
    rng: np.random.Generator, h: int, w: int, light: Light, person_scale: float
) -> Sprite:
    """A limb-like object: a shaded stick, a bent two-segment 'arm' or a blob, in skin or
    clothing materials, about the size of the limbs of a ``person_scale`` pixels tall person."""
    skin = Material("solid", skin_colour(rng), skin_colour(rng))
    cloth = random_material(rng, person_scale)
    other = random_material(rng, person_scale)
    materials: list[Material | None] = [None, skin, cloth, other]
    start = rng.uniform([0, 0], [w, h])
    angle = rng.uniform(0, 2 * np.pi)
    length = person_scale * rng.uniform(0.12, 0.3)
    radius = person_scale * rng.uniform(0.018, 0.05)
    kind = rng.random()
    parts = []
    mat = pick(rng, (1, 2, 3), (0.45, 0.35, 0.2))
    if kind < 0.2:  # blob
        e1 = np.array([np.cos(angle), np.sin(angle)])
        r1 = radius * rng.uniform(1.2, 3)
        parts.append(Part(ellipse(start, e1, r1, r1 * rng.uniform(0.5, 1)), 1, mat, 0.0, r1))
    else:
        segments = 1 if kind < 0.55 else int(rng.integers(2, 4))
        p0, r0 = start, radius
        for i in range(segments):
            p1 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
            r1 = r0 * rng.uniform(0.65, 1.0)
            parts.append(Part(capsule(p0, p1, r0, r1), i + 1, mat, float(i), r0))
            p0, r0 = p1, r1
            angle += rng.uniform(-2.4, 2.4)
            length *= rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:
                mat = pick(rng, (1, 2, 3))
    return rasterize(parts, materials, light, rng)


def finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Camera effects on the whole picture: blur, exposure, sensor grain."""
    if rng.random() < 0.7:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.4, 1.0)))
    gain, bias = float(rng.uniform(0.85, 1.15)), float(rng.uniform(-15, 15))
    lut = np.clip(np.arange(256) * gain + bias, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, lut)
    h, w = image.shape[:2]
    sigma = float(rng.uniform(1, 6))
    if h <= _GRAIN_SIZE and w <= _GRAIN_SIZE:
        y, x = rng.integers(0, _GRAIN_SIZE - h + 1), rng.integers(0, _GRAIN_SIZE - w + 1)
        grain = _grain_tile()[y : y + h, x : x + w] * sigma
    else:
        grain = rng.standard_normal((h, w, 3), dtype=np.float32) * sigma
    return cv2.add(image, grain, dtype=cv2.CV_8U)
