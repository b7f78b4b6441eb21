"""Maps from a PyTorch model: the MapSource behind `bpnet evaluate -m model.pth` and validation."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from bpnet.config.spec import NormalizationParams
from bpnet.data.transforms import normalize_image
from bpnet.errors import SpecError
from bpnet.inference.model_io import warp_rgb
from bpnet.inference.pipeline import ScaledInput


class TorchSource:
    """Run a pose network on each network input and return one stage's maps.

    Pre-processing matches training exactly: the image is warped into the input with the
    geometry's matrix (grey 128 border), converted to RGB and normalised as
    ``rgb / image_scale - image_offset`` (:func:`~bpnet.data.transforms.normalize_image`).

    Args:
        model: a network whose forward returns ``[(heatmaps, pafs), ...]``, one per stage.
        normalization: the training spec's ``dataloader.normalization_params``.
        stage: 1-based stage whose maps are used; None is the last.
        autocast_bf16: run under bfloat16 autocast with channels-last memory (CPU: 2-4x
            faster on CPUs with AVX-512 BF16 / AMX).
        device: where the model runs.
    """

    needs_image = True

    def __init__(
        self,
        model: torch.nn.Module,
        normalization: NormalizationParams | None = None,
        *,
        stage: int | None = None,
        autocast_bf16: bool = False,
        device: str | torch.device = "cpu",
    ):
        self.normalization = normalization or NormalizationParams()
        self.model = model
        self.stride = int(getattr(model, "stride", 8))
        # what input sides must be multiples of (PoseNet says; the stride for other modules)
        self.input_multiple = int(getattr(model, "input_multiple", self.stride))
        self.stage = stage
        self.autocast_bf16 = autocast_bf16
        self.device = torch.device(device)

    def __call__(
        self, image: np.ndarray | None, geometry: ScaledInput
    ) -> tuple[np.ndarray, np.ndarray]:
        if image is None:
            raise ValueError("TorchSource needs the image (needs_image is True)")
        x = normalize_image(warp_rgb(image, geometry), self.normalization)  # (3, H, W)
        return self.run(torch.from_numpy(x)[None])

    def batch(
        self, images: list[np.ndarray], geometry: ScaledInput
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several pictures of one size through the network as one batch (video frames)."""
        x = np.stack([normalize_image(warp_rgb(im, geometry), self.normalization) for im in images])
        heatmaps, pafs = self.forward(torch.from_numpy(x))  # (N, J+1, h, w), (N, 2L, h, w)
        return list(zip(heatmaps, pafs, strict=True))

    def run(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(1, 3, H, W) normalised input -> heatmaps (J+1, h, w), PAFs (2L, h, w) float32."""
        heatmaps, pafs = self.forward(batch)
        return heatmaps[0], pafs[0]

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, H, W) normalised input -> heatmaps (N, J+1, h, w), PAFs (N, 2L, h, w)."""
        was_training = self.model.training
        self.model.eval()
        batch = batch.to(self.device)
        autocast = contextlib.nullcontext()
        if self.autocast_bf16:
            batch = batch.contiguous(memory_format=torch.channels_last)
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16)
        try:
            with autocast:
                outputs = self.model(batch)
        finally:
            self.model.train(was_training)
        if self.stage is not None and not 1 <= self.stage <= len(outputs):
            raise SpecError(
                f"output_stage_to_use: {self.stage}, but the model has {len(outputs)} stages; "
                f"use a stage in 1..{len(outputs)} or null (the last)"
            )
        heatmaps, pafs = outputs[-1 if self.stage is None else self.stage - 1]
        return heatmaps.float().cpu().numpy(), pafs.float().cpu().numpy()
