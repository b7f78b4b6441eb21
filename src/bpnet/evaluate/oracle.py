"""The ground truth's own targets as the "network output": the decoder's upper bound.

``bpnet evaluate --oracle`` encodes each image's annotations into heatmaps and PAFs exactly as
training does and decodes them, so its AP is the best a network trained with these settings can
reach. A map source sees only the image and the input geometry; the oracle is told which
image's ground truth to draw with :meth:`OracleSource.bind`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bpnet.config.spec import STRIDE
from bpnet.data.coco import ImageRecord
from bpnet.data.transforms import transform_keypoints
from bpnet.inference.pipeline import ScaledInput
from bpnet.pose import PoseConfig
from bpnet.targets import encode


@dataclass(frozen=True)
class OracleSource:
    """A map source that draws one image's ground truth (:meth:`bind` it to the image first).

    Args:
        pose: the skeleton.
        sigma: heatmap Gaussian sigma in input pixels (``heatmap_gaussian_sigma``).
        paf_width: PAF half-width in output cells (``paf_ortho_dist_thresh``).
        record: the image whose annotations are drawn.
    """

    pose: PoseConfig
    sigma: float = 7.0
    paf_width: float = 1.0
    record: ImageRecord | None = None
    stride: int = STRIDE
    input_multiple: int = STRIDE
    needs_image: bool = False

    def bind(self, record: ImageRecord) -> OracleSource:
        """The same oracle, drawing ``record``'s people."""
        return replace(self, record=record)

    def __call__(
        self, image: np.ndarray | None, geometry: ScaledInput
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.record is None:
            raise ValueError("OracleSource: bind it to an image's record first")
        keypoints = transform_keypoints(self.record.keypoints, geometry.matrix)  # (P, J, 3)
        targets = encode(
            keypoints,
            np.ones(geometry.size, np.uint8),
            self.pose,
            stride=self.stride,
            sigma=self.sigma,
            paf_width=self.paf_width,
        )
        return targets.heatmaps, targets.pafs
