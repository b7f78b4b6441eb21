"""Experiment spec: frozen, typed dataclasses with TAO BodyPoseNet's field names.

A TAO user recognises the tree (``dataloader``, ``augmentation_config``,
``label_processor_config``, ``model``, ``optimizer``, ``loss``, ...). Units are ours and stated
on each field. Only :func:`bpnet.config.load_experiment_spec` reads YAML; everything else
takes these objects or plain arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bpnet.config.loader import SpecValueError

STRIDE = 8  # network output stride: every input side must be a multiple of it


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise SpecValueError(field_name, message)


def _check_side(value: int, field_name: str) -> None:
    _require(value > 0, field_name, f"must be positive, got {value}")
    _require(
        value % STRIDE == 0,
        field_name,
        f"must be a multiple of {STRIDE} (the output stride), got {value}; "
        f"try {max(STRIDE, round(value / STRIDE) * STRIDE)}",
    )


@dataclass(frozen=True)
class ImageDims:
    """Network input size in pixels (training crop)."""

    height: int = 368
    width: int = 368
    channels: int = 3

    def __post_init__(self):
        _check_side(self.height, "height")
        _check_side(self.width, "width")
        _require(self.channels == 3, "channels", f"only 3 (RGB) is supported, got {self.channels}")


@dataclass(frozen=True)
class ImageConfig:
    image_dims: ImageDims = field(default_factory=ImageDims)
    image_encoding: Literal["jpg", "png"] = "jpg"


@dataclass(frozen=True)
class PoseConfigRef:
    """Which skeleton to use; None means the built-in 18-joint BodyPoseNet skeleton."""

    pose_config_path: str | None = None


@dataclass(frozen=True)
class DatasetConfig:
    """Where the data is and which people anchor training crops (TAO's data filtering).

    The dataset is a COCO-layout root: ``annotations/person_keypoints_<split>.json`` and
    ``<split>/`` images. A person becomes a "main person" (the centre of one training crop)
    when it passes every filter below; every labelled person (up to ``max_people`` per
    image, largest first) still gets targets, and people beyond that are masked out.
    """

    root_data_path: str | None = None
    # null: no labelled training split (only unlabelled_images, taught by a teacher_model)
    train_split: str | None = "train2017"
    val_split: str = "val2017"
    min_acceptable_kpts: int = 5
    min_acceptable_width: float = 32.0  # pixels of the person's box
    min_acceptable_height: float = 32.0
    # skip a main person whose centre is closer than this ratio of an earlier main person's
    # larger box side (near-duplicate crops)
    min_acceptable_interperson_dist_ratio: float = 0.3
    max_people: int = 40  # people per sample kept for targets (padding size of a batch)
    use_images_without_people: bool = False  # add each person-free image once, as a negative
    # a folder of pictures without labels added to training (whole-image samples; only a
    # teacher_model's maps teach on them): video frames, backgrounds, a user's photos
    unlabelled_images: str | None = None

    def __post_init__(self):
        _require(self.min_acceptable_kpts >= 0, "min_acceptable_kpts", "must be >= 0")
        _require(self.min_acceptable_width >= 0, "min_acceptable_width", "must be >= 0")
        _require(self.min_acceptable_height >= 0, "min_acceptable_height", "must be >= 0")
        _require(
            self.min_acceptable_interperson_dist_ratio >= 0,
            "min_acceptable_interperson_dist_ratio",
            "must be >= 0",
        )
        _require(self.max_people >= 1, "max_people", "must be >= 1")
        _require(
            self.train_split is not None or self.unlabelled_images is not None,
            "train_split",
            "is null, so training needs unlabelled_images (a folder of pictures)",
        )


@dataclass(frozen=True)
class NormalizationParams:
    """network_input = pixel_rgb / image_scale - image_offset (TAO's defaults)."""

    image_scale: tuple[float, float, float] = (256.0, 256.0, 256.0)
    image_offset: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self):
        _require(all(s > 0 for s in self.image_scale), "image_scale", "must be positive")


@dataclass(frozen=True)
class SpatialAugParams:
    """Spatial augmentation (one affine transform for image, joints, mask).

    ``target_person_scale`` places the main person (``person_centric``); ``whole_image`` fits
    the picture into the crop instead. Zoom, rotation, shift and flip apply to both.
    """

    flip_lr_prob: float = 0.5
    rotate_deg_max: float = 40.0  # uniform in [-max, max]
    translate_max_x: float = 40.0  # pixels of the network input
    translate_max_y: float = 40.0
    target_person_scale: float = 0.6  # main person's height as a fraction of the crop height
    zoom_prob: float = 1.0
    zoom_ratio_min: float = 0.7  # extra random zoom on top of target_person_scale
    zoom_ratio_max: float = 1.3

    def __post_init__(self):
        _require(0 <= self.flip_lr_prob <= 1, "flip_lr_prob", "must be in [0, 1]")
        _require(0 <= self.zoom_prob <= 1, "zoom_prob", "must be in [0, 1]")
        _require(0 <= self.rotate_deg_max <= 180, "rotate_deg_max", "must be in [0, 180]")
        _require(self.translate_max_x >= 0, "translate_max_x", "must be >= 0")
        _require(self.translate_max_y >= 0, "translate_max_y", "must be >= 0")
        _require(0 < self.target_person_scale <= 2, "target_person_scale", "must be in (0, 2]")
        _require(
            0 < self.zoom_ratio_min <= self.zoom_ratio_max,
            "zoom_ratio_min",
            "must be positive and <= zoom_ratio_max",
        )


@dataclass(frozen=True)
class ColorAugParams:
    """Photometric jitter, applied with probability ``prob`` per sample."""

    prob: float = 0.8
    brightness: float = 0.25  # +-fraction of the intensity range
    contrast: float = 0.25  # multiplicative, 1 +- this
    saturation: float = 0.25
    hue_deg: float = 8.0

    def __post_init__(self):
        _require(0 <= self.prob <= 1, "prob", "must be in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            _require(0 <= getattr(self, name) < 1, name, "must be in [0, 1)")
        _require(0 <= self.hue_deg <= 180, "hue_deg", "must be in [0, 180]")


@dataclass(frozen=True)
class AugmentationConfig:
    """Training augmentation.

    ``spatial_augmentation_mode``: ``person_centric`` (TAO's: one sample per main person,
    zoomed so that person is ``target_person_scale`` of the crop), ``whole_image`` (one sample
    per image, the whole picture fitted into the crop, then the same random flip, rotation,
    zoom and shift: people at the sizes whole-image inference sees them, and every labelled
    person of the picture supervised in one pass) or ``none`` (the
    letterboxed image, strict-mode evaluation's input).
    """

    spatial_augmentation_mode: Literal["person_centric", "whole_image", "none"] = "person_centric"
    spatial_aug_params: SpatialAugParams = field(default_factory=SpatialAugParams)
    color_aug_params: ColorAugParams = field(default_factory=ColorAugParams)


@dataclass(frozen=True)
class LabelProcessorConfig:
    """Target encoding settings (used by the encoder)."""

    heatmap_gaussian_sigma: float = 7.0  # pixels of the network input
    paf_ortho_dist_thresh: float = 1.0  # PAF half-width, in output cells (x stride pixels)

    def __post_init__(self):
        _require(self.heatmap_gaussian_sigma > 0, "heatmap_gaussian_sigma", "must be positive")
        _require(self.paf_ortho_dist_thresh > 0, "paf_ortho_dist_thresh", "must be positive")


@dataclass(frozen=True)
class DataloaderConfig:
    batch_size: int = 10
    num_workers: int = 0  # DataLoader worker processes; 0 loads in the main process
    pose_config: PoseConfigRef = field(default_factory=PoseConfigRef)
    image_config: ImageConfig = field(default_factory=ImageConfig)
    dataset_config: DatasetConfig = field(default_factory=DatasetConfig)
    normalization_params: NormalizationParams = field(default_factory=NormalizationParams)
    augmentation_config: AugmentationConfig = field(default_factory=AugmentationConfig)
    label_processor_config: LabelProcessorConfig = field(default_factory=LabelProcessorConfig)

    def __post_init__(self):
        _require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.num_workers >= 0, "num_workers", "must be >= 0")


# Presets (``mtype``) each backbone architecture offers; "default" is always one of them.
MTYPES: dict[str, tuple[str, ...]] = {
    "vgg": ("default",),  # TAO BodyPoseNet's VGG19-BN backbone
    "resnet": ("default", "resnet18", "resnet10"),  # default = resnet18
    # openpose_coco: exactly CMU's COCO network (the spec must not change it); default: the
    # same layout with the spec's stages, widths and kernels (CMU's network at stages: 6)
    "openpose": ("default", "openpose_coco"),
    # MobileNetV2 + depthwise-separable stages (tf-pose's layout); tfpose: with tf-pose's
    # TensorFlow conventions, as `bpnet import --from tfpose` writes it
    "mobilenet_v2": ("default", "tfpose"),
}


@dataclass(frozen=True)
class BackboneAttributes:
    architecture: Literal["vgg", "resnet", "openpose", "mobilenet_v2"] = "vgg"
    mtype: str = "default"  # preset name within the architecture (see MTYPES)
    use_bias: bool = False
    # scales every backbone and stage width, never the output channels (small CPU presets);
    # scaled widths are rounded to a multiple of 8 (at least 8)
    width_multiplier: float = 1.0
    # vgg only: False downsamples with stride-2 convs instead of max-pools, as TAO's
    # VggNet(use_pooling=False) does (same parameters and conv MACs, no pooling pass)
    use_pooling: bool = True

    def __post_init__(self):
        _require(self.width_multiplier > 0, "width_multiplier", "must be positive")
        choices = MTYPES.get(self.architecture, ("default",))
        _require(
            self.mtype in choices,
            "mtype",
            f"unknown preset {self.mtype!r} for architecture {self.architecture}; "
            f"choose one of {', '.join(choices)}",
        )


@dataclass(frozen=True)
class ModelConfig:
    backbone_attributes: BackboneAttributes = field(default_factory=BackboneAttributes)
    stages: int = 3  # 1 initial + (stages - 1) refinement stages
    num_filters: int = 128  # stage width
    stage_kernel_sizes: tuple[int, ...] = (7, 7, 7, 7, 7)  # conv kernels of refinement stages
    use_self_attention: bool = False
    # batch norm after every stage conv but the outputs: not in TAO's or CMU's networks (they
    # start from ImageNet weights); needed to train from scratch in a CPU budget
    stage_batch_norm: bool = False
    # batch norms keep their stored statistics while training (fine-tuning with small batches)
    freeze_bn: bool = False
    # ImageNet backbone weights: a torchvision-layout state dict of vgg19_bn, resnet18 or
    # mobilenet_v2 (bpnet.models.pretrained_backbone); used when training starts from scratch
    pretrained_backbone: str | None = None
    data_format: Literal["channels_first", "channels_last"] = "channels_last"
    use_bias: bool = True
    regularization_type: Literal["l1", "l2", "l1_l2", "none"] = "l1"
    kernel_regularization_factor: float = 5e-4
    bias_regularization_factor: float = 0.0
    # "loss": TAO's, the term is added to the loss (under Adam it pulls every weight whose
    # gradient is weaker than the pull to zero at one learning-rate step per iteration, which
    # blinds the refinement stages); "decoupled": a shrink of lr x factor after each step, what
    # the term does under plain SGD, whatever the optimiser (bpnet.loss.shrink_weights; lr is
    # the scheduled base rate: stagewise multipliers do not scale the shrink)
    regularization_mode: Literal["loss", "decoupled"] = "loss"

    def __post_init__(self):
        _require(
            2 <= self.stages <= 7, "stages", f"must be in 2..7 (TAO's range), got {self.stages}"
        )
        _require(self.num_filters >= 1, "num_filters", "must be >= 1")
        _require(
            len(self.stage_kernel_sizes) > 0
            and all(k >= 1 and k % 2 == 1 for k in self.stage_kernel_sizes),
            "stage_kernel_sizes",
            "must be a non-empty list of odd, positive kernel sizes",
        )
        _require(self.kernel_regularization_factor >= 0, "kernel_regularization_factor", ">= 0")
        _require(self.bias_regularization_factor >= 0, "bias_regularization_factor", ">= 0")
        if self.backbone_attributes.mtype == "openpose_coco":
            cmu = {
                "stages": 6,
                "num_filters": 128,
                "stage_kernel_sizes": (7,) * 5,
                "use_self_attention": False,
                "stage_batch_norm": False,
            }
            for name, value in cmu.items():
                given = getattr(self, name)
                _require(
                    (tuple(given) if name == "stage_kernel_sizes" else given) == value,
                    name,
                    f"the openpose_coco preset is CMU's exact network ({name}: {value}); "
                    "use mtype: default to change the OpenPose layout",
                )
            _require(
                self.backbone_attributes.width_multiplier == 1.0,
                "backbone_attributes.width_multiplier",
                "the openpose_coco preset is CMU's exact network (1.0); use mtype: default",
            )


@dataclass(frozen=True)
class LearningRateSchedule:
    """TAO's soft-start annealing schedule (fractions of the total training steps)."""

    schedule: Literal["soft_start_annealing", "exponential_decay", "constant"] = (
        "soft_start_annealing"
    )
    base_learning_rate: float = 2e-5
    min_learning_rate: float = 8e-8
    soft_start: float = 0.05
    annealing: float = 0.5
    decay_rate: float = 0.1  # exponential_decay: factor per `decay_epochs`
    decay_epochs: float = 30.0

    def __post_init__(self):
        _require(self.base_learning_rate > 0, "base_learning_rate", "must be positive")
        _require(self.min_learning_rate >= 0, "min_learning_rate", "must be >= 0")
        _require(0 <= self.soft_start <= 1, "soft_start", "must be in [0, 1]")
        _require(0 <= self.annealing <= 1, "annealing", "must be in [0, 1]")
        _require(
            self.soft_start <= self.annealing,
            "soft_start",
            f"must be <= annealing ({self.annealing}): the warm-up ends before the decay starts",
        )
        _require(0 < self.decay_rate <= 1, "decay_rate", "must be in (0, 1]")
        _require(self.decay_epochs > 0, "decay_epochs", "must be positive")


@dataclass(frozen=True)
class OptimizerConfig:
    type: Literal["sgd", "adam"] = "sgd"
    learning_rate_schedule: LearningRateSchedule = field(default_factory=LearningRateSchedule)
    momentum: float = 0.9
    use_nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        _require(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")


@dataclass(frozen=True)
class LossConfig:
    type: Literal["l2", "focal_l2"] = "l2"
    focal_alpha: float = 2.0  # focal L2: weight grows with the error ** alpha
    focal_beta: float = 0.01  # focal L2: floor on the target to stay near ordinary L2
    heatmap_weight: float = 1.0
    paf_weight: float = 1.0
    # with a teacher_model: loss = label_weight * (loss on the labels) + teacher_weight * (the
    # same loss against the teacher's last-stage maps, every stage, every pixel)
    label_weight: float = 1.0
    teacher_weight: float = 1.0
    # teacher loss per pixel x (1 + teacher_peak_weight x the teacher's strongest joint there):
    # joints are a few percent of the pixels, and unweighted L2 is met by the background
    teacher_peak_weight: float = 0.0
    # which teacher maps teach which stage: "last" (the teacher's last stage teaches every
    # stage) or "matched" (stage k learns the teacher's stage k, the last stage its last: a
    # network with fewer stages keeps its early stages where they were)
    teacher_stages: Literal["last", "matched"] = "last"

    def __post_init__(self):
        _require(self.label_weight >= 0, "label_weight", "must be >= 0")
        _require(self.teacher_weight >= 0, "teacher_weight", "must be >= 0")
        _require(self.teacher_peak_weight >= 0, "teacher_peak_weight", "must be >= 0")
        _require(
            self.teacher_stages in ("last", "matched"), "teacher_stages", "use last or matched"
        )
        _require(self.focal_alpha >= 0, "focal_alpha", "must be >= 0 (0 is ordinary L2)")
        _require(self.focal_beta >= 0, "focal_beta", "must be >= 0")
        _require(self.heatmap_weight >= 0, "heatmap_weight", "must be >= 0")
        _require(self.paf_weight >= 0, "paf_weight", "must be >= 0")


@dataclass(frozen=True)
class ExperimentSpec:
    """The whole training experiment (``bpnet train -e SPEC``)."""

    num_epoch: int = 100
    checkpoint_n_epoch: int = 5
    validation_every_n_epoch: int = 5
    max_ckpt_to_keep: int = 100
    random_seed: int = 42
    log_every_n_secs: float = 30.0
    # TensorBoard event files in RESULTS/tensorboard (needs the tensorboard package)
    log_tensorboard: bool = False
    pretrained_weights: str | None = None
    load_graph: bool = False
    # distillation: a .pth whose last-stage maps are targets for every stage of the trained
    # network (retrain a pruned network without the original labels); loss.teacher_weight
    teacher_model: str | None = None
    # inference spec YAML for the validation runs (decoder settings, input size); None: TAO's
    # defaults with input_shape = the training image_dims
    inference_spec: str | None = None
    use_stagewise_lr_multipliers: bool = True
    mixed_precision: Literal["none", "bf16", "fp16"] = "none"
    dataloader: DataloaderConfig = field(default_factory=DataloaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        _require(self.num_epoch >= 1, "num_epoch", "must be >= 1")
        _require(self.checkpoint_n_epoch >= 1, "checkpoint_n_epoch", "must be >= 1")
        _require(self.validation_every_n_epoch >= 0, "validation_every_n_epoch", "must be >= 0")
        _require(self.max_ckpt_to_keep >= 1, "max_ckpt_to_keep", "must be >= 1")
        _require(self.random_seed >= 0, "random_seed", f"must be >= 0, got {self.random_seed}")
        _require(self.log_every_n_secs > 0, "log_every_n_secs", "must be positive")
