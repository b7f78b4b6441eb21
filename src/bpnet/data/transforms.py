"""Augmentation and resizing as pure functions on arrays.

Every spatial step is one 2x3 affine matrix ``M`` that maps original image pixels to network
input pixels (``[x_in, y_in] = M @ [x, y, 1]``; integer coordinates are pixel centres, as in
``cv2.warpAffine``). The same matrix moves the image (bilinear), the keypoints and the loss mask
(nearest), so they cannot drift apart; :func:`invert_affine` maps predictions back.

Sizes are ``(height, width)`` like array shapes. Keypoints are ``(..., J, 3)`` x, y, v arrays.
"""

from __future__ import annotations

import cv2
import numpy as np

from bpnet.config.spec import ColorAugParams, NormalizationParams, SpatialAugParams

# Border fill of warped images: mid grey, which the default normalisation maps to ~0.
BORDER_GREY = 128


def affine_matrix(
    center: tuple[float, float],
    scale: float,
    size: tuple[int, int],
    *,
    rotate_deg: float = 0.0,
    flip: bool = False,
    translate: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Compose centre -> scale -> rotate -> mirror -> place, as one matrix.

    Args:
        center: (x, y) point of the original image that lands at the output centre (before
            ``translate``).
        scale: output pixels per original pixel.
        size: output (height, width).
        rotate_deg: counter-clockwise rotation on screen, in degrees.
        flip: mirror horizontally about the output centre.
        translate: (dx, dy) output pixels added after everything else.

    Returns:
        (2, 3) float64 matrix from original to output pixel coordinates.
    """
    height, width = size
    angle = np.deg2rad(rotate_deg)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    # y points down, so this is a counter-clockwise turn on screen (cv2.getRotationMatrix2D's)
    linear = np.array([[cos, sin], [-sin, cos]])
    if flip:
        linear[0] *= -1.0
    # pixel centres run 0 .. n-1, so the centre of an n-pixel side is (n - 1) / 2
    target = np.array([(width - 1) / 2 + translate[0], (height - 1) / 2 + translate[1]])
    offset = target - linear @ np.asarray(center, np.float64)
    return np.concatenate([linear, offset[:, None]], axis=1)


def sample_person_centric(
    center: tuple[float, float],
    person_height: float,
    size: tuple[int, int],
    params: SpatialAugParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, bool]:
    """Draw one random person-centric transform (TAO's spatial augmentation).

    The person's centre goes to the crop centre and their height to ``target_person_scale``
    of the crop height, then a random zoom (``zoom_ratio_min..max`` with ``zoom_prob``),
    rotation (``+-rotate_deg_max``), translation (``+-translate_max_x/y`` output pixels) and
    horizontal flip (``flip_lr_prob``) are added.

    Args:
        center: (x, y) of the person in the original image (their box centre).
        person_height: the person's height in original pixels (their box height).
        size: output (height, width).
        params: the spec's ``spatial_aug_params``.
        rng: the sample's random generator.

    Returns:
        (2, 3) matrix and whether it mirrors (then swap joints with ``flip_permutation``).
    """
    # every draw happens whatever the probabilities, so one setting never shifts the others
    zoom_draw, zoom, rotate, dx, dy, flip_draw = rng.random(6)
    scale = params.target_person_scale * size[0] / max(float(person_height), 1.0)
    if zoom_draw < params.zoom_prob:
        scale *= params.zoom_ratio_min + zoom * (params.zoom_ratio_max - params.zoom_ratio_min)
    flip = bool(flip_draw < params.flip_lr_prob)
    matrix = affine_matrix(
        center,
        scale,
        size,
        rotate_deg=(2 * rotate - 1) * params.rotate_deg_max,
        flip=flip,
        translate=((2 * dx - 1) * params.translate_max_x, (2 * dy - 1) * params.translate_max_y),
    )
    return matrix, flip


def letterbox_matrix(width: int, height: int, size: tuple[int, int]) -> np.ndarray:
    """Resize the whole image into ``size`` keeping its aspect ratio; pad right and bottom.

    The image's outer edges land on the output's outer edges along the limiting side (the
    mapping of ``cv2.resize``), so evaluation sees exactly a resized image.

    Args:
        width: original width in pixels.
        height: original height in pixels.
        size: output (height, width).

    Returns:
        (2, 3) float64 matrix from original to output pixels.
    """
    scale = min(size[0] / height, size[1] / width)
    shift = 0.5 * scale - 0.5
    return np.array([[scale, 0.0, shift], [0.0, scale, shift]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The (2, 3) matrix that undoes ``matrix`` (network input -> original image pixels)."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map (..., 2) x, y points through a (2, 3) matrix; returns float64 (..., 2)."""
    matrix = np.asarray(matrix, np.float64)
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def transform_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, flip_permutation: np.ndarray | None = None
) -> np.ndarray:
    """Move keypoints with the image.

    Keypoints that leave the output keep their (outside) coordinates and their v: the encoder
    decides what an off-crop joint contributes (a Gaussian whose centre is just outside still
    reaches in, and a limb crossing the crop still has a PAF).

    Args:
        keypoints: (..., J, 3) x, y, v.
        matrix: (2, 3) original -> output.
        flip_permutation: pass ``pose.flip_permutation`` when ``matrix`` mirrors: after a
            horizontal flip the person's anatomical left shows where a right side would, so the
            left and right channels swap.

    Returns:
        (..., J, 3) float32; unlabelled joints (v = 0) are all zeros.
    """
    keypoints = np.asarray(keypoints, np.float32)
    xy = apply_affine(keypoints[..., :2], matrix)
    out = np.concatenate([xy, keypoints[..., 2:3]], axis=-1).astype(np.float32)
    out[keypoints[..., 2] <= 0] = 0.0
    if flip_permutation is not None:
        out = out[..., flip_permutation, :]
    return out


def warp_image(
    image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], border: int = BORDER_GREY
) -> np.ndarray:
    """Warp an (H, W, C) uint8 image to ``size`` (bilinear, constant grey border)."""
    return cv2.warpAffine(
        image,
        np.asarray(matrix, np.float64),
        (size[1], size[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border, border, border),
    )


def normalize_image(rgb: np.ndarray, normalization: NormalizationParams) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 network input ``rgb / image_scale - image_offset``.

    The one normalisation of training, evaluation and every exported model's input. Each plane
    is multiplied by the reciprocal of its scale (exact for the power-of-two scales of TAO's
    defaults and of imported models), then shifted.
    """
    out = np.empty((3, *rgb.shape[:2]), np.float32)
    # plane by plane: cheaper than a strided HWC -> CHW float conversion
    for c, plane in enumerate(cv2.split(rgb)):
        np.multiply(plane, np.float32(1.0 / normalization.image_scale[c]), out=out[c])
        out[c] -= np.float32(normalization.image_offset[c])
    return out


def warp_mask(mask: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp an (H, W) uint8 loss mask to ``size`` (nearest; the border counts: 1).

    Pixels from outside the image count because there are no people there to miss.
    """
    return cv2.warpAffine(
        mask,
        np.asarray(matrix, np.float64),
        (size[1], size[0]),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=1,
    )


def color_jitter(image: np.ndarray, params: ColorAugParams, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation and hue, all with probability ``params.prob``.

    Brightness and contrast are one lookup table on RGB (contrast pivots on the image's mean
    intensity); saturation and hue are one lookup table on OpenCV's 8-bit HSV.

    Args:
        image: (H, W, 3) uint8 RGB.
        params: the spec's ``color_aug_params``.
        rng: the sample's random generator.

    Returns:
        (H, W, 3) uint8 RGB (the input itself when no jitter is drawn).
    """
    apply, brightness, contrast, saturation, hue = rng.random(5)
    if apply >= params.prob:
        return image
    shift = (2 * brightness - 1) * params.brightness * 255.0
    gain = 1.0 + (2 * contrast - 1) * params.contrast
    mean = float(np.mean(cv2.mean(image)[:3]))
    levels = np.arange(256, dtype=np.float32)
    lut = np.clip((levels - mean) * gain + mean + shift, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, lut)

    sat_gain = 1.0 + (2 * saturation - 1) * params.saturation
    hue_steps = round((2 * hue - 1) * params.hue_deg / 2)  # 8-bit OpenCV hue: 2 degrees a step
    if sat_gain == 1.0 and hue_steps == 0:
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv_lut = np.empty((256, 1, 3), np.uint8)
    hsv_lut[:, 0, 0] = (np.arange(256) + hue_steps) % 180  # hue wraps at 180 steps
    hsv_lut[:, 0, 1] = np.clip(levels * sat_gain, 0, 255).astype(np.uint8)
    hsv_lut[:, 0, 2] = np.arange(256)
    return cv2.cvtColor(cv2.LUT(hsv, hsv_lut), cv2.COLOR_HSV2RGB)
