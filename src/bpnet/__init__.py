"""bpnet: bottom-up multi-person 2D pose estimation (heatmaps + Part Affinity Fields)."""

__version__ = "0.1.0"
