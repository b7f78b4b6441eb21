"""Stage presets (heatmap + PAF prediction), written as arch stage lists.

Two layouts:

* ``lite_stages`` - TAO BodyPoseNet ("BpNetLite"): a trunk shared by both branches.
  Stage 1: 3x3 convs (``stage1_kernels``) of ``num_filters``, then per branch a 1x1 512
  and a 1x1 output. Stage t >= 2: input concat[F, heatmaps, PAFs]; convs of
  ``stage_kernel_sizes`` (default five 7x7) of ``num_filters``, then per branch a 1x1
  ``num_filters``, the optional self-attention gate (3x3, sigmoid for heatmaps, tanh for
  PAFs) and a 1x1 output.
* ``openpose_stages`` - CMU OpenPose: two separate branches in every stage. Stage 1:
  three 3x3 convs of ``num_filters``, 1x1 512, 1x1 output. Stage t >= 2: input
  concat[PAFs, heatmaps, F]; convs of ``stage_kernel_sizes``, 1x1 ``num_filters``, 1x1 output.

Output convs have no activation and keep ``num_heatmaps`` / ``num_pafs`` channels whatever
the width multiplier. ``bn`` puts batch norm after every other stage conv (not in TAO or CMU:
their stages train from ImageNet features; from scratch, without it, the deep 7x7 stacks sit
on the predict-the-mean plateau for thousands of steps, see ``model.stage_batch_norm``).
"""

from __future__ import annotations

from bpnet.models.backbones import Width, conv

STAGE1_KERNELS = (3, 3, 3)
STAGE1_BRANCH_WIDTH = 512  # nominal width of stage 1's 1x1 branch conv (TAO and CMU)


def _branch(convs: list[dict], out: int, *, bias: bool, attention: dict | None = None) -> dict:
    return {
        "convs": convs,
        "attention": attention,
        "out": conv("out", out, 1, bias=bias, bn=False, act="none"),
    }


def lite_stages(
    num_stages: int,
    *,
    num_heatmaps: int,
    num_pafs: int,
    width: Width,
    num_filters: int,
    stage_kernel_sizes: tuple[int, ...],
    use_self_attention: bool,
    bias: bool,
    bn: bool = False,
) -> list[dict]:
    """TAO BodyPoseNet's stages (see the module docstring); ``num_filters`` is nominal."""
    filters = width(num_filters)
    stages = []
    for index in range(num_stages):
        first = index == 0
        kernels = STAGE1_KERNELS if first else stage_kernel_sizes
        trunk = [conv(f"conv{i + 1}", filters, k, bias=bias, bn=bn) for i, k in enumerate(kernels)]
        branch_width = width(STAGE1_BRANCH_WIDTH) if first else filters
        hidden = f"conv{len(kernels) + 1}"
        branches = {}
        for name, out, gate in (("heatmap", num_heatmaps, "sigmoid"), ("paf", num_pafs, "tanh")):
            attention = None
            if use_self_attention and not first:  # TAO gates refinement stages only
                attention = conv("attention", branch_width, 3, bias=bias, bn=False, act=gate)
            branches[name] = _branch(
                [conv(hidden, branch_width, 1, bias=bias, bn=bn)],
                out,
                bias=bias,
                attention=attention,
            )
        stages.append(
            {
                "inputs": ["features"] if first else ["features", "heatmaps", "pafs"],
                "trunk": trunk,
                **branches,
            }
        )
    return stages


def openpose_stages(
    num_stages: int,
    *,
    num_heatmaps: int,
    num_pafs: int,
    width: Width,
    num_filters: int,
    stage_kernel_sizes: tuple[int, ...],
    use_self_attention: bool = False,
    bn: bool = False,
) -> list[dict]:
    """CMU OpenPose's two-branch stages (see the module docstring); biases, no BN unless
    ``bn``."""
    filters = width(num_filters)
    stages = []
    for index in range(num_stages):
        first = index == 0
        kernels = STAGE1_KERNELS if first else stage_kernel_sizes
        last_width = width(STAGE1_BRANCH_WIDTH) if first else filters
        branches = {}
        for name, out, gate in (("heatmap", num_heatmaps, "sigmoid"), ("paf", num_pafs, "tanh")):
            convs = [
                conv(f"conv{i + 1}", filters, k, bias=True, bn=bn) for i, k in enumerate(kernels)
            ]
            convs.append(conv(f"conv{len(kernels) + 1}", last_width, 1, bias=True, bn=bn))
            attention = None
            if use_self_attention and not first:
                attention = conv("attention", last_width, 3, bias=True, bn=False, act=gate)
            branches[name] = _branch(convs, out, bias=True, attention=attention)
        stages.append(
            {
                "inputs": ["features"] if first else ["pafs", "heatmaps", "features"],
                "trunk": [],
                **branches,
            }
        )
    return stages


def separable_stages(
    num_stages: int,
    *,
    num_heatmaps: int,
    num_pafs: int,
    feature_width: int,
    num_filters: int,
    stage_kernel_sizes: tuple[int, ...],
    bn: bool = True,
) -> list[dict]:
    """tf-pose's MobileNet OpenPose stages: two branches of depthwise-separable convs.

    Each separable conv is a depthwise conv (no normalisation, no activation) then a 1x1
    pointwise conv (batch norm when ``bn``, ReLU). Per branch: one separable conv of
    ``num_filters`` per kernel size (stage 1: three 3x3; later stages ``stage_kernel_sizes``),
    a 1x1 separable conv of 4 x ``num_filters`` (stage 1) or ``num_filters``, then a 1x1
    separable output conv (bias, no activation). Stage t >= 2 reads concat[PAFs, heatmaps, F],
    as tf-pose does. ``num_filters`` is the built width (not scaled by the width multiplier:
    tf-pose's stages are 64 wide behind its half-width backbone).

    Args:
        feature_width: channels of the backbone's features F (the first depthwise conv of
            each branch keeps its input's width).
    """

    def branch(in_width: int, kernels: tuple[int, ...], hidden: int, out: int) -> dict:
        convs = []
        widths = [num_filters] * len(kernels) + [hidden]
        for i, (kernel, width) in enumerate(zip((*kernels, 1), widths, strict=True), start=1):
            depthwise = conv(f"conv{i}_dw", in_width, kernel, bias=False, bn=False, act="none")
            convs += [
                {**depthwise, "depthwise": True},
                conv(f"conv{i}_pw", width, 1, bias=not bn, bn=bn),
            ]
            in_width = width
        last = conv(f"conv{len(widths) + 1}_dw", in_width, 1, bias=False, bn=False, act="none")
        convs.append({**last, "depthwise": True})
        return {
            "convs": convs,
            "attention": None,
            "out": conv("out", out, 1, bias=True, bn=False, act="none"),
        }

    stages = []
    for index in range(num_stages):
        first = index == 0
        in_width = feature_width if first else num_pafs + num_heatmaps + feature_width
        kernels = STAGE1_KERNELS if first else tuple(stage_kernel_sizes)
        hidden = 4 * num_filters if first else num_filters
        stages.append(
            {
                "inputs": ["features"] if first else ["pafs", "heatmaps", "features"],
                "trunk": [],
                "heatmap": branch(in_width, kernels, hidden, num_heatmaps),
                "paf": branch(in_width, kernels, hidden, num_pafs),
            }
        )
    return stages
