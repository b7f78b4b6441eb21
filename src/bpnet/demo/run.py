"""``bpnet demo``: TAO BodyPoseNet's workflow end to end, in one command and one report.

    data -> fine-tune the imported network -> evaluate -> prune (threshold by sweep) -> retrain
    -> evaluate -> calibration images -> export ONNX FP32 + INT8 -> evaluate FP32 vs INT8
    -> the same optimisation of the imported network on real photos -> speed against OpenPose
    -> annotated pictures -> report

Each step calls the library functions its ``bpnet`` command calls, writes under ``OUT/<step>/``
and, when it ends, records what it measured in ``OUT/done/<step>.json``. A rerun skips every step
that has its record, so a run that crashed or was interrupted continues where it stopped
(training resumes from its last checkpoint). The report (``OUT/report.md``, ``report.json``)
is assembled from the records alone: every figure in it was measured by the run.

Paths in :class:`DemoSettings` (specs, the imported network, the real photos) are relative to
the working directory: run it from the repository root, as ``make demo`` does.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from bpnet.config import load_experiment_spec, load_inference_spec
from bpnet.config.inference import InferenceSpec
from bpnet.data.coco import load_coco_split, split_paths
from bpnet.data.synth import generate_dataset
from bpnet.demo import speed
from bpnet.demo.report import (
    FINE_TUNED,
    FP32,
    IMPORTED,
    INT8,
    OPENPOSE,
    PRUNED,
    PRUNED_ONLY,
    RETRAINED,
    minutes,
    write_report,
)
from bpnet.errors import BpnetError, DatasetError
from bpnet.evaluate.evaluate import run_evaluation
from bpnet.export.calibration import sample_calibration_images
from bpnet.export.exporter import ExportOptions, run_export
from bpnet.inference.infer import run_inference
from bpnet.io import LOCK_FILE, folder_lock, read_json, staging_folder, write_json_atomic
from bpnet.models import arch_graph, build_model, load_checkpoint, save_checkpoint
from bpnet.pose import load_pose_config
from bpnet.prune.report import arch_cost, conv_output_sizes
from bpnet.prune.rules import PruneSettings
from bpnet.prune.run import prune_checkpoint, sweep_checkpoint
from bpnet.train.trainer import train as train_model

DIFFICULTY = "easy"  # the synthetic pictures: "standard" or "easy" (bpnet dataset synth)
# training minutes; the other steps do not scale with it (OUT/report.md lists each step's time):
# 10 keeps `make demo` within 20 minutes on 2 cores (about 13.5 measured on a fresh clone)
DEFAULT_BUDGET_MINUTES = 10.0
AP_KEYS = ("AP", "AP50", "AP75", "APm", "APl", "AR")
# CMU's OpenPose COCO network (docs/openpose_coco_layers.md), the speed baseline
OPENPOSE_SPEC = (
    "model.backbone_attributes.architecture=openpose",
    "model.backbone_attributes.mtype=openpose_coco",
    "model.stages=6",
)
# why the pruned imported network is not retrained on the real photos (docs/BENCHMARKS.md)
NOT_RETRAINED = (
    "no retraining: distillation on the fixture's 48 train photos has not raised its AP in "
    'any recipe tried (docs/BENCHMARKS.md, "Pruning that keeps a working network")'
)


@dataclass(frozen=True)
class DemoSettings:
    """What a demo run does besides its budget and data; the defaults are ``make demo``'s.

    Attributes:
        train_spec: the fine-tuning recipe; ``num_epoch`` comes from the budget.
        overrides: ``-o`` overrides of ``train_spec`` (for both fine-tuning runs).
        pretrained: the imported network the fine-tuning starts from (``make pretrained``).
        train_images, val_images, seed: the synthetic dataset (``bpnet dataset synth``).
        images_per_s: fine-tuning speed on 2 cores, which turns budget minutes into epochs.
        retrain_share: the part of the budget that retrains the pruned network.
        target_macs: the sweep picks the threshold keeping the most MACs at or below this.
        thresholds: the pruning thresholds swept (TAO's other options at their defaults).
        prune_stages: ``bpnet prune --stages``: the stages kept before filters are ranked.
        prune_whole: the stage convs (by name in their branch) left whole (``-el``): the
            64-wide separable convs of tf-pose's stages lose AP at any cut (docs/BENCHMARKS.md).
        strict_spec: strict mode (fixed input, padded): FP32 vs INT8.
        synthetic_spec: default mode on the synthetic pictures (their own size).
        photo_spec: default mode on real photos (and on a ``--data`` dataset).
        calibration_images: INT8 calibration pictures sampled from the train split.
        sensitivity: the INT8 export's sensitivity pass, per node then per block (``auto`` or
            ``off``).
        real_photos: a COCO-layout dataset of real photos; None or missing: that step is skipped.
        real_splits: its (train, val) splits: calibration pictures, evaluation.
        real_calibration_images: at most this many calibration pictures from it.
        bench_size: (H, W) of the speed step and of the MACs counts.
        bench_rounds: interleaved rounds of the speed step.
        openpose_every: OpenPose runs in one round of this many (it is ~50x slower).
        openpose_overrides: overrides of the OpenPose spec (tests shrink it).
        pictures: annotated pictures per model.
    """

    train_spec: Path = Path("specs/synthetic_demo.yaml")
    overrides: tuple[str, ...] = ()
    pretrained: Path = Path("runs/pretrained/tfpose_mobilenet_v2_small.pth")
    train_images: int = 1000
    val_images: int = 50
    seed: int = 0
    images_per_s: float = 12.5
    retrain_share: float = 0.25
    target_macs: float = 0.5
    thresholds: tuple[float, ...] = tuple(round(0.02 * i, 2) for i in range(1, 51))
    prune_stages: int = 2
    prune_whole: tuple[str, ...] = ("conv1_pw", "conv2_pw", "conv3_pw")
    strict_spec: Path = Path("specs/infer_spec_strict.yaml")
    synthetic_spec: Path = Path("specs/infer_spec_synthetic.yaml")
    photo_spec: Path = Path("specs/infer_spec.yaml")
    calibration_images: int = 32
    sensitivity: str = "auto"
    real_photos: Path | None = Path("tests/data/coco_fixture")
    real_splits: tuple[str, str] = ("train2017", "val2017")
    real_calibration_images: int = 16
    bench_size: tuple[int, int] = (288, 384)
    bench_rounds: int = 20
    openpose_every: int = 5
    openpose_overrides: tuple[str, ...] = ()
    pictures: int = 4


def demo_command(out: Path, budget: float | None, data: Path | None) -> str:
    """``bpnet demo``: :func:`run_demo` with ``budget`` training minutes; returns the terminal
    table."""
    return run_demo(out, budget, data)["table"]


def run_demo(
    out: str | Path = "runs/demo",
    budget_minutes: float | None = None,
    data: str | Path | None = None,
    *,
    settings: DemoSettings | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Run the whole workflow into ``out`` and write its report (module docstring).

    Args:
        out: the run's folder; a rerun into it continues an earlier run with the same options.
        budget_minutes: training minutes, shared by fine-tuning and retraining
            (:data:`DEFAULT_BUDGET_MINUTES` when None); the other steps take what they take.
        data: a COCO-layout dataset root (splits ``train``/``val`` or ``train2017``/``val2017``)
            instead of the synthetic pictures.
        settings: everything else (:class:`DemoSettings`).
        say: where the progress lines go.

    Returns:
        The report (what ``OUT/report.json`` holds) plus ``table``, the terminal table.

    Raises:
        BpnetError: a missing spec, imported network or dataset, options that differ from the
            earlier run in ``out``, or what a step's library function raises.
    """
    budget = DEFAULT_BUDGET_MINUTES if budget_minutes is None else float(budget_minutes)
    if not budget > 0:
        raise BpnetError(f"--budget {budget_minutes}: give the training minutes, e.g. --budget 7")
    data = None if data is None else Path(data)
    demo = Demo(Path(out), budget, data, settings or DemoSettings(), say)
    plan = (  # (step = its folder under OUT, what it does, the method doing it)
        ("data", "dataset" if data else "synthesise the dataset", demo.data),
        ("train", "fine-tune the imported network", demo.train),
        ("evaluate", "evaluate it, default and strict mode", demo.evaluate),
        ("prune", "prune it, threshold by sweep", demo.prune),
        ("retrain", "retrain the pruned network", demo.retrain),
        ("evaluate_pruned", "evaluate the pruned network", demo.evaluate_pruned),
        ("calibration", "sample INT8 calibration pictures", demo.calibration),
        ("export", "export ONNX FP32 and calibrated INT8", demo.export),
        ("evaluate_int8", "evaluate INT8, strict and default mode", demo.evaluate_int8),
        (
            "real_photos",
            "the imported network on real photos: FP32, pruned, INT8",
            demo.real_photos,
        ),
        ("benchmark", "speed against OpenPose", demo.benchmark),
        ("pictures", "annotated pictures", demo.pictures),
    )
    with folder_lock(out, "bpnet demo"):
        demo.check()
        steps = Steps(Path(out), len(plan) + 1, say)
        records = {name: steps.run(name, title, work) for name, title, work in plan}
        steps.announce("report")
        return write_report(Path(out), demo.options(), records, steps.timings)


class Steps:
    """Numbered steps, each announced with its duration; a step that has its record is skipped."""

    def __init__(self, out: Path, total: int, say: Callable[[str], None]):
        self.out, self.total, self.say, self.number = out, total, say, 0
        self.timings: list[dict] = []

    def announce(self, title: str) -> str:
        self.number += 1
        head = f"[{self.number}/{self.total}]"
        self.say(f"{head} {title}")
        return head

    def run(self, name: str, title: str, work: Callable[[Path], dict]) -> dict:
        head = self.announce(title)
        done = self.out / "done" / f"{name}.json"
        if done.is_file():
            record = read_json(done)
            self.say(f"{head} done in an earlier run ({done}): skipped")
            skipped = True
        else:
            started = time.perf_counter()
            record = work(self.out / name)
            record["seconds"] = round(time.perf_counter() - started, 1)
            write_json_atomic(done, record, indent=2)
            self.say(f"{head} {title}: done in {minutes(record['seconds'])}")
            skipped = False
        self.timings.append(
            {"step": name, "title": title, "seconds": record["seconds"], "skipped": skipped}
        )
        return record


def plural(count: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


class Demo:
    """The steps: each takes its folder and returns its record (JSON-ready)."""

    def __init__(
        self,
        out: Path,
        budget: float,
        data: Path | None,
        settings: DemoSettings,
        say: Callable[[str], None],
    ):
        self.out, self.budget, self.data_root, self.settings = out, budget, data, settings
        self.say = say

    def options(self) -> dict:
        """What this run was asked for, as JSON-ready data (``OUT/demo.json``)."""
        given = {"budget_minutes": self.budget, "data": self.data_root, "difficulty": DIFFICULTY}
        return json.loads(json.dumps({**given, "settings": asdict(self.settings)}, default=str))

    def check(self) -> None:
        """Fail before any work: missing inputs, or an earlier run in OUT with other options."""
        s = self.settings
        for path in (s.train_spec, s.strict_spec, s.synthetic_spec, s.photo_spec):
            if not Path(path).is_file():
                raise BpnetError(f"{path}: spec not found; run bpnet demo from the repository root")
        if self.data_root is not None:
            find_splits(self.data_root)
        if not Path(s.pretrained).is_file():
            raise BpnetError(
                f"{s.pretrained}: the imported network the demo fine-tunes is missing; run "
                "`make pretrained` (bpnet import --from tfpose, docs/IMPORT.md)"
            )
        recorded = self.out / "demo.json"
        others = [p.name for p in self.out.iterdir() if p.name != LOCK_FILE]
        if others and not recorded.is_file():
            # an earlier `make demo` or another command's files: a checkpoint there would be
            # resumed as if this run had written it
            raise BpnetError(
                f"{self.out}: holds files that are not a bpnet demo run ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); choose another -r or delete the folder"
            )
        if recorded.is_file() and read_json(recorded) != self.options():
            raise BpnetError(
                f"{self.out}: holds a demo run with other options ({recorded}); rerun with the "
                "same options to continue it, or choose another -r (or delete the folder)"
            )
        write_json_atomic(recorded, self.options(), indent=2)

    # ---- records of earlier steps -------------------------------------------------------------

    def record(self, name: str) -> dict:
        return read_json(self.out / "done" / f"{name}.json")

    @property
    def root(self) -> Path:
        return Path(self.record("data")["root"])

    def split(self, which: str) -> str:
        return self.record("data")[f"{which}_split"]

    @property
    def default_spec(self) -> Path:
        """Default mode: the synthetic pictures at their own size, a user's data at 368."""
        return self.settings.synthetic_spec if self.data_root is None else self.settings.photo_spec

    # ---- the steps ----------------------------------------------------------------------------

    def data(self, folder: Path) -> dict:
        s = self.settings
        if self.data_root is None:
            self.say(
                f"  synthesising {s.train_images} train + {s.val_images} val pictures "
                f"({DIFFICULTY}) into {folder}"
            )
            generate_dataset(
                folder, s.train_images, s.val_images, seed=s.seed, difficulty=DIFFICULTY, force=True
            )
            root, (train, val) = folder, ("train", "val")
        else:
            root, (train, val) = self.data_root, find_splits(self.data_root)
        for split in (train, val):
            load_coco_split(root, split)  # a malformed file fails here, naming the entry
        counts = {split: count_people(root, split) for split in (train, val)}
        for split, count in counts.items():
            self.say(
                f"  {root} {split}: {count['images']} pictures, {count['with_people']} with "
                f"labelled people"
            )
        synthetic = self.data_root is None
        return {
            "root": str(root),
            "train_split": train,
            "val_split": val,
            "counts": counts,
            "synthetic": synthetic,
            "difficulty": DIFFICULTY if synthetic else None,
        }

    def train(self, folder: Path) -> dict:
        seconds = 60 * self.budget * (1 - self.settings.retrain_share)
        extra = [f"pretrained_weights={self.settings.pretrained}"]
        return self.fine_tune(folder, seconds, extra)

    def retrain(self, folder: Path) -> dict:
        seconds = 60 * self.budget * self.settings.retrain_share
        pruned = self.record("prune")["pruned"]
        extra = [f"pretrained_weights={pruned}", "load_graph=true"]
        return self.fine_tune(folder, seconds, extra)

    def fine_tune(self, folder: Path, seconds: float, extra: list[str]) -> dict:
        """``bpnet train`` of the demo spec for the epochs ``seconds`` buy (at least one); the
        evaluation steps measure AP, so training does not validate."""
        s = self.settings
        samples = self.record("data")["counts"][self.split("train")]["with_people"]
        epochs = max(1, round(seconds * s.images_per_s / max(samples, 1)))
        overrides = [
            *s.overrides,
            f"num_epoch={epochs}",
            "validation_every_n_epoch=0",
            f"dataloader.dataset_config.train_split={self.split('train')}",
            f"dataloader.dataset_config.val_split={self.split('val')}",
            f"inference_spec={self.default_spec}",
            *extra,
        ]
        spec = load_experiment_spec(s.train_spec, overrides)
        expected = epochs * samples / s.images_per_s
        command = f"bpnet train -e {s.train_spec} -r {folder} -d {self.root}"
        self.say(
            f"  {plural(epochs, 'epoch')} of ~{samples} pictures, about {minutes(expected)} at "
            f"{s.images_per_s:g} images/s: {command} -o {' -o '.join(overrides)}"
        )
        summary = train_model(spec, folder, root=self.root, spec_path=s.train_spec)
        return {
            "checkpoint": summary["checkpoint"],
            "epochs": epochs,
            "samples": samples,
            "loss": summary["loss"],
            "images_per_s": summary["images_per_s"],
            "curve": str(folder / "loss_curve.png"),
            "overrides": overrides,
        }

    def score(
        self, model: str | Path, folder: Path, infer_spec: Path, name: str, form: str, **where
    ) -> dict:
        """``bpnet evaluate`` of ``model`` on the val split (or ``where``'s root and split):
        one accuracy row."""
        root, split = where.get("root", self.root), where.get("split", self.split("val"))
        spec = load_inference_spec(infer_spec)
        report = run_evaluation(root, split, folder, spec, model=model)
        row = {
            "model": name,
            "form": form,
            "mode": mode_label(spec),
            "data": f"{root} {split}",
            "images": report.info["images"],
            "results": str(folder),
            **{key: report.metrics.get(key) for key in AP_KEYS},
        }
        self.say(f"  {name}, {form}, {row['mode']}: AP {fmt_ap(row['AP'])}")
        return row

    def evaluate(self, folder: Path) -> dict:
        s, demo = self.settings, self.record("train")["checkpoint"]
        rows = [
            self.score(s.pretrained, folder / "zero_shot", self.default_spec, IMPORTED, FP32),
            self.score(demo, folder / "fp32_default", self.default_spec, FINE_TUNED, FP32),
            self.score(demo, folder / "fp32_strict", s.strict_spec, FINE_TUNED, FP32),
        ]
        return {"rows": rows}

    def prune(self, folder: Path) -> dict:
        demo = self.record("train")["checkpoint"]
        return self.prune_to_target(demo, split_paths(self.root, self.split("train"))[1], folder)

    def prune_to_target(self, checkpoint: str | Path, pictures: Path, folder: Path) -> dict:
        """``bpnet prune --stages N --rank_on PICTURES -el ...``: sweep, then prune at the
        threshold keeping the most MACs at or below the target."""
        s = self.settings
        base = PruneSettings(
            criterion="activation",
            stages=s.prune_stages,
            excluded_layers=stage_convs(checkpoint, s.prune_stages, s.prune_whole),
        )
        sweep = folder / "sweep.json"
        where = {"input_size": s.bench_size, "force": True, "images": pictures}
        table = sweep_checkpoint(checkpoint, base, list(s.thresholds), report_path=sweep, **where)
        row, reason = pick_threshold(table["rows"][1:], s.target_macs)
        self.say(
            f"  {s.prune_stages} stages, filters ranked on {pictures}, {len(base.excluded_layers)}"
            f" stage convs whole; swept {len(s.thresholds)} thresholds ({sweep}): -pth "
            f"{row['threshold']:g} keeps {row['macs_kept']:.1%} of the MACs, "
            f"{row['params_kept']:.1%} of the parameters ({reason})"
        )
        pruned = folder / "pruned.pth"
        settings = replace(base, threshold=row["threshold"])
        report = prune_checkpoint(checkpoint, pruned, settings, **where)
        return {
            "threshold": row["threshold"],
            "target_macs": s.target_macs,
            "reason": reason,
            "macs_kept": report["macs_kept"],
            "params_kept": report["params_kept"],
            "stages": s.prune_stages,
            "left_whole": list(base.excluded_layers),
            "pictures": str(pictures),
            "pruned": str(pruned),
            "report": report["report"],
            "sweep": str(sweep),
            "note": report.get("note"),
        }

    def evaluate_pruned(self, folder: Path) -> dict:
        s = self.settings
        pruned, retrained = self.record("prune")["pruned"], self.record("retrain")["checkpoint"]
        rows = [
            self.score(pruned, folder / "pruned_strict", s.strict_spec, PRUNED, FP32),
            self.score(retrained, folder / "fp32_default", self.default_spec, RETRAINED, FP32),
            self.score(retrained, folder / "fp32_strict", s.strict_spec, RETRAINED, FP32),
        ]
        return {"rows": rows}

    def calibration(self, folder: Path) -> dict:
        root, split = self.root, self.split("train")
        return self.sample(root, split, folder, self.settings.calibration_images)

    def sample(self, root: Path, split: str, folder: Path, wanted: int) -> dict:
        """``bpnet calibration sample -pth 1 -kth 5 --randomize`` of a split into ``folder``."""
        shutil.rmtree(folder, ignore_errors=True)  # what an interrupted run left
        ann_file, image_dir = split_paths(root, split)
        num = min(wanted, count_people(root, split)["calibration"])
        if num == 0:
            raise DatasetError(f"{ann_file}: no picture has a person with >= 5 labelled keypoints")
        written = sample_calibration_images(
            ann_file, image_dir, folder, num, randomize=True, seed=self.settings.seed
        )
        self.say(f"  {len(written)} calibration pictures of {root} {split} in {folder}")
        return {"folder": str(folder), "images": len(written)}

    def export(self, folder: Path) -> dict:
        calibration = self.record("calibration")
        images, batches = Path(calibration["folder"]), calibration["images"]
        tensorfile = folder / "calibration.tensorfile"
        tensorfile.unlink(missing_ok=True)  # an interrupted run's; the first export writes it
        return {
            name: self.export_int8(
                model, folder / f"{STEMS[name]}.int8.onnx", images, tensorfile, batches
            )
            for name, model in self.checkpoints().items()
        }

    def checkpoints(self) -> dict[str, str]:
        """The fine-tuned and the pruned + retrained checkpoints."""
        return {
            FINE_TUNED: self.record("train")["checkpoint"],
            RETRAINED: self.record("retrain")["checkpoint"],
        }

    def export_int8(
        self,
        model: str | Path,
        output: Path,
        images: Path,
        tensorfile: Path,
        batches: int,
        sensitivity: str | None = None,
    ) -> dict:
        """``bpnet export --data_type int8`` calibrated on ``batches`` pictures of ``images``
        (pre-processed into ``tensorfile``, or read from it when an earlier export of this step
        wrote it): the INT8 model and its FP32 sibling."""
        reuse = tensorfile.is_file()
        asked = ExportOptions(
            model=Path(model),
            output=output,
            data_type="int8",
            cal_image_dir=None if reuse else images,
            cal_data_file=tensorfile,
            batches=batches,
            sensitivity=sensitivity or self.settings.sensitivity,
            force=True,
        )
        result = run_export(asked, say=lambda line: self.say(f"  {line}"))
        kept = result["int8_report"].kept_fp32 if result["int8_report"] else ()
        return {
            "int8": str(output),
            "fp32": str(asked.fp32_sibling),
            "max_abs_diff": result["max_abs_diff"],
            "kept_fp32": len(kept),
        }

    def evaluate_int8(self, folder: Path) -> dict:
        s, exported = self.settings, self.record("export")
        rows = []
        for name, stem in STEMS.items():
            int8 = exported[name]["int8"]
            rows.append(self.score(int8, folder / f"{stem}_strict", s.strict_spec, name, INT8))
            rows.append(self.score(int8, folder / f"{stem}_default", self.default_spec, name, INT8))
        return {"rows": rows}

    def real_photos(self, folder: Path) -> dict:
        s = self.settings
        if s.real_photos is None or not Path(s.real_photos).is_dir():
            self.say(f"  skipped: no real photos at {s.real_photos}")
            return {"skipped": f"no real photos at {s.real_photos}", "rows": []}
        root, (train, val) = Path(s.real_photos), s.real_splits
        where = {"root": root, "split": val}
        rows = [
            self.score(
                s.pretrained, folder / "fp32_default", s.photo_spec, IMPORTED, FP32, **where
            ),
            self.score(
                s.pretrained, folder / "fp32_strict", s.strict_spec, IMPORTED, FP32, **where
            ),
        ]
        pruning = self.prune_to_target(s.pretrained, split_paths(root, train)[1], folder)
        pruned = pruning["pruned"]
        rows += [
            self.score(pruned, folder / "pruned_default", s.photo_spec, PRUNED_ONLY, FP32, **where),
            self.score(pruned, folder / "pruned_strict", s.strict_spec, PRUNED_ONLY, FP32, **where),
        ]
        pruning["summary"] = (
            f"{pruning['macs_kept']:.1%} of the MACs ({s.prune_stages} stages, -pth "
            f"{pruning['threshold']:g}, filters ranked on {train}); {NOT_RETRAINED}"
        )
        self.say(f"  pruned imported network: {pruning['summary']}")
        calibration = self.sample(root, train, folder / "calibration", s.real_calibration_images)
        tensorfile = folder / "export" / "calibration.tensorfile"
        tensorfile.unlink(missing_ok=True)
        exported = self.export_int8(
            s.pretrained,
            folder / "export" / "imported.int8.onnx",
            Path(calibration["folder"]),
            tensorfile,
            calibration["images"],
        )
        int8 = exported["int8"]
        rows += [
            self.score(int8, folder / "int8_default", s.photo_spec, IMPORTED, INT8, **where),
            self.score(int8, folder / "int8_strict", s.strict_spec, IMPORTED, INT8, **where),
        ]
        return {
            "skipped": None,
            "pruning": pruning,
            "rows": rows,
            "export": exported,
            "calibration": calibration,
            "root": str(root),
            "split": val,
        }

    def benchmark(self, folder: Path) -> dict:
        s, exported = self.settings, self.record("export")
        models = {
            name: (Path(path), Path(exported[name]["fp32"]), Path(exported[name]["int8"]))
            for name, path in self.checkpoints().items()
        }
        costs = {name: cost(files[0], s.bench_size) for name, files in models.items()}
        costs[IMPORTED] = cost(s.pretrained, s.bench_size)
        calibration = Path(self.record("calibration")["folder"])
        # random weights, for speed only: its files stay out of OUT
        with staging_folder("bpnet-demo-openpose-") as tmp:
            baseline = Path(tmp) / "openpose_coco.pth"
            spec = load_experiment_spec(None, [*OPENPOSE_SPEC, *s.openpose_overrides])
            pose = load_pose_config()
            save_checkpoint(baseline, build_model(spec.model, pose), spec=spec, pose=pose)
            costs[OPENPOSE] = cost(baseline, s.bench_size)
            self.say(f"  {OPENPOSE} (random weights): ONNX FP32 and INT8 (2 pictures)")
            files = self.export_int8(
                baseline,
                Path(tmp) / "openpose.int8.onnx",
                calibration,
                Path(tmp) / "calibration.tensorfile",
                2,
                sensitivity="off",
            )
            models[OPENPOSE] = (baseline, Path(files["fp32"]), Path(files["int8"]))
            timed = self.time_models(models, slow=OPENPOSE)
        record = {
            "size": list(s.bench_size),
            "threads": torch.get_num_threads(),
            "rounds": s.bench_rounds,
            "rows": timed,
            "costs": costs,
        }
        write_json_atomic(folder / "speed.json", record, indent=2)
        return record

    def time_models(self, models: dict[str, tuple[Path, Path, Path]], slow: str) -> list[dict]:
        """ms/frame of each (checkpoint, FP32 ONNX, INT8 ONNX) in every runtime, interleaved;
        the ``slow`` model in one round of ``openpose_every``."""
        s = self.settings
        runners = {
            (name, runtime): run
            for name, files in models.items()
            for runtime, run in speed.model_runners(*files, s.bench_size).items()
        }
        self.say(
            f"  timing {len(runners)} model forms at {s.bench_size[0]}x{s.bench_size[1]}: "
            f"{s.bench_rounds} interleaved rounds ({slow} in one of {s.openpose_every})"
        )
        slow_ones = [key for key in runners if key[0] == slow]
        timed = speed.time_interleaved(
            runners, s.bench_rounds, slow=slow_ones, slow_every=s.openpose_every
        )
        rows = []
        for (name, runtime), result in timed.items():
            rows.append({"model": name, "runtime": runtime, **result})
            self.say(f"  {name}, {runtime}: {result['ms']:.1f} ms/frame ({result['fps']:.1f} FPS)")
        return rows

    def pictures(self, folder: Path) -> dict:
        s, made = self.settings, {}
        jobs = [
            (
                FINE_TUNED,
                self.record("train")["checkpoint"],
                self.root,
                self.split("val"),
                self.default_spec,
                folder / "fine_tuned",
            )
        ]
        if not self.record("real_photos")["skipped"]:
            root, val = Path(s.real_photos), s.real_splits[1]
            jobs.append((IMPORTED, s.pretrained, root, val, s.photo_spec, folder / "real_photos"))
        for name, model, root, split, infer_spec, out in jobs:
            listed = out / "inputs.json"
            write_json_atomic(listed, pictures_with_people(root, split, s.pictures))
            result = run_inference(
                model,
                listed,
                out,
                load_inference_spec(infer_spec),
                input_type="json",
                say=lambda _line: None,
            )
            drawn = sorted(str(p) for p in (out / "images").iterdir())
            self.say(f"  {name}: {result['people']} people in {result['images']} pictures, {out}")
            made[name] = {
                "folder": str(out / "images"),
                "pictures": drawn,
                "people": result["people"],
            }
        return made


STEMS = {FINE_TUNED: "finetuned", RETRAINED: "pruned"}  # their files' names


def mode_label(spec: InferenceSpec) -> str:
    """``strict 288x384`` or ``default, height 448``."""
    h, w = spec.input_shape
    if spec.mode == "strict":
        return f"strict {h}x{w}"
    return f"{spec.mode.replace('_', '-')}, height {h}"


def fmt_ap(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def stage_convs(checkpoint: str | Path, stages: int, names: tuple[str, ...]) -> tuple[str, ...]:
    """The convs of a checkpoint's first ``stages`` stages whose own name is in ``names``
    (``stage2.paf.conv1_pw`` for ``conv1_pw``)."""
    convs = arch_graph(load_checkpoint(checkpoint)["arch"]).convs
    return tuple(
        path
        for path in convs
        if path.startswith("stage")
        and int(path.split(".")[0][len("stage") :]) <= stages
        and path.rsplit(".", 1)[-1] in names
    )


def pick_threshold(rows: list[dict], target: float) -> tuple[dict, str]:
    """The sweep row keeping the most MACs at or below ``target`` (a fraction), and why.

    With none at or below, the row keeping the fewest MACs (every layer at ``-nf``)."""
    below = [row for row in rows if row["macs_kept"] <= target]
    if below:
        best = max(below, key=lambda row: (row["macs_kept"], -row["threshold"]))
        return best, f"the most MACs at or below the {target:.0%} target"
    best = min(rows, key=lambda row: (row["macs_kept"], row["threshold"]))
    return best, f"no threshold reaches the {target:.0%} target; the smallest network swept"


def cost(checkpoint: str | Path, size: tuple[int, int]) -> dict:
    """Parameters and conv GMACs / GFLOPs (2 x MACs) of a checkpoint's network at (H, W)."""
    arch = load_checkpoint(checkpoint)["arch"]
    measured = arch_cost(arch, conv_output_sizes(arch, size))
    return measured.to_dict()


def find_splits(root: Path) -> tuple[str, str]:
    """The (train, val) splits of a COCO-layout root: ``train``/``val`` or ``*2017``."""
    for train, val in (("train", "val"), ("train2017", "val2017")):
        if all(split_paths(root, split)[0].is_file() for split in (train, val)):
            return train, val
    raise DatasetError(
        f"{root}: --data needs annotations/person_keypoints_train.json and ..._val.json (or "
        "..._train2017.json and ..._val2017.json) with the images in train/ and val/ beside "
        "them (the COCO layout)"
    )


def count_people(root: Path, split: str) -> dict:
    """Pictures of a split: all, with a labelled person, with one of >= 5 keypoints
    (calibration candidates, TAO's ``-kth 5``)."""
    data = read_json(split_paths(root, split)[0])
    labelled: dict[int, int] = {}
    for ann in data.get("annotations") or []:
        if not ann.get("iscrowd", 0):
            count = ann.get("num_keypoints", sum(v > 0 for v in ann["keypoints"][2::3]))
            labelled[ann["image_id"]] = max(labelled.get(ann["image_id"], 0), count)
    return {
        "images": len(data.get("images") or []),
        "with_people": sum(1 for n in labelled.values() if n > 0),
        "calibration": sum(1 for n in labelled.values() if n >= 5),
    }


def pictures_with_people(root: Path, split: str, count: int) -> list[str]:
    """The first ``count`` pictures of a split (by file name) with a labelled person."""
    ann_file, image_dir = split_paths(root, split)
    data = read_json(ann_file)
    people = {a["image_id"] for a in data.get("annotations") or [] if a.get("num_keypoints", 1)}
    names = sorted(im["file_name"] for im in data["images"] if im["id"] in people)
    return [str((image_dir / name).resolve()) for name in names[:count]]


__all__ = ["DEFAULT_BUDGET_MINUTES", "DIFFICULTY", "DemoSettings", "demo_command", "run_demo"]
