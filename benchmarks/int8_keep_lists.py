"""Node lists for ``bpnet export --data_type int8 --sensitivity off --keep_fp32 LIST``: the
bisection by operator type of docs/BENCHMARKS.md ("Which quantized operators destroy it").

Usage::

    python benchmarks/int8_keep_lists.py MODEL.fp32.onnx OUT_FOLDER

writes one file per experiment into OUT_FOLDER, each a comma-separated node list:
``only_<kind>.txt`` keeps every other quantizable node FP32 (only <kind> is quantized);
``fp32_<kind>.txt`` keeps <kind> FP32; ``fp32_stage_inputs.txt`` the stage-input concats and
the convs reading them (through a depthwise conv, the 1x1 after it). Then, e.g.::

    bpnet export -m M -o X.int8.onnx --data_type int8 --sensitivity off \\
        --keep_fp32 "$(cat OUT_FOLDER/only_concat.txt)" ...
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import onnx

SHAPE_OPS = {"Constant", "Shape", "Gather", "Cast", "Unsqueeze", "ConstantOfShape", "Reshape"}


def depthwise(node) -> bool:
    return node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)


KINDS = {
    "concat": lambda n: n.op_type == "Concat",
    "depthwise_conv": depthwise,
    "other_conv": lambda n: n.op_type == "Conv" and not depthwise(n),
    "instance_norm": lambda n: n.op_type == "InstanceNormalization",
    "add": lambda n: n.op_type == "Add",
    "pad": lambda n: n.op_type == "Pad",
    "activation": lambda n: n.op_type in ("Clip", "Relu"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    graph = onnx.load(str(args.model)).graph
    nodes = [n for n in graph.node if n.name and n.op_type not in SHAPE_OPS]
    args.out.mkdir(parents=True, exist_ok=True)
    lists = {}
    for kind, test in KINDS.items():
        lists[f"only_{kind}"] = [n.name for n in nodes if not test(n)]
        lists[f"fp32_{kind}"] = [n.name for n in nodes if test(n)]
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    stage_inputs = []
    for node in graph.node:  # the exporter names the stage-input concats /model/Concat*
        if node.op_type == "Concat" and node.name.startswith("/model/Concat"):
            stage_inputs.append(node.name)
            for conv in readers[node.output[0]]:
                stage_inputs.append(conv.name)
                if depthwise(conv):
                    stage_inputs += [after.name for after in readers[conv.output[0]]]
    lists["fp32_stage_inputs"] = list(dict.fromkeys(stage_inputs))
    for name, names in lists.items():
        (args.out / f"{name}.txt").write_text(",".join(names))
        print(f"{name}: {len(names)} nodes")


if __name__ == "__main__":
    main()
