"""Where the cells of a network's output grid sit in its input: one rule for the encoder, the
decoder and the fusion of scales.

Input pixel centres are at integer coordinates (OpenCV), and output cell ``j`` of a stride-``s``
map covers input pixels ``s*j .. s*j + s - 1`` along its axis, so its centre is at::

    x = s * j + (s - 1) / 2        (3.5, 11.5, 19.5, ... for stride 8)

which is also where ``cv2.resize`` (half-pixel mapping) puts the cell when the map is upsampled
by ``s``: upsampled pixel ``u`` *is* input pixel ``u``.
"""

from __future__ import annotations

import numpy as np


def to_input(cell: np.ndarray | float, stride: int) -> np.ndarray | float:
    """Grid coordinate (cell centres at integers) -> input-pixel coordinate."""
    return stride * cell + (stride - 1) / 2


def to_grid(x: np.ndarray | float, stride: int) -> np.ndarray | float:
    """Input-pixel coordinate -> grid coordinate: the inverse of :func:`to_input`."""
    return (x - (stride - 1) / 2) / stride


def cell_centers(cells: int, stride: int) -> np.ndarray:
    """(cells,) float32 input-pixel coordinate of each output cell's centre along one axis."""
    return to_input(np.arange(cells), stride).astype(np.float32)


def grid_matrix(stride: int) -> np.ndarray:
    """(3, 3) affine map from input pixels to grid coordinates (:func:`to_grid` as a matrix)."""
    centre = (stride - 1) / 2
    return np.array(
        [[1 / stride, 0, -centre / stride], [0, 1 / stride, -centre / stride], [0, 0, 1]]
    )
