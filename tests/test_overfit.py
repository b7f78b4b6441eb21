"""Overfitting real COCO images, at a tiny scale: the whole chain learns something it can decode.

The acceptance run (docs/BENCHMARKS.md) trains on all 50 fixture train2017 images and reaches
the AP target on them; this is the same experiment on 2 images at 160 x 160 with a 0.125-width
network for 200 steps (~15 s on two CPU cores). Loader, loss masks, targets, loss, the
network, the decoder and the COCO evaluation must all agree on coordinates for the AP to
move off zero: a half-cell shift between encoder and decoder, a flipped PAF sign or a
mis-scaled letterbox each keep it at zero.
"""

import io
from pathlib import Path

import torch
import yaml

from bpnet.config import load_experiment_spec, load_inference_spec, resolve_pose_config
from bpnet.data.dataset import build_dataloader
from bpnet.evaluate.evaluate import evaluate
from bpnet.inference.torch_source import TorchSource
from bpnet.models import build_model, load_trained
from bpnet.train.trainer import batch_targets, compute_loss, train
from coco_subset import subset

IMAGE_IDS = (12448, 328757)  # one labelled person each (8 keypoints), 267 and 503 px tall
SIZE = 160


def overfit_spec(root: Path, infer_spec: Path) -> dict:
    return {
        "random_seed": 7,
        "num_epoch": 200,  # one step of both images per epoch
        "checkpoint_n_epoch": 200,
        "validation_every_n_epoch": 200,
        "inference_spec": str(infer_spec),
        "log_every_n_secs": 100,
        "use_stagewise_lr_multipliers": False,
        "dataloader": {
            "batch_size": 2,
            "image_config": {"image_dims": {"height": SIZE, "width": SIZE}},
            "dataset_config": {
                "root_data_path": str(root),
                "train_split": "train",
                "val_split": "train",  # scored on the images it learns
                "min_acceptable_kpts": 1,
            },
            # the letterboxed whole image, exactly what strict-mode evaluation feeds the network
            "augmentation_config": {
                "spatial_augmentation_mode": "none",
                "color_aug_params": {"prob": 0.0},
            },
            "label_processor_config": {"heatmap_gaussian_sigma": 5.0},
        },
        "model": {
            "backbone_attributes": {"width_multiplier": 0.125},
            "stages": 2,
            "num_filters": 64,
            "stage_kernel_sizes": [3, 3],
            "stage_batch_norm": True,
            "regularization_type": "none",
        },
        "optimizer": {
            "type": "adam",
            "learning_rate_schedule": {"schedule": "constant", "base_learning_rate": 3e-3},
        },
    }


def test_training_on_two_real_images_takes_their_ap_off_zero(coco_fixture, tmp_path):
    root = tmp_path / "data"
    subset(coco_fixture, "train2017", IMAGE_IDS, root, "train")
    infer_spec = tmp_path / "infer.yaml"
    infer_spec.write_text(
        yaml.safe_dump({"input_shape": [SIZE, SIZE], "keep_aspect_ratio_mode": "pad_image_input"})
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(overfit_spec(root, infer_spec)))
    spec = load_experiment_spec(spec_file)
    pose = resolve_pose_config(spec.dataloader)

    torch.manual_seed(spec.random_seed)  # the network train() starts from
    untrained = TorchSource(build_model(spec.model, pose).eval())
    before = evaluate(
        root, "train", tmp_path / "before", untrained, pose, load_inference_spec(infer_spec)
    ).metrics["AP"]

    summary = train(spec, tmp_path / "run", stream=io.StringIO())
    after = summary["validation"]["AP"]
    assert summary["steps"] == 200
    assert before < 0.02, before
    assert after >= 0.1, f"AP {before:.3f} -> {after:.3f} after 200 steps"

    # and its loss on the two images is well below the loss of answering "background
    # everywhere" (background heatmap 1, every joint and PAF 0), the plateau the from-scratch
    # runs once sat beside
    trained = load_trained(tmp_path / "run" / "model_epoch_200.pth").model.eval()
    batch = next(iter(build_dataloader(spec, train=True, pose=pose, shuffle=False)))
    targets = batch_targets(batch, pose, trained.stride, spec)
    with torch.no_grad():
        outputs = trained(batch["image"])
    background = []
    for heat, paf in outputs:
        flat = torch.zeros_like(heat)
        flat[:, -1] = 1.0
        background.append((flat, torch.zeros_like(paf)))
    learnt = compute_loss(outputs, targets, spec)["loss"].item()
    plateau = compute_loss(background, targets, spec)["loss"].item()
    assert learnt < 0.5 * plateau, f"loss {learnt:.1f} vs all-background {plateau:.1f}"
