"""What ``bpnet bench model`` writes: ``bench.json``, ``bench.md`` (the tables) and the PNG plots
(matplotlib, an optional extra: ``pip install 'bpnet[bench]'``), from the result of
:func:`bpnet.bench.model.bench_models`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bpnet.io import atomic_path, write_json_atomic, write_text_atomic

REFERENCE_SIZE = (288, 384)  # TAO's strict-mode size: the one the AP plot uses when measured


def write_report(result: dict, out: str | os.PathLike) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and the plots (when matplotlib is installed) into
    ``out``; return the files written by role (``json``, ``table``, ``fps_plot``, ``ap_plot``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "bench.json", "table": out / "bench.md"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result["notes"].append("matplotlib is not installed (pip install 'bpnet[bench]'): no plots")
    else:
        files["fps_plot"] = plot_fps(result, out / "fps_per_size.png")
        if any(row["ap"] is not None for row in result["cells"]):
            files["ap_plot"] = plot_ap(result, out / "ap_vs_fps.png")
    write_json_atomic(files["json"], result, indent=2)
    write_text_atomic(files["table"], render_markdown(result, files))
    return files


def render_markdown(result: dict, files: dict[str, Path] | None = None) -> str:
    """The tables of ``bench.md``: network cells, end-to-end cells, the fastest runtime per
    model at an equal AP, and the notes."""
    machine, settings = result["machine"], result["settings"]
    versions = ", ".join(
        f"{name} {machine[name]}" for name in ("torch", "onnxruntime", "openvino") if machine[name]
    )
    lines = [
        "# bpnet bench model",
        "",
        f"CPU: {machine['cpu']} ({machine['cores']} cores; {', '.join(machine['isa']) or 'no AVX2'}"
        f"); {machine['threads']} threads per runtime; {versions}.",
        f"Network only: median of {settings['rounds']} interleaved rounds after "
        f"{settings['warmup']} warm-up calls; one prepared input per call (no image decoding, "
        "warping or people decoding).",
    ]
    baseline = settings["baseline"]
    for model in result["models"]:
        if model["note"]:
            lines.append(f"{model['label']}: {model['note']}.")
    ratio_header = f"x {baseline or 'baseline'}"
    lines += [""]
    lines += markdown_table(
        ["model", "input", "runtime", "batch", "ms/frame", "FPS", ratio_header, "AP"],
        [
            [
                *_cell_start(row),
                str(row["batch"]),
                f"{row['ms_per_frame']:.1f}",
                f"{row['fps']:.1f}",
                "" if row["vs_baseline"] is None else f"{row['vs_baseline']:.2f}x",
                "" if row["ap"] is None else f"{row['ap']:.3f}",
            ]
            for row in result["cells"]
        ],
    )
    if result["end_to_end"]:
        lines += [
            "",
            "End-to-end, batch 1 (one picture: warp, normalise, network, map fusion, decoding):",
            "",
        ]
        header = ["model", "input", "runtime", "ms/frame", "FPS", "pre-processing + network ms"]
        lines += markdown_table(
            [*header, "decode ms", "people"],
            [
                [
                    *_cell_start(row),
                    f"{row['ms_per_frame']:.1f}",
                    f"{row['fps']:.1f}",
                    f"{row['maps_ms']:.1f}",
                    f"{row['decode_ms']:.1f}",
                    str(row["people"]),
                ]
                for row in result["end_to_end"]
            ],
        )
    if result["best"]:
        lines += [
            "",
            f"Fastest runtime per model at an equal AP (within {settings['ap_tolerance']:g} of the "
            "best AP "
            "given; batch 1; runtimes without a given AP are not candidates):",
            "",
        ]
        lines += markdown_table(
            ["model", "input", "runtime", "FPS", "AP", "candidates", "AP given for"],
            [
                [
                    *_cell_start(row),
                    f"{row['fps']:.1f}",
                    f"{row['ap']:.3f}",
                    ", ".join(row["candidates"]),
                    ", ".join(row["known_ap"]),
                ]
                for row in result["best"]
            ],
        )
    if result["notes"]:
        lines += ["", "Notes:", *[f"- {text}" for text in result["notes"]]]
    if files:
        pictures = [
            f"![{role}]({path.name})" for role, path in files.items() if role.endswith("plot")
        ]
        if pictures:
            lines += ["", *pictures]
    return "\n".join(lines) + "\n"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines: the header, the separator, one line per row of cell texts."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _cell_start(row: dict) -> list[str]:
    """The model, input size and runtime columns every table starts with."""
    return [row["model"], size_text(row["size"]), row["runtime"]]


def plot_fps(result: dict, path: Path) -> Path:
    """FPS per input size, one panel per runtime, a bar per model (the smallest batch; log
    scale): bpnet beside the baseline, as the BodyPoseNet report draws it."""
    from matplotlib.figure import Figure

    batch = min(result["settings"]["batches"])
    rows = [r for r in result["cells"] if r["batch"] == batch]
    runtimes = [r for r in result["settings"]["runtimes"] if any(x["runtime"] == r for x in rows)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    sizes = [tuple(s) for s in result["settings"]["sizes"]]
    columns = min(3, max(1, len(runtimes)))
    panels = max(1, len(runtimes))
    rows_of_panels = -(-panels // columns)
    figure = Figure(figsize=(5 * columns, 3.6 * rows_of_panels))
    axes = figure.subplots(rows_of_panels, columns, squeeze=False, sharey=True)
    width = 0.8 / max(1, len(models))
    baseline = result["settings"]["baseline"]
    for axis, runtime in zip(axes.flat, runtimes, strict=False):
        for i, model in enumerate(models):
            fps = {
                tuple(r["size"]): r["fps"]
                for r in rows
                if r["model"] == model and r["runtime"] == runtime
            }
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(sizes))]
            values = [fps.get(size, np.nan) for size in sizes]
            style = {"hatch": "//", "color": "0.6"} if model == baseline else {}
            bars = axis.bar(xs, values, width, label=model, **style)
            axis.bar_label(bars, fmt="%.3g", fontsize=6)
        axis.set_title(f"{runtime} (batch {batch})")
        axis.set_xticks(range(len(sizes)), [size_text(s) for s in sizes])
        axis.set_yscale("log")
        axis.set_ylabel("frames/s (network)")
        axis.grid(axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(runtimes) :]:
        axis.set_visible(False)
    measured = [r["fps"] for r in rows]
    if measured:  # one log axis for every panel, the slowest bar still visible
        axes.flat[0].set_ylim(min(measured) / 2, max(measured) * 2)
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"FPS per input size, {result['machine']['threads']} threads")
    figure.tight_layout()
    _save(figure, path)
    return path


def plot_ap(result: dict, path: Path) -> Path:
    """AP vs FPS of the cells with a given AP at the reference size (288x384 when measured,
    else the first size), batch 1."""
    from matplotlib.figure import Figure

    sizes = [tuple(s) for s in result["settings"]["sizes"]]
    size = REFERENCE_SIZE if REFERENCE_SIZE in sizes else sizes[0]
    rows = [
        r
        for r in result["cells"]
        if r["ap"] is not None and r["batch"] == 1 and tuple(r["size"]) == size
    ]
    figure = Figure(figsize=(6, 4.2))
    axis = figure.subplots()
    for row in rows:
        axis.scatter(row["fps"], row["ap"])
        axis.annotate(f"{row['model']} {row['runtime']}", (row["fps"], row["ap"]), fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel(f"frames/s (network, {size_text(size)}, batch 1)")
    axis.set_ylabel("AP (as given)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    return path


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def size_text(size) -> str:
    """(288, 384) -> ``288x384``."""
    return f"{size[0]}x{size[1]}"
