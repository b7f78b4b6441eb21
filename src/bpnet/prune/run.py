"""``bpnet prune``: a trained checkpoint in, a pruned checkpoint and its report out.

The pruned checkpoint is an ordinary bpnet checkpoint (:mod:`bpnet.models.checkpoint`): its
``arch`` holds the new per-layer widths, so ``bpnet evaluate -m``, inference, export and
``bpnet train`` with ``pretrained_weights`` + ``load_graph: true`` rebuild it from the file.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bpnet.errors import BpnetError
from bpnet.export.calibration import read_letterboxed
from bpnet.inference.model_io import torch_input
from bpnet.io import check_output_dir, image_files, write_json_atomic
from bpnet.models import PoseNet
from bpnet.models.checkpoint import SUFFIXES, TrainedModel, load_trained, save_checkpoint
from bpnet.progress import progress
from bpnet.prune.activation import channel_statistics, input_moments
from bpnet.prune.cut import apply_plan, dependency_graph, keep_stages
from bpnet.prune.reconstruct import reconstruct, refit_paths
from bpnet.prune.report import (
    Cost,
    arch_cost,
    conv_output_sizes,
    format_report,
    format_sweep,
    pruning_report,
)
from bpnet.prune.rules import PruneSettings, PruningPlan, arch_with_widths, plan_pruning

DEFAULT_INPUT_SIZE = (368, 368)  # TAO's training size, and the published OpenPose GMAC figure
PICTURES = 32  # what the activation criterion measures on: the first 32 of --rank_on
_PICTURE_BATCH = 4


@dataclass
class Prepared:
    """A network made ready for planning: its stages cut to ``settings.stages``, and for the
    ``activation`` criterion the statistics and input means measured on pictures."""

    model: PoseNet
    statistics: dict[str, np.ndarray] | None = None
    input_means: dict[str, Tensor] | None = None


def prepare(
    model: PoseNet, settings: PruneSettings, pictures: Iterable[Tensor] | None = None
) -> Prepared:
    """Cut the stages ``settings`` drops, then measure the ``activation`` criterion.

    Args:
        pictures: batches of network inputs; needed by the ``activation`` criterion only.

    Raises:
        BpnetError: the ``activation`` criterion without pictures, or a bad ``stages``.
    """
    if settings.stages is not None:
        model = keep_stages(model, settings.stages)
    if settings.criterion != "activation":
        return Prepared(model)
    if pictures is None:
        raise BpnetError(
            "the activation criterion measures each filter on pictures: give --rank_on DIR "
            "(e.g. the calibration pictures), or leave it out for TAO's kernel norm"
        )
    moments = input_moments(model, pictures)
    statistics = channel_statistics(model, dependency_graph(model), moments)
    return Prepared(model, statistics, {path: m.mean for path, m in moments.items()})


def prune_model(
    model: PoseNet, settings: PruneSettings, pictures: Iterable[Tensor] | None = None
) -> tuple[PoseNet, PruningPlan]:
    """Plan with TAO's rules, then cut with torch-pruning (:func:`plan_pruning`,
    :func:`apply_plan`), after :func:`prepare`; with pictures, refit the convs that lost
    inputs (:func:`reconstruct`).

    Example:
        >>> pruned, plan = prune_model(model, PruneSettings(threshold=0.05))  # doctest: +SKIP
        >>> pruned.arch  # per-layer widths, what a checkpoint stores  # doctest: +SKIP

    Args:
        pictures: batches of network inputs (the ``activation`` criterion's measurement, and
            what the refit fits on when ``settings.refit``: :func:`reconstruct`).

    Returns:
        (the pruned network, the plan it follows).
    """
    pictures = None if pictures is None else list(pictures)
    ready = prepare(model, settings, pictures)
    plan = plan_pruning(ready.model, settings, ready.statistics)
    pruned = apply_plan(ready.model, plan, input_means=ready.input_means)
    if settings.refit and pictures:
        kept = {path: list(layer.kept) for path, layer in plan.layers.items()}
        reconstruct(pruned, ready.model, torch.cat(pictures), kept)
    return pruned, plan


def read_pictures(
    folder: str | os.PathLike | None, size: tuple[int, int], trained: TrainedModel
) -> Iterator[Tensor] | None:
    """Batches of the first :data:`PICTURES` pictures of ``folder``, letterboxed to ``size``
    and normalised as ``trained``'s network takes them (None for no folder).

    Raises:
        BpnetError: a folder that does not exist or holds no pictures.
    """
    if folder is None:
        return None
    paths = image_files(Path(folder))[:PICTURES] if Path(folder).is_dir() else []
    if not paths:
        raise BpnetError(f"{folder}: no pictures (jpg, png, bmp) there; --rank_on names a folder")
    normalization = trained.train_spec.dataloader.normalization_params

    def batches() -> Iterator[Tensor]:
        with progress(desc="measuring filters", unit="picture", total=len(paths)) as bar:
            for start in range(0, len(paths), _PICTURE_BATCH):
                chunk = paths[start : start + _PICTURE_BATCH]
                rgb = np.stack([read_letterboxed(p, size, "the --rank_on folder") for p in chunk])
                yield torch.from_numpy(torch_input(rgb, normalization))
                bar.update(len(chunk))

    return batches()


def resolve_input_size(
    checkpoint: dict, input_size: tuple[int, int] | None, multiple: int = 8
) -> tuple[int, int]:
    """The (H, W) MACs are counted at: ``input_size``, else the checkpoint's training
    ``image_dims``, else 368x368.

    Args:
        multiple: the network's ``input_multiple`` (8, or 16 for a feature pyramid).

    Raises:
        BpnetError: a side that is not a positive multiple of ``multiple``.
    """
    if input_size is None:
        dims = ((checkpoint.get("spec") or {}).get("dataloader") or {}).get("image_config", {})
        dims = dims.get("image_dims") if isinstance(dims, dict) else None
        if isinstance(dims, dict) and "height" in dims and "width" in dims:
            input_size = (dims["height"], dims["width"])
        else:
            input_size = DEFAULT_INPUT_SIZE
    h, w = input_size
    for side in (h, w):
        if isinstance(side, bool) or not isinstance(side, int) or side < 8 or side % multiple:
            raise BpnetError(
                f"input size {h}x{w}: sides must be positive multiples of {multiple} (what the "
                "network takes); e.g. --input_size 368 368"
            )
    return h, w


def parse_thresholds(text: str) -> list[float]:
    """``"0.01,0.05,0.1"`` -> [0.01, 0.05, 0.1].

    Raises:
        BpnetError: an entry that is not a finite number >= 0.
    """
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise BpnetError(
                f"--sweep {text!r}: {item.strip()!r} is not a threshold; give numbers >= 0 "
                "separated by commas, e.g. --sweep 0.01,0.05,0.1,0.2,0.5"
            )
        values.append(value)
    return values


def prune_checkpoint(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    settings: PruneSettings,
    *,
    input_size: tuple[int, int] | None = None,
    report_path: str | os.PathLike | None = None,
    force: bool = False,
    key: str | None = None,
    images: str | os.PathLike | None = None,
) -> dict:
    """Prune a trained checkpoint and write the pruned checkpoint and a JSON report.

    Example:
        >>> report = prune_checkpoint("model_epoch_100.pth", "pruned.pth",
        ...                           PruneSettings(threshold=0.05))  # doctest: +SKIP
        >>> print(format_report(report))  # doctest: +SKIP

    Args:
        model_path: a checkpoint written by ``bpnet train`` (or ``bpnet prune``).
        output_path: the pruned checkpoint (``.pth``).
        settings: TAO's pruning options.
        input_size: (H, W) the MACs are counted at (:func:`resolve_input_size`).
        report_path: the JSON report; default ``<output stem>_prune_report.json`` beside it.
        force: replace an existing ``output_path``.
        key: TAO's ``-k``: the key of an encrypted input; the output is encrypted with it
            (None: written plain).
        images: a folder of pictures the ``activation`` criterion measures on
            (:func:`read_pictures`).

    Returns:
        The report (:func:`bpnet.prune.report.pruning_report`, plus ``source``, ``output``
        and ``report`` paths).

    Raises:
        BpnetError: bad input file, bad settings, unknown excluded layer, or an output that
            exists (without ``force``), is the input, or is not a ``.pth`` file.
    """
    model_path, output_path = Path(model_path), Path(output_path)
    if output_path.suffix not in SUFFIXES:
        raise BpnetError(
            f"{output_path}: bpnet models are .pth checkpoints; name the output e.g. "
            f"{output_path.with_suffix('.pth').name}"
        )
    if output_path.is_dir():
        raise BpnetError(f"{output_path}: is a folder; give a file name such as model_pruned.pth")
    if output_path.exists() and model_path.exists() and output_path.samefile(model_path):
        raise BpnetError(f"{output_path}: is the model being pruned; choose another -o")
    if output_path.exists() and not force:
        raise BpnetError(f"{output_path}: exists; pass --force to replace it, or choose another -o")
    check_output_dir(output_path.parent)
    report_path = Path(
        report_path or output_path.with_name(f"{output_path.stem}_prune_report.json")
    )
    # checked before any work: a bad report path must not leave a pruned model without it
    check_report_path(report_path, force)

    trained = load_trained(model_path, key=key)
    checkpoint, model = trained.checkpoint, trained.model
    size = resolve_input_size(checkpoint, input_size, model.input_multiple)
    pruned, plan = prune_model(model, settings, read_pictures(images, size, trained))
    report = pruning_report(model.arch, pruned.arch, plan, size)
    report = {"source": str(model_path), "output": str(output_path), **report}
    refitted = refit_paths(pruned, model) if settings.refit and images is not None else []
    report["refitted"] = refitted
    report["note"] = regularization_note(checkpoint, settings)
    report["report"] = str(report_path)
    spec = copy.deepcopy(checkpoint.get("spec"))
    if spec and isinstance(spec.get("model"), dict):
        spec["model"]["stages"] = len(pruned.arch["stages"])
    save_checkpoint(
        output_path,
        pruned,
        spec=spec,  # the training spec: normalisation, targets, skeleton
        pose=trained.pose if checkpoint.get("pose") else None,
        extra={"pruning": {k: v for k, v in report.items() if k != "layers"}},
        key=key,
    )
    write_json_atomic(report_path, report, indent=2)
    return report


def check_report_path(report_path: Path, force: bool) -> None:
    """Fail before any work when the JSON report could not be written.

    Raises:
        BpnetError: not a ``.json`` path, an existing file without ``force``, or a folder that
            cannot be written.
    """
    if report_path.suffix != ".json" or report_path.is_dir():
        raise BpnetError(f"{report_path}: the report is a .json file; choose another --report")
    if report_path.exists() and not force:
        raise BpnetError(f"{report_path}: exists; pass --force to replace it")
    check_output_dir(report_path.parent)


def sweep_checkpoint(
    model_path: str | os.PathLike,
    settings: PruneSettings,
    thresholds: list[float],
    *,
    input_size: tuple[int, int] | None = None,
    report_path: str | os.PathLike | None = None,
    force: bool = False,
    key: str | None = None,
    images: str | os.PathLike | None = None,
) -> dict:
    """Parameters and MACs a checkpoint keeps at each threshold; no model is written.

    Only the decisions are made (no weights are cut): the costs follow from the widths.

    Args:
        model_path: a trained checkpoint.
        settings: the other pruning options (their threshold is replaced by each of
            ``thresholds``).
        thresholds: pruning thresholds to try.
        input_size: as in :func:`prune_checkpoint`.
        report_path: write the table here as JSON (checked before any work).
        force: replace an existing ``report_path``.
        key: the ``-k`` key of an encrypted checkpoint.
        images: as in :func:`prune_checkpoint` (measured once for every threshold).

    Returns:
        The table (what ``report_path`` receives): ``model``, ``input_size`` (H, W), ``note``
        (:func:`regularization_note`, or None) and ``rows``: the unpruned model first
        (``threshold`` None), then one ``{"threshold", "params", "gmacs", "params_kept",
        "macs_kept"}`` per threshold.
    """
    if report_path is not None:
        check_report_path(Path(report_path), force)
    trained = load_trained(model_path, key=key)
    checkpoint, model = trained.checkpoint, trained.model
    size = resolve_input_size(checkpoint, input_size, model.input_multiple)
    sizes = conv_output_sizes(model.arch, size)
    before = arch_cost(model.arch, sizes)
    rows = [_sweep_row(None, before, before)]
    ready = prepare(model, settings, read_pictures(images, size, trained))
    for threshold in thresholds:
        plan = plan_pruning(ready.model, replace(settings, threshold=threshold), ready.statistics)
        after = arch_cost(arch_with_widths(ready.model.arch, plan.widths()), sizes)
        rows.append(_sweep_row(threshold, after, before))
    note = regularization_note(checkpoint, settings)
    table = {"model": str(model_path), "input_size": list(size), "note": note, "rows": rows}
    if report_path is not None:
        write_json_atomic(report_path, table, indent=2)
    return table


def prune_command(
    model: Path,
    output_file: Path | None,
    sweep: str | None,
    pruning_threshold: float,
    equalization_criterion: str,
    pruning_granularity: int,
    min_num_filters: int,
    normalizer: str,
    excluded_layers: list[str],
    input_size: list[int] | None,
    report: Path | None,
    force: bool,
    key: str | None,
    images: Path | None = None,
    stages: int | None = None,
    refit: bool = True,
) -> str:
    """``bpnet prune`` with TAO's options: :func:`prune_checkpoint` into ``output_file``, or
    :func:`sweep_checkpoint` over the thresholds ``sweep`` lists (``"0.01,0.05,0.1"``), which
    writes no model (only ``report``, when given).

    ``excluded_layers`` may be given as TAO takes them (``-el a b``) or comma-separated
    (``-el a,b``); ``input_size`` is (H, W), None: the model's training ``image_dims``.

    Returns:
        The report (:func:`~bpnet.prune.report.format_report`, or
        :func:`~bpnet.prune.report.format_sweep`) and the files written.

    Raises:
        BpnetError: ``sweep`` with an ``output_file``, neither of them, or what the runners
            raise.
    """
    settings = PruneSettings(
        threshold=pruning_threshold,
        equalization_criterion=equalization_criterion,
        granularity=pruning_granularity,
        min_num_filters=min_num_filters,
        normalizer=normalizer,
        excluded_layers=tuple(name for item in excluded_layers for name in item.split(",") if name),
        criterion="kernel_norm" if images is None else "activation",
        stages=stages,
        refit=refit,
    )
    size = (input_size[0], input_size[1]) if input_size else None
    where = dict(input_size=size, report_path=report, force=force, key=key, images=images)
    if sweep is not None:
        thresholds = parse_thresholds(sweep)
        if output_file is not None:
            raise BpnetError("--sweep compares thresholds and writes no model: drop -o")
        table = sweep_checkpoint(model, settings, thresholds, **where)
        return format_sweep(table) + ("" if report is None else f"\nwrote {report}")
    if output_file is None:
        raise BpnetError(
            "bpnet prune: give the pruned model's path with -o OUT.pth (or compare thresholds "
            "without writing anything: --sweep 0.01,0.05,0.1,0.2,0.5)"
        )
    result = prune_checkpoint(model, output_file, settings, **where)
    return f"{format_report(result)}\nwrote {result['output']} and {result['report']}"


def regularization_note(checkpoint: dict, settings: PruneSettings | None = None) -> str | None:
    """A warning for a checkpoint trained without L1 kernel regularisation, pruned by kernel
    norm, else None.

    TAO's criterion ranks filters by kernel norm. L1 during training drives the kernels a
    network can spare towards zero, so a threshold separates them; without it the norms of a
    layer stay close together and any threshold that removes much also removes filters the
    network relies on (docs/BENCHMARKS.md, "Pruning"). Checkpoints without a stored spec get
    no note.
    """
    if settings is not None and settings.criterion != "kernel_norm":
        return None
    model = (checkpoint.get("spec") or {}).get("model") or {}
    kind = model.get("regularization_type")
    factor = model.get("kernel_regularization_factor")
    if kind is None or (kind in ("l1", "l1_l2") and factor):
        return None
    return (
        f"note: this model was trained without L1 (regularization_type {kind}, "
        f"kernel_regularization_factor {factor}): its filter norms do not single out spare "
        "filters, so expect accuracy to fall steeply with the threshold; train with "
        "model.regularization_type: l1 before pruning, as TAO does (docs/PRUNING.md: behind "
        "batch norm it helps less), or rank filters on pictures: --rank_on DIR"
    )


def _sweep_row(threshold: float | None, cost: Cost, before: Cost) -> dict:
    return {
        "threshold": threshold,
        "params": cost.params,
        "gmacs": cost.gmacs,
        "params_kept": cost.params / before.params,
        "macs_kept": cost.macs / before.macs,
    }


__all__ = [
    "DEFAULT_INPUT_SIZE",
    "PICTURES",
    "Prepared",
    "format_report",
    "parse_thresholds",
    "prepare",
    "prune_checkpoint",
    "prune_command",
    "prune_model",
    "read_pictures",
    "regularization_note",
    "resolve_input_size",
    "sweep_checkpoint",
]
