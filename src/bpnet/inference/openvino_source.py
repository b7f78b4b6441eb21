"""Maps from an ONNX model with OpenVINO: `bpnet evaluate / inference -m model.onnx --runtime
openvino`.

OpenVINO (an optional extra: ``pip install 'bpnet[openvino]'``) reads the same ``.onnx`` files
as ONNX Runtime, with the same ``bpnet.*`` metadata, inputs and outputs: FP32, FP16, the INT8
QDQ model of ``bpnet export --data_type int8`` (its QuantizeLinear / DequantizeLinear pairs
become OpenVINO's FakeQuantize, run by its integer kernels) and the deployable model. This
module is imported only when OpenVINO is asked for.

Precision: OpenVINO's CPU plugin runs FP32 layers in bfloat16 by default on CPUs with
AVX-512 BF16 or AMX. bpnet asks for ``f32`` unless told otherwise, so that ``--runtime
openvino`` gives the maps of the precision the model was exported with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bpnet.config.spec import NormalizationParams
from bpnet.errors import BpnetError
from bpnet.inference.model_io import ArraySource, ModelIO

PRECISIONS = ("f32", "bf16", "f16")  # OpenVINO's INFERENCE_PRECISION_HINT values bpnet passes


def import_openvino(purpose: str) -> Any:
    """The ``openvino`` module, or an error that says how to install it.

    Raises:
        BpnetError: OpenVINO is not installed (names ``purpose`` and the extra).
    """
    try:
        import openvino
    except ImportError:
        raise BpnetError(
            f"{purpose} needs OpenVINO, an optional extra: pip install 'bpnet[openvino]' "
            "(or drop --runtime openvino to use ONNX Runtime)"
        ) from None
    return openvino


class OpenVinoSource(ArraySource):
    """Run an exported model with OpenVINO's CPU plugin on each network input or batch
    (pre-processing and arguments: :class:`~bpnet.inference.model_io.ExportedSource`).

    Args:
        threads: inference threads (None: as many as PyTorch uses).
        data: the model's bytes, when they are not the file's own (a decrypted ``.etlt``).
        precision: OpenVINO's inference precision for the layers that are not INT8 (see the
            module docstring).
        shape: compile for this one input shape (a benchmark's static cell); None keeps the
            file's dynamic dimensions.
        model: an OpenVINO ``Model`` already in memory to run instead of the file's graph
            (NNCF's quantized model; ``path`` and ``io`` still name it and describe it).
    """

    def __init__(
        self,
        path: str | Path,
        io: ModelIO,
        normalization: NormalizationParams,
        *,
        stage: int | None = None,
        threads: int | None = None,
        data: bytes | None = None,
        precision: str = "f32",
        shape: tuple[int, ...] | None = None,
        model: Any = None,
    ):
        super().__init__(path, io, normalization, stage=stage)
        compiled = compile_openvino(
            self.path, threads, data=data, precision=precision, shape=shape, io=io, model=model
        )
        self.request = compiled.create_infer_request()
        self.output_ports = {port.get_any_name(): port for port in compiled.outputs}

    def outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A prepared input batch -> output name -> array (copies: the request's own buffers
        are overwritten by the next run)."""
        result = self.request.infer({self.io.input_name: x})
        return {name: result[port] for name, port in self.output_ports.items()}


def compile_openvino(
    path: str | Path,
    threads: int | None = None,
    *,
    data: bytes | None = None,
    precision: str = "f32",
    shape: tuple[int, ...] | None = None,
    io: ModelIO | None = None,
    model: Any = None,
) -> Any:
    """An OpenVINO CPU ``CompiledModel`` of an ONNX file, tuned for latency (one stream).

    Args:
        path: the model (named in messages; read when ``data`` is None).
        threads: inference threads; None uses PyTorch's count (``torch.get_num_threads()``),
            as :func:`~bpnet.inference.onnx_source.make_session` does.
        data: the model's bytes, already in memory (a decrypted ``.etlt``).
        precision: ``f32``, ``bf16`` or ``f16`` for the layers that are not INT8.
        shape: a static input shape to compile for (needs ``io`` for the input's name).
        io: the model's contract.
        model: an OpenVINO ``Model`` to compile instead of reading ``path`` (reshaped in
            place when ``shape`` is given).

    Raises:
        BpnetError: OpenVINO is missing, or cannot read or compile the model (names the file).
    """
    ov = import_openvino(f"running {path} with OpenVINO")
    if precision not in PRECISIONS:
        raise BpnetError(f"OpenVINO precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    core = ov.Core()
    try:
        if model is None:
            model = core.read_model(data if data is not None else str(path))
        if shape is not None:
            model.reshape({io.input_name: list(shape)})
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads),
            "INFERENCE_PRECISION_HINT": precision,
        }
        return core.compile_model(model, "CPU", config)
    except Exception as err:  # OpenVINO raises RuntimeError / its own types for a bad graph
        message = " ".join(str(err).split())[:300]
        raise BpnetError(f"{path}: OpenVINO cannot load the model ({message})") from None
