"""`bpnet export`: checkpoint -> ONNX (FP32 / FP16 / INT8), calibration files, TensorRT engine.

Every argument is checked, and every output path, before any work: a run that fails leaves
no file behind, and a run that succeeds wrote each file atomically. With a key (TAO's ``-k``)
the ONNX models are written encrypted (:mod:`bpnet.encryption`): bpnet's ``.etlt``, which
``bpnet evaluate / inference -k`` read. See docs/EXPORT.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np

from bpnet.config import load_experiment_spec
from bpnet.config.spec import STRIDE
from bpnet.encryption import encrypt
from bpnet.errors import BpnetError
from bpnet.export import calibration as cal
from bpnet.export.agreement import PoseAgreement
from bpnet.export.equalize import prepare_for_int8
from bpnet.export.int8 import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    TensorfileReader,
    calibrate_ranges,
    quantize_int8,
)
from bpnet.export.onnx_export import convert_fp16, export_onnx, save_onnx
from bpnet.export.sensitivity import (
    DEFAULT_MARGIN_DB,
    SENSITIVITY_MODES,
    find_sensitive_layers,
    manual_report,
)
from bpnet.export.tensorfile import TensorFile, read_tensorfile
from bpnet.export.trt_cache import DEFAULT_TRT_VERSION, write_cache
from bpnet.inference.model_io import ModelIO, maps_from_outputs, network_input, torch_input
from bpnet.io import check_output_dir, copy_all_atomic, staging_folder
from bpnet.models.checkpoint import SUFFIXES as CHECKPOINT_SUFFIXES
from bpnet.models.checkpoint import load_trained
from bpnet.pose import PoseConfig
from bpnet.progress import step_callback

CALIBRATION_SIZE = (288, 384)  # TAO's strict-mode size, for models with dynamic H and W


@dataclass(frozen=True)
class ExportOptions:
    """What ``bpnet export`` was asked for (TAO's option names, see the CLI's help).

    Attributes:
        model: the ``.pth`` checkpoint.
        output: the ``.onnx`` file to write (or ``.etlt`` with a ``key``).
        data_type: ``fp32``, ``fp16`` or ``int8``.
        experiment_spec: accepted for TAO compatibility; the checkpoint's stored spec is used.
        engine_file: also build a TensorRT engine here (needs tensorrt and a GPU).
        cal_image_dir: calibration images (INT8).
        cal_cache_file: the TensorRT calibration cache to write (INT8); default
            ``<output stem>.cal.bin``.
        cal_data_file: the calibration tensorfile: reused when it exists, written otherwise.
        batches: calibration batches.
        batch_size: images per calibration batch.
        input_dims: fixed (height, width) of the input; None makes both dynamic.
        data_format: ``channels_first`` (NCHW) or ``channels_last`` (NHWC) input and outputs.
        sdk_compatible: write the deployable model (raw pixels in, [PAF, heatmap] out).
        upsample_ratio: the deployable model's in-graph PAF upsampling.
        sdk_input_dtype: the deployable model's input type (``uint8`` or ``float32``).
        cal_method: ``minmax``, ``entropy`` or ``percentile``.
        reduce_range: 7-bit INT8 weights (for CPUs that saturate; see docs/EXPORT.md).
        equalize: ``on`` rewrites the FP32 graph before quantizing it, exactly, so that one
            INT8 scale per tensor fits (stage-input concats split, channel ranges equalized:
            :mod:`bpnet.export.equalize`); the INT8 model, its FP32 sibling, the calibration
            cache and an INT8 engine are all made from the rewritten graph. ``off`` quantizes
            the graph as exported.
        sensitivity: ``auto`` keeps in FP32 the nodes whose quantization alone costs the
            outputs more than ``sensitivity_margin`` dB of SQNR beyond the median node's, then
            whole blocks until the INT8 model's people agree with the FP32 model's
            (:mod:`bpnet.export.sensitivity`); ``off`` quantizes every node but ``keep_fp32``.
        sensitivity_margin: the ``auto`` rule's margin, in dB.
        keep_fp32: ONNX node names left in FP32 whatever the pass says.
        max_batch_size: the largest batch a TensorRT engine accepts.
        force: overwrite existing outputs (and rebuild an existing ``cal_data_file`` when
            ``cal_image_dir`` is given).
        key: TAO's ``-k``: the key of an encrypted checkpoint, and the ONNX models (the output
            and INT8's FP32 sibling) are encrypted with it; None writes them plain. The
            calibration files and a TensorRT engine stay plain, as TAO's do.
    """

    model: Path
    output: Path
    data_type: Literal["fp32", "fp16", "int8"] = "fp32"
    experiment_spec: Path | None = None
    engine_file: Path | None = None
    cal_image_dir: Path | None = None
    cal_cache_file: Path | None = None
    cal_data_file: Path | None = None
    batches: int = 10
    batch_size: int = 1
    input_dims: tuple[int, int] | None = None
    data_format: Literal["channels_first", "channels_last"] = "channels_last"  # TAO's default
    sdk_compatible: bool = False
    upsample_ratio: int = 4
    sdk_input_dtype: Literal["uint8", "float32"] = "uint8"
    cal_method: str = DEFAULT_CALIBRATION_METHOD
    reduce_range: bool = False
    equalize: Literal["on", "off"] = "on"
    sensitivity: Literal["auto", "off"] = "auto"
    sensitivity_margin: float = DEFAULT_MARGIN_DB
    keep_fp32: tuple[str, ...] = ()
    max_batch_size: int = 1
    force: bool = False
    key: str | None = None

    @property
    def cache_path(self) -> Path:
        return self.cal_cache_file or self.output.with_suffix(".cal.bin")

    @property
    def fp32_sibling(self) -> Path:
        """Where an INT8 export keeps the FP32 model it was quantized from (and its TensorRT
        cache belongs to)."""
        return self.output.with_suffix(".fp32" + self.output.suffix)


@dataclass(frozen=True)
class ExportPlan:
    """What the checks settled before any work.

    Attributes:
        trt_version: the TensorRT version the calibration cache is written for (the installed
            one when an engine is built).
        tensorfile: INT8 from an existing ``--cal_data_file``: its batches.
        images: INT8 from ``--cal_image_dir``: the images to pre-process (when no tensorfile).
    """

    trt_version: int = DEFAULT_TRT_VERSION
    tensorfile: TensorFile | None = None
    images: list[Path] | None = None


def run_export(options: ExportOptions, say: Callable[[str], None] = print) -> dict:
    """Export a checkpoint as the options say; return what was written.

    Returns:
        ``{"files": {...}, "io": ModelIO, "max_abs_diff": float, "int8_report": ...}`` where
        ``max_abs_diff`` compares the written ONNX model with PyTorch on one calibration-like
        input and ``int8_report`` is the INT8 sensitivity
        :class:`~bpnet.export.sensitivity.SensitivityReport` (None for FP32 / FP16).

    Raises:
        BpnetError: bad options, existing outputs without ``force``, too few calibration
            images, a damaged tensorfile, missing TensorRT (all before any file is written).
    """
    plan = _check(options)
    trained = load_trained(options.model, key=options.key)
    train_spec = trained.train_spec
    if options.experiment_spec is not None:
        given = load_experiment_spec(options.experiment_spec).dataloader.normalization_params
        if given != train_spec.dataloader.normalization_params:
            say(f"note: {options.model} stores its own spec; its normalisation is used, not -e's")
    for flags, needs in _unused_options(options):
        verb = "applies" if len(flags) == 1 else "apply"
        say(f"note: --{', --'.join(flags)} only {verb} to {needs}; ignored")
    with staging_folder("bpnet-export-") as tmp:
        # every output is staged here and moved into place only when all of them exist
        staged: dict[str, tuple[Path, Path]] = {}  # role -> (staged file, final path)

        def stage(role: str, final: Path) -> Path:
            staged[role] = (Path(tmp) / f"out-{role}{final.suffix}", final)
            return staged[role][0]

        fp32 = Path(tmp) / "model.fp32.onnx"
        int8_report = None
        io_ = export_onnx(
            trained.model,
            fp32,
            pose=trained.pose,
            train_spec=train_spec,
            size=options.input_dims,
            channels_last=options.data_format == "channels_last",
            sdk_compatible=options.sdk_compatible,
            upsample=options.upsample_ratio,
            sdk_input_dtype=options.sdk_input_dtype,
            source=str(options.model),
        )
        import onnx

        proto = onnx.load(str(fp32))
        metadata = {p.key: p.value for p in proto.metadata_props}
        onnx_out = stage("onnx", options.output)
        if options.data_type == "fp32":
            shutil.copyfile(fp32, onnx_out)
        elif options.data_type == "fp16":
            save_onnx(convert_fp16(proto), onnx_out)
        else:
            data = plan.tensorfile or _build_tensorfile(options, plan, stage, Path(tmp), say)
            reader = TensorfileReader(
                data, io_, train_spec.dataloader.normalization_params, options.batches
            )
            say(
                f"calibrating on {len(reader)} batches of {data.batch_size} "
                f"({data.size[0]}x{data.size[1]}, {options.cal_method})"
            )
            progress = step_callback("calibration batch", "batch", say)
            reader.rewind()
            batches = list(iter(reader.get_next, None))
            reader.rewind()
            if options.equalize == "on":
                # quantize (and calibrate, and build an INT8 engine from) an equivalent graph
                # whose every tensor fits one INT8 scale
                rewritten = fp32.with_name(f"{fp32.stem}.equalized.onnx")
                say(prepare_for_int8(fp32, rewritten, batches).line())
                fp32 = rewritten
            ranges = calibrate_ranges(fp32, reader, options.cal_method, progress=progress)
            write_cache(stage("cal_cache_file", options.cache_path), ranges, plan.trt_version)
            if options.sensitivity == "auto":
                say(
                    "INT8 sensitivity: quantizing each node alone (FP32 if its output SQNR is "
                    f"{options.sensitivity_margin:g} dB below the median node's), then each block"
                )
                agreement = _pose_agreement(fp32, batches, io_, trained.pose, say)
                floor = None
                if agreement is not None:
                    low, high = ranges[io_.input_name]
                    floor = agreement.noise_floor(fp32, (high - low) / 255)
                    say(
                        f"block pass: blocks stay FP32 until the INT8 model's people agree with "
                        f"FP32's as well as FP32's own on inputs with an INT8 step of noise: "
                        f"agreement AP {floor:.3f}"
                    )
                int8_report = find_sensitive_layers(
                    fp32,
                    reader,
                    ranges,
                    margin_db=options.sensitivity_margin,
                    keep_fp32=options.keep_fp32,
                    reduce_range=options.reduce_range,
                    channel_axis=-1 if io_.layout == "NHWC" else 1,
                    progress=step_callback("sensitivity node", "node", say),
                    block_progress=step_callback("sensitivity block", "block", say),
                    score=agreement,
                    block_threshold=floor or 0.0,
                    block_scored="agreement AP",
                )
            else:
                int8_report = manual_report(fp32, options.keep_fp32)
            for line in int8_report.lines():
                say(line)
            quantize_int8(
                fp32,
                onnx_out,
                ranges,
                reader,
                reduce_range=options.reduce_range,
                nodes_to_exclude=int8_report.kept_fp32,
                metadata=int8_report.metadata(),
            )
            shutil.copyfile(fp32, stage("fp32_onnx", options.fp32_sibling))
        diff = _compare_with_torch(trained.model, onnx_out, io_, train_spec)
        if options.engine_file is not None:
            from bpnet.export.tensorrt_engine import build_engine
            from bpnet.inference.tensorrt_source import engine_metadata_path

            cache = staged.get("cal_cache_file", (None,))[0]
            engine = stage("engine_file", options.engine_file)
            build_engine(
                fp32,
                engine,
                io_,
                metadata,
                data_type=options.data_type,
                cache_file=cache,
                opt_size=options.input_dims or CALIBRATION_SIZE,
                max_batch_size=options.max_batch_size,
            )
            # the metadata file build_engine writes beside the engine travels with it
            staged["engine_metadata"] = (
                engine_metadata_path(engine),
                engine_metadata_path(options.engine_file),
            )
        if options.key is not None:
            for role in ("onnx", "fp32_onnx"):  # the models; cache, tensorfile, engine: plain
                if role in staged:
                    plain, final = staged[role]
                    sealed = plain.with_name(f"{plain.name}.encrypted")
                    sealed.write_bytes(encrypt(plain.read_bytes(), options.key, str(final)))
                    staged[role] = (sealed, final)
        copy_all_atomic(staged.values())
        files = {role: str(final) for role, (_, final) in staged.items()}
    if options.data_type == "int8" and options.cal_data_file is not None:
        files.setdefault("cal_data_file", str(options.cal_data_file))  # reused as it was
    return {"files": files, "io": io_, "max_abs_diff": diff, "int8_report": int8_report}


def export_command(
    input_dims: str | None = None, keep_fp32: str = "", backend: str = "onnx", **options
) -> str:
    """``bpnet export``: :func:`run_export` with TAO's options; ``options`` are the fields of
    :class:`ExportOptions`.

    Args:
        input_dims: ``H,W,3`` (HWC), ``3,H,W`` (CHW, as TAO writes it for channels_first) or
            ``H,W``; None: dynamic height and width.
        keep_fp32: ONNX node names, comma-separated.
        backend: TAO's ``onnx`` or ``tfonnx``, accepted: both give the same model.

    Returns:
        A line with the model's input and the ONNX Runtime / PyTorch difference, then the
        files written, one a line.

    Raises:
        BpnetError: ``input_dims`` in none of those forms, or what :func:`run_export` raises.
    """
    names = tuple(name.strip() for name in keep_fp32.split(",") if name.strip())
    dims = None if input_dims is None else parse_input_dims(input_dims)
    asked = ExportOptions(input_dims=dims, keep_fp32=names, **options)
    result = run_export(asked)
    io_ = result["io"]
    size = "dynamic" if io_.size is None else f"{io_.size[0]}x{io_.size[1]}"
    lines = [
        f"exported {asked.model} ({asked.data_type}, input {io_.input_name} {io_.layout} "
        f"{io_.input_dtype} {size}); max |ONNX Runtime - PyTorch| on a test input: "
        f"{result['max_abs_diff']:.2e}"
    ]
    lines += [f"  {what}: {path}" for what, path in result["files"].items()]
    return "\n".join(lines)


def _pose_agreement(
    fp32: Path, inputs: list[dict], io_: ModelIO, pose: PoseConfig, say
) -> PoseAgreement | None:
    """The block pass's score: agreement with the FP32 model's people on every calibration
    batch (``inputs``); None (no block pass) when the FP32 model finds nobody on them."""
    agreement = PoseAgreement(fp32, inputs, io_, pose)
    if agreement.num_people == 0:
        say(
            "note: the FP32 model finds no people on the calibration pictures, so the block pass "
            "has nothing to compare; only the per-node pass runs (calibrate on pictures of people)"
        )
        return None
    say(f"block pass: the FP32 model finds {agreement.num_people} people on {len(inputs)} batches")
    return agreement


def parse_input_dims(text: str) -> tuple[int, int]:
    """``--input_dims`` as (H, W): from ``H,W,3``, ``3,H,W`` or ``H,W`` (``x`` also separates).

    Raises:
        BpnetError: any other text.
    """
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) == 2 or (len(values) == 3 and values[2] == 3):
        return values[0], values[1]
    if len(values) == 3 and values[0] == 3:
        return values[1], values[2]
    raise BpnetError(f"--input_dims: expected H,W,3 or 3,H,W (e.g. 288,384,3), got {text!r}")


_INT8_ONLY = (
    "equalize",
    "cal_image_dir",
    "cal_cache_file",
    "cal_data_file",
    "batches",
    "batch_size",
    "cal_method",
    "reduce_range",
    "sensitivity",
    "sensitivity_margin",
    "keep_fp32",
)
_DEPLOYABLE_ONLY = ("upsample_ratio", "sdk_input_dtype")


def _unused_options(options: ExportOptions) -> list[tuple[list[str], str]]:
    """Options set away from their defaults that this export does not use, and what they need."""
    defaults = {f.name: f.default for f in fields(ExportOptions)}
    unused = []
    for names, used, needs in (
        (_INT8_ONLY, options.data_type == "int8", "--data_type int8"),
        (_DEPLOYABLE_ONLY, options.sdk_compatible, "--sdk_compatible_model"),
    ):
        changed = [n for n in names if getattr(options, n) != defaults[n]]
        if changed and not used:
            unused.append((changed, needs))
    return unused


def _check(options: ExportOptions) -> ExportPlan:
    """Validate everything that can be validated before work; return what it settled."""
    suffix = options.output.suffix.lower()
    if suffix == ".etlt" and options.key is None:
        raise BpnetError(
            f"-o {options.output}: an .etlt model is encrypted; pass the key with -k KEY, or "
            "name the output .onnx"
        )
    if suffix not in (".onnx", ".etlt"):
        raise BpnetError(f"-o {options.output}: the output must be an .onnx file (.etlt with -k)")
    if not options.model.is_file():
        raise BpnetError(f"{options.model}: model file not found; check -m")
    if options.model.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise BpnetError(f"{options.model}: bpnet export starts from a .pth checkpoint")
    if options.data_type not in ("fp32", "fp16", "int8"):
        raise BpnetError(f"--data_type {options.data_type}: use fp32, fp16 or int8")
    if options.cal_method not in CALIBRATION_METHODS:
        raise BpnetError(
            f"--cal_method {options.cal_method}: use one of {', '.join(CALIBRATION_METHODS)}"
        )
    if options.sensitivity not in SENSITIVITY_MODES:
        raise BpnetError(f"--sensitivity {options.sensitivity}: use auto or off")
    margin = options.sensitivity_margin
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise BpnetError(
            f"--sensitivity_margin {margin}: use a number of dB >= 0 "
            f"(default {DEFAULT_MARGIN_DB:g})"
        )
    if options.input_dims is not None:
        for side, name in zip(options.input_dims, ("height", "width"), strict=True):
            if side <= 0 or side % STRIDE:
                raise BpnetError(
                    f"--input_dims: {name} {side} must be a positive multiple of {STRIDE}"
                )
    if options.max_batch_size < 1:
        raise BpnetError(f"--max_batch_size must be >= 1, got {options.max_batch_size}")
    outputs = [options.output]
    if options.data_type == "int8":
        outputs += [options.cache_path, options.fp32_sibling]
    if options.engine_file is not None:
        from bpnet.inference.tensorrt_source import engine_metadata_path

        outputs += [options.engine_file, engine_metadata_path(options.engine_file)]
    if len(set(outputs)) != len(outputs):
        raise BpnetError(f"two outputs share a path: {', '.join(map(str, outputs))}")
    existing = [p for p in outputs if p.exists()]
    if existing and not options.force:
        raise BpnetError(f"{existing[0]} exists; pass --force to overwrite it")
    folders = {p.parent for p in outputs}
    if options.data_type == "int8" and options.cal_data_file is not None:
        folders.add(options.cal_data_file.parent)
    for folder in sorted(folders):
        check_output_dir(folder)  # now, not after the calibration
    trt_version = DEFAULT_TRT_VERSION
    if options.engine_file is not None:
        from bpnet.export.tensorrt_engine import trt_version_number
        from bpnet.inference.tensorrt_source import import_tensorrt

        trt_version = trt_version_number(import_tensorrt("--engine_file"))
    if options.data_type != "int8":
        return ExportPlan(trt_version)
    for name in ("batches", "batch_size"):
        if getattr(options, name) < 1:
            raise BpnetError(f"--{name} {getattr(options, name)}: must be >= 1")
    data_file = options.cal_data_file
    rebuild = options.force and options.cal_image_dir is not None
    if data_file is not None and data_file.exists() and not rebuild:
        data = read_tensorfile(data_file)
        _check_tensorfile(data, options)
        return ExportPlan(trt_version, tensorfile=data)
    if options.cal_image_dir is None:
        where = f"{data_file} does not exist" if data_file else "no --cal_data_file was given"
        raise BpnetError(
            f"--data_type int8 needs calibration images: {where}; pass --cal_image_dir"
        )
    images = cal.choose_calibration_images(
        options.cal_image_dir, options.batches, options.batch_size
    )
    return ExportPlan(trt_version, images=images)


def _check_tensorfile(data: TensorFile, options: ExportOptions) -> None:
    size = options.input_dims
    if size is not None and data.size != tuple(size):
        raise BpnetError(
            f"{data.path}: holds {data.size[0]}x{data.size[1]} images but --input_dims is "
            f"{size[0]}x{size[1]}; rebuild it (--force with --cal_image_dir) or match the dims"
        )
    if data.batch_size != options.batch_size or data.num_batches < options.batches:
        raise BpnetError(
            f"{data.path}: holds {data.num_batches} batches of {data.batch_size}, but "
            f"--batches {options.batches} --batch_size {options.batch_size} was asked; match "
            "them or rebuild the file (--force with --cal_image_dir)"
        )


def _build_tensorfile(
    options: ExportOptions,
    plan: ExportPlan,
    stage: Callable[[str, Path], Path],
    tmp: Path,
    say: Callable[[str], None],
) -> TensorFile:
    if options.cal_data_file is not None:
        path = stage("cal_data_file", options.cal_data_file)
    else:
        path = tmp / "calibration.tensor"
    size = options.input_dims or CALIBRATION_SIZE
    say(f"pre-processing {len(plan.images)} calibration images from {options.cal_image_dir}")
    cal.build_calibration_data(plan.images, path, size, options.batch_size)
    return read_tensorfile(path)


def _compare_with_torch(model, onnx_path: Path, io_: ModelIO, train_spec) -> float:
    """Max |ONNX Runtime - PyTorch| over the decoded stage's maps, on one random image."""
    import torch

    from bpnet.inference.onnx_source import make_session
    from bpnet.inference.torch_source import TorchSource

    size = io_.size or CALIBRATION_SIZE
    rgb = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    normalization = train_spec.dataloader.normalization_params
    session = make_session(onnx_path)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {io_.input_name: network_input(rgb, io_, normalization)})
    heatmaps, pafs = maps_from_outputs(dict(zip(names, values, strict=True)), io_)
    x = torch.from_numpy(torch_input(rgb, normalization))
    ref_heatmaps, ref_pafs = TorchSource(model, normalization).run(x)
    return float(max(np.abs(heatmaps - ref_heatmaps).max(), np.abs(pafs - ref_pafs).max()))
