"""`bpnet evaluate`: people for every image of a split, COCO keypoint AP, result files."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from bpnet.config import (
    load_experiment_spec,
    load_inference_spec,
    resolve_pose_config,
    save_spec,
)
from bpnet.config.inference import InferenceSpec
from bpnet.data.coco import build_records, load_coco_split
from bpnet.errors import BpnetError, DatasetError
from bpnet.evaluate.coco_eval import METRIC_NAMES, coco_keypoint_ap, format_ap, oks_sigmas_for
from bpnet.evaluate.oracle import OracleSource
from bpnet.inference.pipeline import MapSource, Predictor
from bpnet.io import check_output_dir, read_json, write_json_atomic, write_text_atomic
from bpnet.pose import PoseConfig
from bpnet.progress import progress

DETECTIONS_FILE = "detections_coco_format.json"


@dataclass(frozen=True)
class EvalReport:
    """What one evaluation measured (also written to ``results.json``)."""

    metrics: dict
    summary: str
    timings: dict
    info: dict

    def as_dict(self) -> dict:
        return {**self.metrics, "timings": self.timings, **self.info}


def run_evaluation(
    root: str | Path,
    split: str,
    results_dir: str | Path,
    spec: InferenceSpec,
    *,
    model: str | Path | None = None,
    experiment_spec: str | Path | None = None,
    oracle: bool = False,
    oracle_resolution: str = "network",
    detections: str | Path | None = None,
    bf16: bool = False,
    key: str | None = None,
    runtime: str | None = None,
) -> EvalReport:
    """``bpnet evaluate``: score a model, the oracle (the decoder alone) or a results file.

    Args:
        root: dataset root in the COCO layout.
        split: split name.
        results_dir: receives the result files (:func:`evaluate`) and the experiment spec the
            maps follow (``experiment_spec.yaml``: skeleton, target sigma and PAF width).
        spec: input geometry and decoder settings.
        model: a ``.pth``, ``.onnx`` or ``.engine`` file; default ``spec.model_path``. Its own
            skeleton and training spec are used.
        experiment_spec: the training spec of the oracle and of ``detections`` (skeleton,
            targets); default ``spec.train_spec``, else TAO's defaults.
        oracle: evaluate the ground truth's own targets (no model).
        oracle_resolution: ``network`` (the inputs ``spec`` describes) or ``full``.
        detections: score this COCO keypoint results file instead of running anything.
        bf16: bfloat16 autocast (``.pth`` models).
        key: TAO's ``-k``: the key an encrypted model was written with.
        runtime: ``auto`` or None (the file's own), ``onnxruntime`` or ``openvino`` (``.onnx``
            files; :data:`bpnet.inference.runtime.RUNTIMES`).

    Raises:
        BpnetError: no model, or a model with ``oracle`` or ``detections``; bad files; a
            runtime that cannot run the model.
    """
    train_spec = load_experiment_spec(experiment_spec or spec.train_spec)
    pose = resolve_pose_config(train_spec.dataloader)
    if detections is not None:
        if model is not None or oracle:
            raise BpnetError("--detections scores an existing file: drop -m / --oracle")
        return evaluate_detections(root, split, detections, results_dir, pose)
    if oracle:
        if model is not None:
            raise BpnetError("--oracle evaluates the ground truth: drop -m MODEL")
        labels = train_spec.dataloader.label_processor_config
        source = OracleSource(
            pose, sigma=labels.heatmap_gaussian_sigma, paf_width=labels.paf_ortho_dist_thresh
        )
        resolution, label = oracle_resolution, "oracle"
    else:
        from bpnet.inference.runtime import load_model

        model = model or spec.model_path
        if model is None:
            raise BpnetError("bpnet evaluate: give a model with -m MODEL, or use --oracle")
        loaded = load_model(model, key=key)
        pose, train_spec = loaded.pose, loaded.train_spec  # what the model was trained with
        source = loaded.source(stage=spec.output_stage_to_use, bf16=bf16, runtime=runtime)
        resolution, label = "network", str(model)
        if runtime not in (None, "auto"):
            label += f" on {runtime}"
    report = evaluate(
        root, split, results_dir, source, pose, spec, resolution=resolution, label=label
    )
    # the targets' sigma and PAF width and the skeleton come from here: keep it beside
    save_spec(train_spec, Path(results_dir) / "experiment_spec.yaml")
    return report


def evaluate_command(
    root: Path,
    split: str,
    results_dir: Path,
    inference_spec: Path | None,
    overrides: list[str],
    **options,
) -> str:
    """``bpnet evaluate``: :func:`run_evaluation` with the inference spec file (None: TAO's
    defaults) and its ``overrides``; ``options`` are run_evaluation's keywords.

    The inference spec sets the mode: default (keep the aspect ratio, adjust the network
    input), strict (``keep_aspect_ratio_mode: pad_image_input``, a fixed ``input_shape``) or
    multi-scale.

    Returns:
        pycocotools' summary and a line with the AP, the mode, the source and the images.
    """
    spec = load_inference_spec(inference_spec, overrides)
    report = run_evaluation(root, split, results_dir, spec, **options)
    info = report.info
    return (
        f"{report.summary}\nAP {format_ap(report.metrics['AP'])}  ({info['mode']}, "
        f"{info['source']}, {info['images']} images); results in {results_dir}"
    )


def evaluate(
    root: str | Path,
    split: str,
    results_dir: str | Path,
    source: MapSource,
    pose: PoseConfig,
    spec: InferenceSpec,
    *,
    resolution: str = "network",
    label: str = "model",
    leave_progress: bool = True,
) -> EvalReport:
    """Run ``source`` over every image of a split, decode, score, and write the results.

    Args:
        root: dataset root in the COCO layout.
        split: split name.
        results_dir: receives ``detections_coco_format.json``, ``results.json``,
            ``results.csv`` and the resolved ``infer_spec.yaml``.
        source: what produces the maps: a network, or an
            :class:`~bpnet.evaluate.oracle.OracleSource` (bound to each image's record here).
        pose: the skeleton the maps follow.
        spec: input geometry (mode, scales) and decoder settings.
        resolution: ``network`` (the inputs ``spec`` describes) or ``full`` (the image's own
            pixel grid; for the oracle).
        label: what produced the maps, for the reports (and the progress bar).
        leave_progress: keep the finished progress bar on a terminal (False inside training).

    Raises:
        DatasetError: missing image files, an empty image list, a malformed annotation file.
    """
    check_output_dir(results_dir)
    data = load_coco_split(root, split, check_images=True)
    if not data.image_ids:
        raise DatasetError(f"{data.ann_file}: the 'images' list is empty; nothing to evaluate")
    records = build_records(data, pose)
    predictor = Predictor(source, pose, spec, full_resolution=resolution == "full", split=data)
    detections: list[dict] = []
    for record in progress(records, desc=f"evaluate {label}", leave=leave_progress):
        # the oracle draws each image's ground truth; a network sees only the pixels
        own = source.bind(record) if isinstance(source, OracleSource) else source
        size = (record.height, record.width)
        detections += predictor(record.path, record.image_id, size, source=own).detections
    metrics, summary = coco_keypoint_ap(data, detections, oks_sigmas_for(data, pose))
    images = len(records)
    timings = {
        f"{k}_ms_per_image": round(1000 * v / images, 2) for k, v in predictor.seconds.items()
    }
    info = {
        "source": label,
        "mode": "full_resolution" if resolution == "full" else spec.mode,
        "dataset": str(data.ann_file),
        "images": images,
        "detections": len(detections),
    }
    report = EvalReport(metrics, summary, timings, info)
    write_results(results_dir, report, detections, spec)
    return report


def evaluate_detections(
    root: str | Path,
    split: str,
    detections_file: str | Path,
    results_dir: str | Path,
    pose: PoseConfig | None = None,
) -> EvalReport:
    """Score an existing COCO keypoint results file (ours, OpenPose's, an engine's).

    Args:
        pose: gives the OKS sigmas when the keypoints are not COCO's 17.

    Raises:
        DatasetError: a malformed results file (names the entry and field), unknown image ids.
    """
    check_output_dir(results_dir)
    data = load_coco_split(root, split, check_images=False)
    path = Path(detections_file)
    detections = read_json(path)
    _check_detections(detections, path, data.category["id"], 3 * len(data.keypoint_names))
    sigmas = oks_sigmas_for(data, pose) if pose is not None else None
    metrics, summary = coco_keypoint_ap(data, detections, sigmas)
    info = {
        "source": str(path),
        "mode": "detections_file",
        "dataset": str(data.ann_file),
        "images": len(data.image_ids),
        "detections": len(detections),
    }
    report = EvalReport(metrics, summary, {}, info)
    write_results(results_dir, report, detections, None)
    return report


def _check_detections(detections: object, path: Path, category_id: int, values: int) -> None:
    """Every record must be what COCOeval reads; the first bad one is named."""
    if not isinstance(detections, list):
        raise DatasetError(f"{path}: expected a JSON list of COCO keypoint results")

    def number(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    for i, d in enumerate(detections):
        if not isinstance(d, dict):
            raise DatasetError(f"{path}: [{i}] is not an object; expected COCO keypoint results")
        for key in ("image_id", "category_id", "keypoints", "score"):
            if key not in d:
                raise DatasetError(f"{path}: [{i}].{key} is missing")
        if not isinstance(d["image_id"], int) or isinstance(d["image_id"], bool):
            raise DatasetError(f"{path}: [{i}].image_id must be an integer image id")
        if d["category_id"] != category_id:
            raise DatasetError(
                f"{path}: [{i}].category_id is {d['category_id']!r}, but the split's keypoint "
                f"category is {category_id}"
            )
        kpts = d["keypoints"]
        if not (isinstance(kpts, list) and len(kpts) == values and all(map(number, kpts))):
            raise DatasetError(f"{path}: [{i}].keypoints must be {values} finite numbers")
        if not number(d["score"]):
            raise DatasetError(f"{path}: [{i}].score must be a finite number")


def write_results(
    results_dir: str | Path, report: EvalReport, detections: list[dict], spec: InferenceSpec | None
) -> None:
    """Write the detections, ``results.json``, ``results.csv`` and the spec, each atomically."""
    results_dir = Path(results_dir)
    write_json_atomic(results_dir / DETECTIONS_FILE, detections)
    write_json_atomic(results_dir / "results.json", report.as_dict(), indent=2)
    row = {**{k: report.metrics[k] for k in METRIC_NAMES}, **report.timings, **report.info}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
    write_text_atomic(results_dir / "results.csv", buffer.getvalue())
    if spec is not None:
        save_spec(spec, results_dir / "infer_spec.yaml")
