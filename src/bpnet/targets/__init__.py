"""Training targets: keypoints -> heatmaps, Part Affinity Fields and an output-size loss mask."""

from bpnet.grid import cell_centers
from bpnet.targets.encoder import Targets, encode, encode_batch

__all__ = ["Targets", "cell_centers", "encode", "encode_batch"]
