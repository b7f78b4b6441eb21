"""Network speed of models x input sizes x runtimes x batches, beside OpenPose: ``bpnet bench
model``.

Every (model, size, runtime, batch) cell is a zero-argument call of one network forward on one
prepared input (random pixels, already normalised: no image decoding, warping or people
decoding). After a warm-up, the cells are timed round by round, each round calling every cell
once in a new random order, so all cells see the same machine load and their ratios hold on a
busy machine; a cell's figure is the median over the rounds. ``--end_to_end`` adds, per model,
size and runtime, the time of one picture from pixels to people (warp, normalise, network,
map fusion, decoding: :func:`~bpnet.inference.pipeline.predict_people`), batch 1, interleaved
in the same rounds.

Runtimes (:data:`RUNTIMES`): PyTorch FP32 on the ``.pth``; ONNX Runtime and OpenVINO on bpnet's
exported ``.onnx`` (FP32, or the INT8 QDQ model of ``bpnet export --data_type int8``, whose
calibration images are ``cal_image_dir``). A ``.pth`` is exported into ``OUT/models/<name>/``
on the fly (dynamic height and width; each cell fixes its shape) and the files are reused by
the next run; an ``.onnx`` model runs at the precision it was exported with (the FP32 cells
of an INT8 ``X.int8.onnx`` run the FP32 sibling ``X.int8.fp32.onnx`` that bpnet export wrote
beside it). The OpenPose baseline (``openpose_coco``, :mod:`bpnet.models.factory`) has random
weights: its figures are speeds only, and its INT8 form quantizes every node (no accuracy to
keep), while bpnet's INT8 models keep the nodes that ``bpnet export``'s sensitivity pass keeps
in FP32.

Outputs (:mod:`bpnet.bench.report`): ``OUT/bench.json`` (every cell, the machine, the
settings), ``OUT/bench.md`` (the tables) and PNG plots (matplotlib, when installed): FPS per
input size per runtime, bpnet vs the baseline, and AP vs FPS when APs are given (``--ap``).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from bpnet.bench.report import render_markdown, size_text, write_report
from bpnet.config import load_experiment_spec
from bpnet.config.inference import InferenceSpec
from bpnet.errors import BpnetError
from bpnet.io import image_files

# runtime name -> (engine, precision of the model it runs, OpenVINO's precision hint)
RUNTIMES: dict[str, tuple[str, str, str]] = {
    "torch": ("PyTorch", "fp32", ""),
    "ort": ("ONNX Runtime", "fp32", ""),
    "ort-int8": ("ONNX Runtime", "int8", ""),
    "openvino": ("OpenVINO", "fp32", "f32"),
    "openvino-int8": ("OpenVINO", "int8", "f32"),
    # OpenVINO's own default on CPUs with AVX-512 BF16 / AMX: FP32 layers in bfloat16
    "openvino-bf16": ("OpenVINO", "fp32", "bf16"),
}
DEFAULT_RUNTIMES = ("torch", "ort", "ort-int8", "openvino", "openvino-int8")
DEFAULT_SIZES = ((224, 320), (288, 384), (320, 448), (368, 656))  # TAO's and OpenPose's sizes
# the OpenPose baseline: CMU's COCO network exactly (docs: openpose_coco_layers.md)
BASELINES = {
    "openpose_coco": [
        "model.backbone_attributes.architecture=openpose",
        "model.backbone_attributes.mtype=openpose_coco",
        "model.stages=6",
    ]
}
AP_TOLERANCE = 0.01  # "an equal AP": within one AP point of the best AP given for the model
CALIBRATION_BATCHES = 8  # images (batches of 1) an on-the-fly INT8 export calibrates on


@dataclass
class BenchModel:
    """One model of the run and the files each runtime reads.

    Attributes:
        label: its name in the tables (the file's stem, or the baseline's preset).
        path: the file given (the baseline: its checkpoint in ``OUT/models``).
        checkpoint: the ``.pth`` PyTorch runs (None for an ``.onnx`` model).
        onnx: precision (``fp32``, ``int8``) -> the ``.onnx`` file ONNX Runtime and OpenVINO run.
        baseline: True for the model the ratios are taken against.
        note: what the tables say about it (random weights, ...).
        random: random weights (the preset baseline): INT8 without the sensitivity pass.
    """

    label: str
    path: Path
    checkpoint: Path | None = None
    onnx: dict[str, Path] = field(default_factory=dict)
    baseline: bool = False
    note: str = ""
    random: bool = False
    loaded: dict = field(default_factory=dict, repr=False)  # file -> LoadedModel

    def load(self, path: Path):
        """:func:`~bpnet.inference.runtime.load_model` of one of its files, loaded once (a
        checkpoint is shared by all its PyTorch cells)."""
        from bpnet.inference.runtime import load_model

        if path not in self.loaded:
            self.loaded[path] = load_model(path)
        return self.loaded[path]

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "path": str(self.path),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "onnx": {k: str(v) for k, v in self.onnx.items()},
            "baseline": self.baseline,
            "note": self.note,
        }


@dataclass(frozen=True)
class Cell:
    """One timed configuration; ``kind`` is ``network`` or ``end_to_end`` (batch 1)."""

    model: str
    size: tuple[int, int]
    runtime: str
    batch: int = 1
    kind: str = "network"


def bench_models(
    models: list[Path],
    out: str | os.PathLike,
    *,
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES,
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES,
    batches: tuple[int, ...] = (1, 4),
    rounds: int = 5,
    warmup: int = 2,
    baseline: str | None = "openpose_coco",
    ap: dict[str, float] | None = None,
    end_to_end: bool = False,
    cal_image_dir: Path | None = None,
    threads: int | None = None,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> dict:
    """Time every (model, size, runtime, batch) cell, interleaved; return what
    ``bench.json`` holds (:func:`~bpnet.bench.report.write_report` writes it with the table and
    the plots).

    Args:
        models: ``.pth`` checkpoints or exported ``.onnx`` files.
        out: the results folder; exported models go to ``out/models/<name>/`` and are reused.
        sizes: network inputs (height, width).
        runtimes: names of :data:`RUNTIMES`.
        batches: batch sizes of the network cells.
        rounds: timed rounds (each calls every cell once).
        warmup: untimed calls of each cell first.
        baseline: ``openpose_coco`` (built with random weights), a model file, or None.
        ap: ``name`` or ``name:runtime`` -> COCO AP; ``name`` alone applies to the model's FP32
            runtimes (they give the same maps), INT8 needs its own entry.
        end_to_end: also time pixels -> people per model, size and runtime (batch 1; not the
            baseline, whose random maps would time a meaningless decode).
        cal_image_dir: pictures for on-the-fly INT8 exports and for the end-to-end picture;
            without them INT8 cells of ``.pth`` models are skipped (said in the notes) and the
            end-to-end picture is a synthetic one.
        threads: threads of every runtime (None: PyTorch's count, ``torch.get_num_threads()``).
        seed: order of the cells within each round.
        say: progress lines.

    Returns:
        ``{"machine", "settings", "models", "notes", "cells", "end_to_end", "best"}``.

    Raises:
        BpnetError: an unknown runtime, a bad size, batch or AP name, a missing model file.
    """
    out = Path(out)
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise BpnetError(f"--runtimes {','.join(unknown)}: choose from {', '.join(RUNTIMES)}")
    if rounds < 1 or warmup < 0 or not batches or min(batches) < 1:
        raise BpnetError(f"rounds {rounds}, warm-up {warmup}, batches {batches}: must be >= 1")
    threads = threads or torch.get_num_threads()
    notes: list[str] = []
    if any(RUNTIMES[r][0] == "OpenVINO" for r in runtimes) and not _has_openvino():
        notes.append("OpenVINO is not installed (pip install 'bpnet[openvino]'): no OpenVINO cells")
        runtimes = tuple(r for r in runtimes if RUNTIMES[r][0] != "OpenVINO")
    if cal_image_dir is None and any(RUNTIMES[r][1] == "int8" for r in runtimes):
        notes.append("no --cal_image_dir: no INT8 cells for .pth models (nothing to calibrate on)")
    work = out / "models"
    bench = [_describe(Path(m)) for m in models]
    if baseline:
        bench.append(_describe_baseline(baseline, work, say))
    _unique_labels(bench)
    ap = _check_ap(ap or {}, bench)
    for model in bench:
        if model.checkpoint is not None:
            _export(model, work / model.label, runtimes, cal_image_dir, say)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runners, e2e_runners = {}, {}
        for model in bench:
            for size in sizes:
                for runtime in runtimes:
                    for batch in batches:
                        cell = Cell(model.label, size, runtime, batch)
                        run = _network_runner(model, cell, threads, notes)
                        if run is not None:
                            runners[cell] = run
                    if end_to_end and not model.baseline:
                        cell = Cell(model.label, size, runtime, 1, "end_to_end")
                        run = _end_to_end_runner(model, cell, threads, cal_image_dir, work, notes)
                        if run is not None:
                            e2e_runners[cell] = run
        count = len(runners) + len(e2e_runners)
        say(f"timing {count} cells: {rounds} rounds after {warmup} warm-up calls")
        times = time_interleaved({**runners, **e2e_runners}, rounds, warmup, seed=seed)
    finally:
        torch.set_num_threads(previous)
    cells = [_cell_row(cell, times[cell], model_ap(ap, cell)) for cell in runners]
    _add_ratios(cells, next((m.label for m in bench if m.baseline), None))
    e2e = [_e2e_row(cell, times[cell], e2e_runners[cell]) for cell in e2e_runners]
    return {
        "machine": machine_info(threads),
        "settings": {
            "sizes": [list(s) for s in sizes],
            "runtimes": list(runtimes),
            "batches": list(batches),
            "rounds": rounds,
            "warmup": warmup,
            "ap_tolerance": AP_TOLERANCE,
            "baseline": next((m.label for m in bench if m.baseline), None),
            "timed": "network only: one prepared input per call (no image decoding, warping "
            "or people decoding); median over interleaved rounds",
        },
        "models": [m.as_dict() for m in bench],
        "ap": ap,
        "notes": notes,
        "cells": cells,
        "end_to_end": e2e,
        "best": best_runtimes(cells),
    }


def time_interleaved(
    runners: dict,
    rounds: int,
    warmup: int,
    *,
    seed: int = 0,
    slow: Collection = (),
    slow_every: int = 1,
) -> dict[object, list[float]]:
    """Milliseconds of each call: ``warmup`` untimed calls of every runner, then ``rounds``
    rounds that call every runner once, in a new random order each round (so a slow spell of
    the machine, or the cache a runner leaves behind, falls on all of them alike). A runner
    in ``slow`` (OpenPose: over a second a frame on a CPU) runs in every ``slow_every``-th
    round only, the first included."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    keys = list(runners)
    times: dict[object, list[float]] = {key: [] for key in keys}
    rng = np.random.default_rng(seed)
    for round_index in range(rounds):
        for index in rng.permutation(len(keys)):
            key = keys[index]
            if key in slow and round_index % slow_every:
                continue
            start = time.perf_counter()
            runners[key]()
            times[key].append(1000.0 * (time.perf_counter() - start))
    return times


def model_ap(ap: dict[str, float], cell: Cell) -> float | None:
    """The AP given for a cell: ``name:runtime``, else ``name`` for an FP32 runtime."""
    if f"{cell.model}:{cell.runtime}" in ap:
        return ap[f"{cell.model}:{cell.runtime}"]
    if RUNTIMES[cell.runtime][1] == "fp32" and RUNTIMES[cell.runtime][2] != "bf16":
        return ap.get(cell.model)
    return None


def best_runtimes(cells: list[dict]) -> list[dict]:
    """Per model and size (batch 1): the fastest runtime among those whose AP is known and
    within :data:`AP_TOLERANCE` of the model's best known AP."""
    groups: dict[tuple, list[dict]] = {}
    for row in cells:
        if row["batch"] == 1 and row["ap"] is not None:
            groups.setdefault((row["model"], tuple(row["size"])), []).append(row)
    best = []
    for (model, size), rows in groups.items():
        top = max(r["ap"] for r in rows)
        fair = [r for r in rows if r["ap"] >= top - AP_TOLERANCE]
        pick = min(fair, key=lambda r: r["ms_per_frame"])
        best.append(
            {
                "model": model,
                "size": list(size),
                "runtime": pick["runtime"],
                "fps": pick["fps"],
                "ap": pick["ap"],
                "candidates": sorted(r["runtime"] for r in fair),
                "known_ap": sorted(r["runtime"] for r in rows),
            }
        )
    return best


def machine_info(threads: int) -> dict:
    """CPU model, cores, the SIMD extensions that decide INT8 / BF16 speed, versions."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    import onnxruntime

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "isa": [f for f in wanted if f in flags],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": None,
    }
    if _has_openvino():
        import openvino

        info["openvino"] = openvino.__version__.split("-")[0]
    return info


# models and their files ----------------------------------------------------------------------


def _describe(path: Path) -> BenchModel:
    """A model file as the run sees it (its exports come later, from :func:`_export`)."""
    from bpnet.inference.runtime import ONNX_SUFFIXES, load_model
    from bpnet.models.checkpoint import SUFFIXES as TORCH_SUFFIXES

    if not path.is_file():
        raise BpnetError(f"{path}: model file not found; check the path")
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        data_type = load_model(path).data_type
        model = BenchModel(path.stem.removesuffix(f".{data_type}"), path, onnx={data_type: path})
        # bpnet export --data_type int8 writes the FP32 model it quantized beside it
        sibling = path.with_suffix(".fp32" + path.suffix)
        if data_type == "int8" and sibling.is_file():
            model.onnx["fp32"] = sibling
        return model
    if suffix not in TORCH_SUFFIXES:
        raise BpnetError(f"{path}: bench model times .pth checkpoints and .onnx files")
    return BenchModel(path.stem, path, checkpoint=path)


def _describe_baseline(baseline: str, work: Path, say) -> BenchModel:
    """The baseline: a preset of :data:`BASELINES` built with random weights (saved once into
    ``work``), or a model file."""
    if baseline not in BASELINES:
        return replace(_describe(Path(baseline)), baseline=True)
    from bpnet.models import build_model
    from bpnet.models.checkpoint import save_checkpoint
    from bpnet.pose import load_pose_config

    path = work / baseline / f"{baseline}.pth"
    if not path.is_file():
        say(f"building {baseline} with random weights (speed only)")
        spec = load_experiment_spec(None, BASELINES[baseline])
        pose = load_pose_config()
        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, build_model(spec.model, pose).eval(), spec=spec, pose=pose)
    note = "random weights: speed only; INT8 with every node quantized"
    return BenchModel(baseline, path, checkpoint=path, baseline=True, note=note, random=True)


def _export(
    model: BenchModel, folder: Path, runtimes: tuple[str, ...], cal_image_dir: Path | None, say
) -> None:
    """The ONNX files a checkpoint's runtimes need, written by bpnet export's own path: FP32
    with dynamic height and width, INT8 calibrated on ``cal_image_dir`` with the sensitivity
    pass (none for random weights: no accuracy to keep, every node INT8). A file from an
    earlier run is reused when it was exported from the same checkpoint, after its last
    change."""
    from bpnet.export import ExportOptions, run_export

    wanted = {RUNTIMES[r][1] for r in runtimes if RUNTIMES[r][0] != "PyTorch"}
    if cal_image_dir is None:
        wanted.discard("int8")
    for precision in sorted(wanted):
        path = folder / f"{precision}.onnx"
        if not _exported_from(path, model.checkpoint):
            say(f"exporting {model.label} ({precision}) to {path}")
            int8 = precision == "int8"
            count = len(image_files(cal_image_dir)) if int8 else 1
            options = ExportOptions(
                model=model.checkpoint,
                output=path,
                data_type=precision,
                cal_image_dir=cal_image_dir if int8 else None,
                batches=max(1, min(CALIBRATION_BATCHES, count)),
                sensitivity="off" if model.random else "auto",
                force=True,
            )
            result = run_export(options, say=lambda _: None)
            if int8:  # its FP32 sibling is fp32.onnx again: spare the disk
                Path(result["files"]["fp32_onnx"]).unlink(missing_ok=True)
        model.onnx[precision] = path


def _exported_from(path: Path, checkpoint: Path) -> bool:
    from bpnet.inference import model_io as mio
    from bpnet.inference.onnx_source import read_onnx_metadata

    if not path.is_file() or path.stat().st_mtime < checkpoint.stat().st_mtime:
        return False
    try:
        return read_onnx_metadata(path).get(mio.KEY_SOURCE) == str(checkpoint)
    except BpnetError:
        return False


def _unique_labels(models: list[BenchModel]) -> None:
    seen: dict[str, int] = {}
    for model in models:
        count = seen.get(model.label, 0)
        seen[model.label] = count + 1
        if count:
            model.label = f"{model.label}_{count + 1}"


def _check_ap(ap: dict[str, float], models: list[BenchModel]) -> dict[str, float]:
    labels = {m.label for m in models}
    for name, value in ap.items():
        label, _, runtime = name.partition(":")
        if label not in labels or (runtime and runtime not in RUNTIMES):
            raise BpnetError(
                f"--ap {name}={value}: name a model ({', '.join(sorted(labels))}) or "
                f"MODEL:RUNTIME (runtimes: {', '.join(RUNTIMES)})"
            )
        if not 0.0 <= value <= 1.0:
            raise BpnetError(f"--ap {name}={value}: COCO AP is in 0..1 (56.1 AP is 0.561)")
    return dict(ap)


# runners ---------------------------------------------------------------------------------------


def _network_runner(
    model: BenchModel, cell: Cell, threads: int, notes: list[str]
) -> Callable | None:
    """One forward of ``cell``'s network on a prepared input, or None (with a note) when the
    model has no file for the runtime or does not take the size."""
    from bpnet.inference.model_io import network_input, torch_input

    engine, precision, hint = RUNTIMES[cell.runtime]
    rgb = np.random.default_rng(0).integers(0, 256, (cell.batch, *cell.size, 3), np.uint8)
    where = f"{cell.model} {cell.runtime} {cell.size[0]}x{cell.size[1]}"
    if engine == "PyTorch":
        if model.checkpoint is None:
            _note(notes, f"{model.label}: an .onnx model: no PyTorch cells")
            return None
        from bpnet.inference.torch_source import TorchSource

        loaded = model.load(model.checkpoint)
        source = TorchSource(loaded.model, _normalization(loaded))
        if not _fits(cell.size, source.input_multiple, where, notes):
            return None
        x = torch.from_numpy(torch_input(rgb, _normalization(loaded)))
        return lambda: source.forward(x)
    path = model.onnx.get(precision)
    if path is None:
        have = ", ".join(model.onnx) or "none"
        _note(
            notes, f"{model.label}: no {precision} ONNX model (have: {have}): no {precision} cells"
        )
        return None
    loaded = model.load(path)
    io_ = loaded.io
    if not _fits(cell.size, io_.size_multiple, where, notes):
        return None
    if io_.size is not None and tuple(io_.size) != cell.size:
        _note(notes, f"{where}: the model's input is fixed at {io_.size[0]}x{io_.size[1]}: skipped")
        return None
    feed = {io_.input_name: network_input(rgb, io_, _normalization(loaded))}
    if engine == "ONNX Runtime":
        from bpnet.inference.onnx_source import make_session

        dims = {"batch": cell.batch, "height": cell.size[0], "width": cell.size[1]}
        # idle worker threads asleep: spinning ones would take the cores from the next cell
        session = make_session(path, threads, spin=False, dims=dims)
        return lambda: session.run(None, feed)
    from bpnet.inference.openvino_source import compile_openvino

    shape = feed[io_.input_name].shape
    compiled = compile_openvino(path, threads, precision=hint, shape=shape, io=io_)
    request = compiled.create_infer_request()
    return lambda: request.infer(feed)


class _EndToEnd:
    """Pixels -> people for one picture (pre-processing, network, fusion, decoding), keeping
    the time of each part and the people found."""

    def __init__(self, source, pose, image: np.ndarray, size: tuple[int, int]):
        from bpnet.decode import DecoderParams
        from bpnet.inference.pipeline import input_geometry

        self.source, self.pose, self.image = source, pose, image
        spec = InferenceSpec(input_shape=size, keep_aspect_ratio_mode="pad_image_input")
        height, width = image.shape[:2]
        self.inputs = input_geometry(width, height, spec, source.input_multiple)
        self.params = DecoderParams()
        self.parts: list[dict[str, float]] = []  # per call: seconds of "maps" and "decode"
        self.people = 0

    def __call__(self) -> None:
        from bpnet.inference.pipeline import predict_people

        seconds: dict[str, float] = {}
        found = predict_people(
            self.image, self.source, self.pose, self.params, self.inputs, seconds
        )
        self.parts.append(seconds)
        self.people = len(found)


def _end_to_end_runner(
    model: BenchModel,
    cell: Cell,
    threads: int,
    cal_image_dir: Path | None,
    work: Path,
    notes: list[str],
) -> _EndToEnd | None:
    """Pixels -> people with ``cell``'s runtime, or None when the network cell has none."""
    engine, precision, hint = RUNTIMES[cell.runtime]
    path = model.checkpoint if engine == "PyTorch" else model.onnx.get(precision)
    if path is None:
        return None  # the network cell's note says why
    loaded = model.load(path)
    normalization = _normalization(loaded)
    if engine == "PyTorch":
        from bpnet.inference.torch_source import TorchSource

        source = TorchSource(loaded.model, normalization)
    elif engine == "ONNX Runtime":
        from bpnet.inference.onnx_source import OnnxSource

        source = OnnxSource(path, loaded.io, normalization, threads=threads, spin=False)
    else:
        from bpnet.inference.openvino_source import OpenVinoSource

        # compiled for the cell's one shape, as the network cells are (dynamic: 25% slower)
        shape = (1, *cell.size, 3) if loaded.io.layout == "NHWC" else (1, 3, *cell.size)
        source = OpenVinoSource(
            path, loaded.io, normalization, threads=threads, precision=hint, shape=shape
        )
    where = f"{cell.model} {cell.runtime} {cell.size[0]}x{cell.size[1]} end-to-end"
    if not _fits(cell.size, source.input_multiple, where, notes):
        return None
    return _EndToEnd(source, loaded.pose, _picture(cal_image_dir, work), cell.size)


def _picture(cal_image_dir: Path | None, work: Path) -> np.ndarray:
    """The end-to-end picture: the first calibration image, else a synthetic one."""
    import cv2

    if cal_image_dir is None:
        from bpnet.data.synth import generate_dataset

        folder = work / "synthetic_picture"
        if not (folder / "val").is_dir():
            generate_dataset(folder, 0, 1, seed=1, force=True)
        cal_image_dir = folder / "val"
    first = image_files(cal_image_dir)[0]
    image = cv2.imread(str(first))
    if image is None:
        raise BpnetError(f"{first}: not a readable image; remove it from --cal_image_dir")
    return image


def _normalization(loaded):
    return loaded.train_spec.dataloader.normalization_params


def _fits(size: tuple[int, int], multiple: int, where: str, notes: list[str]) -> bool:
    if size[0] % multiple or size[1] % multiple:
        _note(notes, f"{where}: input sides must be multiples of {multiple}: skipped")
        return False
    return True


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


# rows ------------------------------------------------------------------------------------------


def _cell_row(cell: Cell, times: list[float], ap: float | None) -> dict:
    engine, precision, hint = RUNTIMES[cell.runtime]
    ms = statistics.median(times)
    per_frame = ms / cell.batch
    return {
        "model": cell.model,
        "size": list(cell.size),
        "runtime": cell.runtime,
        "engine": engine,
        "precision": "bf16" if hint == "bf16" else precision,
        "batch": cell.batch,
        "ms": round(ms, 3),
        "ms_per_frame": round(per_frame, 3),
        "fps": round(1000.0 / per_frame, 2),
        "rounds": len(times),
        "spread": round((max(times) - min(times)) / ms, 3),
        "ap": ap,
        "vs_baseline": None,
    }


def _add_ratios(cells: list[dict], baseline: str | None) -> None:
    """``vs_baseline``: how many times faster than the baseline in the same size, runtime and
    batch (the baseline's own rows: 1.0)."""
    if baseline is None:
        return
    base = {
        (tuple(r["size"]), r["runtime"], r["batch"]): r["ms_per_frame"]
        for r in cells
        if r["model"] == baseline
    }
    for row in cells:
        ref = base.get((tuple(row["size"]), row["runtime"], row["batch"]))
        if ref is not None:
            row["vs_baseline"] = round(ref / row["ms_per_frame"], 2)


def _e2e_row(cell: Cell, times: list[float], run: _EndToEnd) -> dict:
    ms = statistics.median(times)
    timed = run.parts[-len(times) :]  # the calls of the timed rounds, not the warm-up's
    return {
        "model": cell.model,
        "size": list(cell.size),
        "runtime": cell.runtime,
        "ms_per_frame": round(ms, 3),
        "fps": round(1000.0 / ms, 2),
        "maps_ms": round(1000.0 * statistics.median(p.get("maps", 0.0) for p in timed), 3),
        "decode_ms": round(1000.0 * statistics.median(p.get("decode", 0.0) for p in timed), 3),
        "people": run.people,
    }


# command ---------------------------------------------------------------------------------------


def bench_model_command(
    models: list[Path],
    results_dir: Path,
    sizes: str = ",".join(size_text(s) for s in DEFAULT_SIZES),
    runtimes: str = ",".join(DEFAULT_RUNTIMES),
    batch: str = "1,4",
    rounds: int = 5,
    baseline: str = "openpose_coco",
    ap: list[str] | None = None,
    end_to_end: bool = False,
    cal_image_dir: Path | None = None,
) -> str:
    """``bpnet bench model``: :func:`bench_models` with the command line's lists, then
    :func:`~bpnet.bench.report.write_report` into ``results_dir``. Returns the table and the
    files written.

    Args:
        sizes: ``HxW`` inputs, comma-separated.
        runtimes: names of :data:`RUNTIMES`, comma-separated.
        batch: batch sizes, comma-separated.
        baseline: ``openpose_coco``, a model file, or ``none``.
        ap: ``NAME=AP`` entries (NAME: a model's name, or ``NAME:RUNTIME``).

    Raises:
        BpnetError: a malformed size, batch or AP entry, or what :func:`bench_models` raises.
    """
    result = bench_models(
        models,
        results_dir,
        sizes=parse_sizes(sizes),
        runtimes=tuple(r.strip() for r in runtimes.split(",") if r.strip()),
        batches=tuple(_integer(b, "--batch") for b in batch.split(",") if b.strip()),
        rounds=rounds,
        baseline=None if baseline.lower() == "none" else baseline,
        ap=parse_ap(ap or []),
        end_to_end=end_to_end,
        cal_image_dir=cal_image_dir,
    )
    files = write_report(result, results_dir)
    written = "\n".join(f"  {role}: {path}" for role, path in files.items())
    return f"{render_markdown(result)}\nwritten:\n{written}"


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"288x384,368x656"`` -> ((288, 384), (368, 656)).

    Raises:
        BpnetError: an entry that is not HxW with positive integers.
    """
    sizes = []
    for item in text.split(","):
        height, _, width = item.strip().lower().partition("x")
        size = (_integer(height, "--sizes"), _integer(width, "--sizes"))
        sizes.append(size)
    if not sizes:
        raise BpnetError("--sizes: give at least one HxW, e.g. 288x384")
    return tuple(sizes)


def parse_ap(entries: list[str]) -> dict[str, float]:
    """``["tfpose=0.182", "tfpose:ort-int8=0.127"]`` -> {name: AP}.

    Raises:
        BpnetError: an entry without ``=`` or with a value that is not a number.
    """
    out = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise BpnetError(f"--ap {entry}: write NAME=AP or NAME:RUNTIME=AP, e.g. tfpose=0.182")
    return out


def _integer(text: str, option: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise BpnetError(f"{option}: {text!r} is not a positive integer (sizes are HxW, 288x384)")
    return value
