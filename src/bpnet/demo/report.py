"""The demo's report, assembled from the steps' records alone: ``OUT/report.json``,
``OUT/report.md``, ``OUT/fps.png`` and the terminal table.

Derived figures are computed here, from measured ones, in one place each: the INT8 AP drop
(FP32 AP - INT8 AP, same model, data and mode), the pruning AP drop (fine-tuned AP - pruned +
retrained AP, same mode), the speed-up against OpenPose (OpenPose ms / model ms, same runtime)
and GFLOPs (2 x conv MACs, at the speed step's input size).
"""

from __future__ import annotations

import platform
from pathlib import Path

from bpnet.bench.report import markdown_table
from bpnet.demo.speed import ONNX_INT8, PYTORCH_FP32
from bpnet.io import write_json_atomic, write_text_atomic, write_with_atomic

# the names of the models and forms in the rows of every table
FP32, INT8 = PYTORCH_FP32, ONNX_INT8
IMPORTED, FINE_TUNED = "imported", "fine-tuned"
PRUNED, RETRAINED = "pruned (before retraining)", "pruned + retrained"
PRUNED_ONLY = "imported, pruned"  # the real photos' pruned network: not retrained
OPENPOSE = "OpenPose COCO"
AP_COLUMNS = ("AP", "AP50", "AP75", "APm", "APl", "AR")


def write_report(out: Path, options: dict, records: dict, timings: list[dict]) -> dict:
    """Write the report files of a finished run and return the report.

    Args:
        out: the run's folder.
        options: what the run was asked for (budget, data, settings).
        records: each step's record, by step name.
        timings: ``{"step", "title", "seconds", "skipped"}`` per step, in order.

    Returns:
        What ``report.json`` holds, plus ``table`` (the terminal table).
    """
    report = build_report(options, records, timings)
    chart = out / "fps.png"
    report["files"]["fps_chart"] = draw_fps_chart(report["speed"], chart)
    write_json_atomic(out / "report.json", report, indent=2)
    write_text_atomic(out / "report.md", markdown(report, out))
    return {**report, "table": terminal_table(report, out)}


def build_report(options: dict, records: dict, timings: list[dict]) -> dict:
    """The report as plain data: accuracy rows, drops, pruning, speed, files, steps."""
    synthetic = [
        *records["evaluate"]["rows"],
        *records["evaluate_pruned"]["rows"],
        *records["evaluate_int8"]["rows"],
    ]
    real = records["real_photos"]
    prune = records["prune"]
    int8_drop = [
        *ap_drops(synthetic, [FINE_TUNED, RETRAINED], "synthetic" if _synth(records) else "data"),
        *ap_drops(real["rows"], [IMPORTED], "real photos"),
    ]
    exported = {**records["export"], **({IMPORTED: real["export"]} if real.get("export") else {})}
    for row in int8_drop:
        files = exported.get(row["model"], {})
        row["kept_fp32"] = files.get("kept_fp32")
        row["int8_max_abs_diff"] = files.get("max_abs_diff")
    keys = ("threshold", "target_macs", "reason", "macs_kept", "params_kept", "note")
    keys += ("stages", "left_whole", "pictures")
    pruning = {key: prune[key] for key in keys}
    pruning["drop"] = []
    for tuned in synthetic:
        retrained = _row(synthetic, RETRAINED, FP32, tuned["mode"])
        if (tuned["model"], tuned["form"]) != (FINE_TUNED, FP32) or retrained is None:
            continue
        pruned = _row(synthetic, PRUNED, FP32, tuned["mode"])  # strict mode only
        pruning["drop"].append(
            {
                "mode": tuned["mode"],
                "fine_tuned_AP": tuned["AP"],
                "pruned_AP": None if pruned is None else pruned["AP"],
                "retrained_AP": retrained["AP"],
                "drop": _sub(tuned["AP"], retrained["AP"]),
            }
        )
    bench = records["benchmark"]
    openpose = {row["runtime"]: row["ms"] for row in bench["rows"] if row["model"] == OPENPOSE}
    speed_rows = [
        {**row, "speedup_vs_openpose": _div(openpose.get(row["runtime"]), row["ms"])}
        for row in bench["rows"]
    ]
    total = sum(step["seconds"] for step in timings)
    return {
        "options": options,
        "data": records["data"],
        "steps": timings,
        "total_seconds": round(total, 1),
        "machine": _machine(bench["threads"]),
        "accuracy": {
            "synthetic" if _synth(records) else "data": synthetic,
            "real_photos": real["rows"],
        },
        "real_photos": {"skipped": real["skipped"], "pruning": real.get("pruning")},
        "int8_drop": int8_drop,
        "pruning": pruning,
        "models": bench["costs"],
        "speed": {
            "size": bench["size"],
            "threads": bench["threads"],
            "rounds": bench["rounds"],
            "rows": speed_rows,
        },
        "files": {
            "learning_curve": records["train"]["curve"],
            "retrain_curve": records["retrain"]["curve"],
            "pictures": {
                name: made["pictures"]
                for name, made in records["pictures"].items()
                if isinstance(made, dict)
            },
            "sweep": prune["sweep"],
        },
        "training": {
            name: {key: records[name][key] for key in ("epochs", "samples", "images_per_s", "loss")}
            for name in ("train", "retrain")
        },
    }


def ap_drops(rows: list[dict], models: list[str], data: str) -> list[dict]:
    """FP32 AP - INT8 AP for each model and mode that has both rows."""
    drops = []
    for fp32 in rows:
        if fp32["model"] not in models or fp32["form"] != FP32:
            continue
        int8 = _row(rows, fp32["model"], INT8, fp32["mode"])
        if int8 is not None:
            drops.append(
                {
                    "model": fp32["model"],
                    "data": data,
                    "mode": fp32["mode"],
                    "fp32_AP": fp32["AP"],
                    "int8_AP": int8["AP"],
                    "drop": _sub(fp32["AP"], int8["AP"]),
                }
            )
    return drops


def _synth(records: dict) -> bool:
    return bool(records["data"]["synthetic"])


def _row(rows: list[dict], model: str, form: str, mode: str) -> dict | None:
    return next(
        (r for r in rows if (r["model"], r["form"], r["mode"]) == (model, form, mode)), None
    )


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _machine(threads: int) -> dict:
    import onnxruntime
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


# ---- drawing and text ------------------------------------------------------------------------


def draw_fps_chart(speed: dict, path: Path) -> str | None:
    """Frames per second per runtime, one bar per model, log scale; None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = speed["rows"]
    models = list(dict.fromkeys(row["model"] for row in rows))
    runtimes = list(dict.fromkeys(row["runtime"] for row in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        fps = [
            next((r["fps"] for r in rows if (r["model"], r["runtime"]) == (model, rt)), 0)
            for rt in runtimes
        ]
        xs = [x + (i - (len(models) - 1) / 2) * width for x in range(len(runtimes))]
        bars = ax.bar(xs, fps, width, label=model)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(runtimes)), runtimes)
    ax.set_yscale("log")
    ax.set_ylabel("frames per second (log scale)")
    h, w = speed["size"]
    ax.set_title(f"network forward at {h}x{w}, batch 1, threads: {speed['threads']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_with_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return str(path)


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _rel(path: str | None, out: Path) -> str:
    if path is None:
        return "-"
    try:
        return str(Path(path).relative_to(out))
    except ValueError:
        return str(path)


def minutes(seconds: float) -> str:
    """``754.2`` -> ``12m34s``; under a minute ``42.3s``."""
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{seconds:.1f}s"


def markdown(report: dict, out: Path) -> str:
    """``report.md``: every table of the report, the plots and pictures, the steps' times."""
    options, data = report["options"], report["data"]
    speed, pruning = report["speed"], report["pruning"]
    h, w = speed["size"]
    source = (
        f"synthetic ({data['difficulty']}), {data['counts'][data['train_split']]['images']} "
        f"train / {data['counts'][data['val_split']]['images']} val pictures"
        if data["synthetic"]
        else f"{data['root']} ({data['train_split']} / {data['val_split']})"
    )
    machine = report["machine"]
    lines = [
        "# bpnet demo report",
        "",
        f"`bpnet demo -r {out} --budget {options['budget_minutes']:g}"
        + ("" if options["data"] is None else f" --data {options['data']}")
        + f"`: {len(report['steps'])} steps in {minutes(report['total_seconds'])} "
        f"(steps skipped as done in an earlier run count their first run's time). Data: {source}. "
        f"Machine: {machine['cpu']}, threads: {machine['threads']}, torch {machine['torch']}, "
        f"onnxruntime {machine['onnxruntime']}. Every figure below was measured by this run.",
        "",
        "## Accuracy (COCO keypoint AP, pycocotools OKS, maxDets 20)",
        "",
    ]
    for name, rows in report["accuracy"].items():
        if not rows:
            continue
        first = rows[0]
        lines += [f"### {name.replace('_', ' ')}: {first['data']} ({first['images']} pictures)", ""]
        lines += markdown_table(
            ["model", "form", "mode", *AP_COLUMNS, "results"],
            [
                [
                    r["model"],
                    r["form"],
                    r["mode"],
                    *(_ap(r[k]) for k in AP_COLUMNS),
                    f"`{_rel(r['results'], out)}`",
                ]
                for r in rows
            ],
        )
        lines.append("")
    real = report["real_photos"]
    if real["skipped"]:
        lines += [f"Real photos: skipped ({real['skipped']}).", ""]
    elif real.get("pruning"):
        cut = real["pruning"]
        lines += [
            f"`{PRUNED_ONLY}`: the imported network pruned to {cut['summary']} (report: "
            f"`{_rel(cut['report'], out)}`).",
            "",
        ]
    lines += ["## INT8 AP drop (FP32 AP - INT8 AP)", ""]
    lines += markdown_table(
        [
            "model",
            "data",
            "mode",
            "FP32 AP (PyTorch)",
            "INT8 AP (ONNX Runtime)",
            "drop",
            "nodes kept FP32",
            "INT8 max abs. diff. vs PyTorch (one input)",
        ],
        [
            [
                d["model"],
                d["data"],
                d["mode"],
                _ap(d["fp32_AP"]),
                _ap(d["int8_AP"]),
                _signed(d["drop"]),
                str(d["kept_fp32"]),
                f"{d['int8_max_abs_diff']:.1e}",
            ]
            for d in report["int8_drop"]
        ],
    )
    lines += [
        "",
        "## Pruning",
        "",
        f"`bpnet prune --stages {pruning['stages']} --rank_on {pruning['pictures']}` with "
        f"{len(pruning['left_whole'])} stage convs left whole (`-el`) and threshold "
        f"`-pth {pruning['threshold']:g}` (TAO's other options at their defaults): "
        f"{pruning['macs_kept']:.1%} of the MACs and {pruning['params_kept']:.1%} of the "
        f"parameters kept, {pruning['reason']} (the sweep: "
        f"`{_rel(report['files']['sweep'], out)}`)."
        + (f" bpnet prune's {pruning['note']}." if pruning["note"] else ""),
        "",
    ]
    lines += markdown_table(
        [
            "mode",
            "fine-tuned AP",
            "pruned AP (before retraining)",
            "pruned + retrained AP",
            "pruning AP drop",
        ],
        [
            [
                d["mode"],
                _ap(d["fine_tuned_AP"]),
                _ap(d["pruned_AP"]),
                _ap(d["retrained_AP"]),
                _signed(d["drop"]),
            ]
            for d in pruning["drop"]
        ],
    )
    training = report["training"]
    lines += [
        "",
        f"Training: fine-tuning {training['train']['epochs']} epochs of ~"
        f"{training['train']['samples']} pictures ({training['train']['images_per_s']} images/s at "
        f"the end), retraining {training['retrain']['epochs']} epochs "
        f"({training['retrain']['images_per_s']} images/s).",
        "",
        "## Size and speed",
        "",
        f"The network alone (no image decoding or people decoding), batch 1, {h}x{w}, "
        f"threads: {speed['threads']}, median of {speed['rounds']} interleaved rounds (OpenPose: "
        "the frames column). GFLOPs = 2 x the convolutions' multiply-accumulates at "
        f"{h}x{w}, as `bpnet prune` counts them. OpenPose COCO is CMU's network with random "
        "weights (speed only).",
        "",
    ]
    models = report["models"]
    lines += markdown_table(
        [
            "model",
            "parameters",
            "GFLOPs",
            "runtime",
            "ms/frame",
            "FPS",
            "speed-up vs OpenPose",
            "frames",
        ],
        [
            [
                r["model"],
                f"{models[r['model']]['params']:,}",
                f"{models[r['model']]['gflops']:.2f}",
                r["runtime"],
                f"{r['ms']:.1f}",
                f"{r['fps']:.1f}",
                _x(r["speedup_vs_openpose"]),
                str(r["frames"]),
            ]
            for r in speed["rows"]
        ],
    )
    files = report["files"]
    lines.append("")
    if files["fps_chart"]:
        lines += [f"![frames per second per runtime]({_rel(files['fps_chart'], out)})", ""]
    else:
        lines += ["(fps.png not drawn: matplotlib is not installed; `pip install matplotlib`)", ""]
    lines += [
        "## Learning curves",
        "",
        f"![fine-tuning]({_rel(files['learning_curve'], out)}) "
        f"![retraining]({_rel(files['retrain_curve'], out)})",
        "",
        "## Pictures",
        "",
    ]
    for name, pictures in files["pictures"].items():
        lines += [f"{name}:", ""] + [f"![{name}]({_rel(p, out)})" for p in pictures] + [""]
    lines += ["## Steps", ""]
    lines += markdown_table(
        ["#", "step", "folder", "time"],
        [
            [
                str(i),
                s["title"],
                f"`{s['step']}/`",
                minutes(s["seconds"]) + (" (earlier run)" if s["skipped"] else ""),
            ]
            for i, s in enumerate(report["steps"], 1)
        ],
    )
    return "\n".join(lines) + "\n"


def terminal_table(report: dict, out: Path) -> str:
    """The same numbers, compact: AP per model and mode, size and speed, the two drops, the
    time of each step."""
    lines = [f"bpnet demo: report in {out / 'report.md'}", ""]
    keys = ("AP", "AP50", "APm", "APl")
    for name, rows in report["accuracy"].items():
        if not rows:
            continue
        modes = list(dict.fromkeys(r["mode"] for r in rows))
        first = rows[0]
        what = name.replace("_", " ")
        lines.append(f"COCO AP, {what}: {first['data']} ({first['images']} pictures)")
        lines.append(f"{'model':<27}{'form':<17}" + "".join(f"{m:>26}" for m in modes))
        lines.append(" " * 44 + ("  " + "".join(f"{k:>6}" for k in keys)) * len(modes))
        for model, form in dict.fromkeys((r["model"], r["form"]) for r in rows):
            cells = ""
            for mode in modes:
                row = _row(rows, model, form, mode)
                cells += "  " + "".join(f"{_ap(row[k]) if row else '':>6}" for k in keys)
            lines.append(f"{model:<27}{form:<17}{cells}")
        lines.append("")
    if report["real_photos"].get("pruning"):
        lines += [f"real photos, {PRUNED_ONLY}: not retrained (report.md says why)", ""]
    speed, models = report["speed"], report["models"]
    runtimes = list(dict.fromkeys(r["runtime"] for r in speed["rows"]))
    h, w = speed["size"]
    lines.append(
        f"size and speed at {h}x{w}, threads: {speed['threads']}: ms/frame (FPS) and speed-up "
        "vs OpenPose in the same runtime; GFLOPs = 2 x conv MACs"
    )
    lines.append(
        f"{'model':<20}{'params':>12}{'GFLOPs':>8}" + "".join(f"{r:>28}" for r in runtimes)
    )
    for model in dict.fromkeys(r["model"] for r in speed["rows"]):
        cells = ""
        for runtime in runtimes:
            row = _speed(speed["rows"], model, runtime)
            cell = f"{row['ms']:.1f} ({row['fps']:.1f}) {_x(row['speedup_vs_openpose'])}"
            cells += f"{cell:>28}"
        cost = models[model]
        lines.append(f"{model:<20}{cost['params']:>12,}{cost['gflops']:>8.2f}{cells}")
    lines.append("")
    for d in report["int8_drop"]:
        lines.append(
            f"INT8 AP drop, {d['model']} ({d['data']}, {d['mode']}): {_signed(d['drop'])} "
            f"({_ap(d['fp32_AP'])} -> {_ap(d['int8_AP'])})"
        )
    pruning = report["pruning"]
    for d in pruning["drop"]:
        before = "" if d["pruned_AP"] is None else f"; {_ap(d['pruned_AP'])} before retraining"
        lines.append(
            f"pruning AP drop (-pth {pruning['threshold']:g}: {pruning['macs_kept']:.0%} of the "
            f"MACs, {pruning['params_kept']:.0%} of the parameters; {d['mode']}): "
            f"{_signed(d['drop'])} ({_ap(d['fine_tuned_AP'])} -> {_ap(d['retrained_AP'])}{before})"
        )
    steps = ", ".join(f"{s['step']} {minutes(s['seconds'])}" for s in report["steps"])
    lines += ["", f"{len(report['steps'])} steps in {minutes(report['total_seconds'])}: {steps}"]
    return "\n".join(lines)


def _speed(rows: list[dict], model: str, runtime: str) -> dict:
    return next(r for r in rows if (r["model"], r["runtime"]) == (model, runtime))


__all__ = ["build_report", "draw_fps_chart", "markdown", "terminal_table", "write_report"]
