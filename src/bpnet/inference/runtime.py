"""Load a model for inference: the one entry point `bpnet evaluate -m` and `bpnet inference -m`
go through, whatever the file.

=============  ================  ===================================================
suffix         runtime           what it is
=============  ================  ===================================================
``.pth``       PyTorch           a checkpoint from ``bpnet train`` / ``bpnet prune``
``.onnx``      ONNX Runtime      ``bpnet export`` output: FP32, FP16, INT8 (QDQ), or
                                 the deployable model (``--sdk_compatible_model``)
``.etlt``      ONNX Runtime      ``bpnet export -k`` output: the ONNX model encrypted
``.engine``    TensorRT          ``bpnet export --engine_file`` output (GPU)
=============  ================  ===================================================

``--runtime openvino`` (:data:`RUNTIMES`) runs a ``.onnx`` / ``.etlt`` file with OpenVINO
instead of ONNX Runtime (:mod:`bpnet.inference.openvino_source`, an optional extra).

Each comes back as a :class:`LoadedModel` whose :meth:`LoadedModel.source` is a
:class:`~bpnet.inference.pipeline.MapSource`; the skeleton and the training spec come from the
file itself (checkpoint keys, ONNX metadata, or the engine's ``.json``), so no other file is
needed. A ``.pth`` or ONNX model written with a key (``-k``, :mod:`bpnet.encryption`) loads
with the same key, whatever its suffix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from bpnet.config import ExperimentSpec, from_dict
from bpnet.encryption import is_encrypted_file, read_model_bytes
from bpnet.errors import BpnetError
from bpnet.inference import model_io as mio
from bpnet.inference.model_io import ModelIO
from bpnet.inference.pipeline import MapSource
from bpnet.inference.torch_source import TorchSource
from bpnet.models.checkpoint import SUFFIXES as TORCH_SUFFIXES
from bpnet.models.checkpoint import load_trained
from bpnet.pose import PoseConfig
from bpnet.pose.skeleton import parse_pose_config

ONNX_SUFFIXES = (".onnx", ".etlt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# what --runtime may ask for; auto: the file's own (its suffix, table above)
RUNTIMES = ("auto", "onnxruntime", "openvino")


@dataclass
class LoadedModel:
    """A model ready to produce maps, with what it was trained with.

    Attributes:
        path: the model file.
        pose: the skeleton its heads follow.
        train_spec: its resolved experiment spec (normalisation, input size, targets).
        runtime: ``torch``, ``onnxruntime`` or ``tensorrt``.
        model: the network in eval mode (PyTorch checkpoints only, else None).
        io: an exported model's inputs and outputs (None for checkpoints).
        data_type: ``fp32``, ``fp16`` or ``int8`` (an exported model's precision).
        data: an encrypted ONNX model's decrypted bytes (None: the file is read as it is).
    """

    path: Path
    pose: PoseConfig
    train_spec: ExperimentSpec
    runtime: Literal["torch", "onnxruntime", "tensorrt"] = "torch"
    model: torch.nn.Module | None = None
    io: ModelIO | None = None
    data_type: str = "fp32"
    data: bytes | None = None

    def source(
        self,
        *,
        stage: int | None = None,
        bf16: bool = False,
        threads: int | None = None,
        runtime: str | None = None,
    ) -> MapSource:
        """A map source for :func:`bpnet.evaluate.evaluate.evaluate`.

        Args:
            stage: 1-based stage whose maps are decoded; None is the last.
            bf16: bfloat16 autocast (PyTorch checkpoints only).
            threads: ONNX Runtime / OpenVINO threads (None: as many as PyTorch uses).
            runtime: one of :data:`RUNTIMES`; ``auto`` or None (or the file's own runtime) runs
                the file as its suffix says, ``openvino`` runs an ONNX file with OpenVINO.

        Raises:
            BpnetError: ``bf16`` for an exported model, a stage it does not output, or a
                runtime that cannot run this kind of file.
        """
        normalization = self.train_spec.dataloader.normalization_params
        self._check_runtime(runtime)
        if self.runtime == "torch":
            return TorchSource(self.model, normalization, stage=stage, autocast_bf16=bf16)
        if bf16:
            raise BpnetError(
                f"{self.path}: --bf16 applies to .pth models; an exported model runs at the "
                f"precision it was exported with ({self.data_type})"
            )
        if runtime == "openvino":
            from bpnet.inference.openvino_source import OpenVinoSource

            return OpenVinoSource(
                self.path, self.io, normalization, stage=stage, threads=threads, data=self.data
            )
        if self.runtime == "onnxruntime":
            from bpnet.inference.onnx_source import OnnxSource

            return OnnxSource(
                self.path, self.io, normalization, stage=stage, threads=threads, data=self.data
            )
        from bpnet.inference.tensorrt_source import TensorRTSource

        return TensorRTSource(self.path, self.io, normalization, stage=stage)

    def _check_runtime(self, runtime: str | None) -> None:
        """Fail clearly when ``runtime`` cannot run this file."""
        if runtime is None:
            return
        if runtime not in RUNTIMES:
            raise BpnetError(f"--runtime {runtime}: choose one of {', '.join(RUNTIMES)}")
        if runtime in ("auto", self.runtime):
            return
        if runtime == "openvino" and self.runtime == "onnxruntime":
            return
        if self.runtime == "torch":
            fix = f"export it first: bpnet export -m {self.path} -o {self.path.stem}.onnx"
        else:
            fix = "use --runtime auto"
        raise BpnetError(
            f"{self.path}: --runtime {runtime} cannot run this file (its runtime is "
            f"{self.runtime}; openvino runs .onnx / .etlt files); {fix}"
        )


def load_model(
    path: str | Path, device: str | torch.device = "cpu", *, key: str | None = None
) -> LoadedModel:
    """Load a ``.pth`` checkpoint, an exported ``.onnx`` / ``.etlt`` model or a TensorRT
    ``.engine``.

    Args:
        path: the model file; its suffix picks the runtime (module docstring).
        device: where a PyTorch model runs.
        key: the ``-k`` key an encrypted model was written with (plain files ignore it).

    Raises:
        BpnetError: the file is missing, of an unknown kind, not a bpnet model, encrypted
            and no key or a wrong key was given (or changed since), or its widths and weights
            disagree.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return _load_onnx(path, key)
    if suffix in ENGINE_SUFFIXES:
        return _load_engine(path)
    if suffix not in TORCH_SUFFIXES:
        raise BpnetError(
            f"{path}: unknown model file type; bpnet runs .pth checkpoints (bpnet train / "
            "bpnet prune), .onnx / .etlt models and .engine files (bpnet export)"
        )
    trained = load_trained(path, device, key=key)
    train_spec = trained.train_spec  # read before the pose, as the checks always ran
    return LoadedModel(path, trained.pose, train_spec, "torch", model=trained.model)


def _from_metadata(
    props: dict[str, str], source: str
) -> tuple[ModelIO, PoseConfig, ExperimentSpec, str]:
    """The contract, skeleton, spec and precision stored by bpnet export."""
    io_ = ModelIO.from_json(props[mio.KEY_IO], source)
    try:
        pose_raw = json.loads(props[mio.KEY_POSE])
        spec_raw = json.loads(props[mio.KEY_SPEC])
    except (KeyError, ValueError) as err:
        raise BpnetError(
            f"{source}: the model's pose / spec metadata is missing or malformed ({err}); "
            "export it again with bpnet export"
        ) from None
    pose = parse_pose_config(pose_raw, source=f"{source} (stored pose config)")
    spec = from_dict(ExperimentSpec, spec_raw, f"{source} (stored spec)")
    return io_, pose, spec, props.get(mio.KEY_DATA_TYPE, "fp32")


def _load_onnx(path: Path, key: str | None) -> LoadedModel:
    from bpnet.inference.onnx_source import read_onnx_metadata

    data = read_model_bytes(path, key) if is_encrypted_file(path) else None
    io_, pose, spec, data_type = _from_metadata(read_onnx_metadata(path, data), str(path))
    return LoadedModel(path, pose, spec, "onnxruntime", io=io_, data_type=data_type, data=data)


def _load_engine(path: Path) -> LoadedModel:
    from bpnet.inference.tensorrt_source import read_engine_metadata

    if not path.is_file():
        raise BpnetError(f"{path}: engine file not found; check the path")
    props = read_engine_metadata(path)
    io_, pose, spec, data_type = _from_metadata(props, str(path))
    return LoadedModel(path, pose, spec, "tensorrt", io=io_, data_type=data_type)
