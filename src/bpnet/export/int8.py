"""INT8 for CPUs: ONNX Runtime calibration and static QDQ quantization.

The recipe (measured on AVX2 CPUs without VNNI, where it is the fast one):

* QDQ format (QuantizeLinear / DequantizeLinear pairs that ONNX Runtime fuses into integer
  kernels at session start), per-channel symmetric int8 weights, **uint8 asymmetric
  activations** (signed activations ran 2x slower on our AVX2 machine);
* activation ranges measured once, on the calibration tensorfile, for *every* float tensor of
  the FP32 graph (:func:`calibrate_ranges`); the same ranges then pin the quantizer
  (``TensorQuantOverrides``) and go into the TensorRT calibration cache
  (:mod:`bpnet.export.trt_cache`), so ONNX Runtime and TensorRT quantize from one measurement.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from inspect import signature
from pathlib import Path

import numpy as np

from bpnet.config.spec import NormalizationParams
from bpnet.export.tensorfile import TensorFile
from bpnet.inference import model_io as mio
from bpnet.inference.model_io import ModelIO, network_input
from bpnet.io import staging_folder

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# minmax: on the graph the export quantizes, whose channels are equalized (bpnet.export.equalize),
# every channel reaches its tensor's largest values, which a percentile range clips; minmax gave
# the higher AP in each of four comparisons (docs/BENCHMARKS.md, "Min-max ranges after the
# rewrite"). Before the rewrite percentile was the default (the VGG fixture-overfit model: within
# 1 point of FP32 where minmax lost 4.7, "Accuracy of every exported form").
DEFAULT_CALIBRATION_METHOD = "minmax"


class TensorfileReader:
    """ONNX Runtime ``CalibrationDataReader`` over a tensorfile: one network input per batch.

    Args:
        data: the calibration tensorfile.
        io: the network's contract (layout, raw or normalised input).
        normalization: the training spec's normalisation (for normalised inputs).
        batches: read only the first this many batches (None: all).
    """

    def __init__(
        self,
        data: TensorFile,
        io: ModelIO,
        normalization: NormalizationParams,
        batches: int | None = None,
    ):
        self.data = data
        self.io = io
        self.normalization = normalization
        self.count = data.num_batches if batches is None else min(batches, data.num_batches)
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= self.count:
            return None
        batch = np.asarray(self.data.batches[self.index])  # (S, H, W, 3) uint8 RGB
        self.index += 1
        return {self.io.input_name: network_input(batch, self.io, self.normalization)}

    def rewind(self) -> None:
        self.index = 0

    def __len__(self) -> int:
        return self.count


class _OneBatch:
    """A reader over a single prepared input (lets the calibrator run batch by batch)."""

    def __init__(self, inputs: dict[str, np.ndarray]):
        self.inputs = inputs

    def get_next(self) -> dict[str, np.ndarray] | None:
        inputs, self.inputs = self.inputs, None
        return inputs


def calibrate_ranges(
    fp32_model: str | Path,
    reader: TensorfileReader,
    method: str = DEFAULT_CALIBRATION_METHOD,
    *,
    progress=None,
) -> dict[str, tuple[float, float]]:
    """Measure (min, max) of every float tensor of a graph over the calibration batches.

    Batches are fed one at a time so memory stays at one batch's activations whatever the
    method (ONNX Runtime's histogram calibrators otherwise keep every batch's tensors).

    Args:
        fp32_model: the FP32 ONNX file.
        reader: the calibration batches.
        method: ``minmax`` (global min and max), ``entropy`` or ``percentile`` (99.999%).
        progress: called with (batches done, batches) after every batch.

    Returns:
        tensor name -> (min, max), for the graph input and every float activation.
    """
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with staging_folder("bpnet-calib-") as tmp:
        calibrator = create_calibrator(
            Path(fp32_model),
            [],  # every node: ranges for the whole graph (TensorRT wants them all)
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=methods[method],
        )
        reader.rewind()
        done = 0
        # the histogram calibrators print() a line per batch; our own progress says enough
        while (inputs := reader.get_next()) is not None:
            with contextlib.redirect_stdout(io.StringIO()):
                calibrator.collect_data(_OneBatch(inputs))
            done += 1
            if progress is not None:
                progress(done, len(reader))
        with contextlib.redirect_stdout(io.StringIO()):
            tensors = calibrator.compute_data()
    return {
        name: (float(np.min(data.range_value[0])), float(np.max(data.range_value[1])))
        for name, data in tensors.items()
    }


def quantize_int8(
    fp32_model: str | Path,
    out_path: str | Path,
    ranges: dict[str, tuple[float, float]],
    reader: TensorfileReader,
    *,
    reduce_range: bool = False,
    nodes_to_exclude: Sequence[str] = (),
    nodes_to_quantize: Sequence[str] | None = None,
    metadata: dict[str, str] | None = None,
    range_cache: str | Path | None = None,
) -> None:
    """Write the QDQ INT8 model: per-channel int8 weights, uint8 activations, ``ranges`` pinned.

    ONNX Runtime's ``quantize_static`` insists on running a calibration of its own; it gets
    one batch, and every activation's range is then overridden with ``ranges``
    (``TensorQuantOverrides`` rmin / rmax), so the model uses exactly the measured ranges.
    ``range_cache`` keeps that throw-away calibration in a file so that repeated calls on one
    model (the sensitivity pass) run it once.

    Args:
        fp32_model: the FP32 ONNX file (its metadata is copied, with ``data_type: int8``).
        out_path: where the quantized model goes (not atomic: write to a temporary path).
        ranges: from :func:`calibrate_ranges`.
        reader: calibration batches (only the first is read here).
        reduce_range: 7-bit weights (ONNX Runtime's advice for CPUs without VNNI when
            saturation shows up; off by default, see docs/EXPORT.md).
        nodes_to_exclude: node names left in FP32 (no QDQ around them).
        nodes_to_quantize: quantize only these nodes (None: every quantizable node).
        metadata: extra ``metadata_props`` entries for the quantized model.
        range_cache: ONNX Runtime's calibration cache file (JSON), written on first use.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32_model))
    initializers = {t.name for t in model.graph.initializer}
    overrides = {
        name: [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
        for name, (lo, hi) in ranges.items()
        if name not in initializers
    }
    reader.rewind()
    first = reader.get_next()
    cache = {}
    # calibration_cache_path is recent (ONNX Runtime 1.32 has it); without it every call
    # calibrates its one batch again, only slower
    has_cache = "calibration_cache_path" in signature(quantize_static).parameters
    if range_cache is not None and has_cache:
        cache["calibration_cache_path"] = str(range_cache)
    previous = logging.root.manager.disable
    # quantize_static logs "consider pre-processing" warnings: the exported graph already has
    # batch norm folded and shapes inferred
    logging.disable(logging.WARNING)
    try:
        quantize_static(
            str(fp32_model),
            str(out_path),
            _OneBatch(first),
            nodes_to_quantize=list(nodes_to_quantize or []),
            nodes_to_exclude=list(nodes_to_exclude),
            **cache,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"TensorQuantOverrides": overrides, "ActivationSymmetric": False},
        )
    finally:
        logging.disable(previous)
    quantized = onnx.load(str(out_path))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    for entry in quantized.metadata_props:
        if entry.key == mio.KEY_DATA_TYPE:
            entry.value = "int8"
    for key, value in (metadata or {}).items():
        quantized.metadata_props.add(key=key, value=value)
    onnx.save_model(quantized, str(out_path))
