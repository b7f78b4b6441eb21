"""Parameter counts of the model presets: ``python benchmarks/model_sizes.py``.

``with BN statistics`` counts batch-norm running means/variances too, as Keras (and so TAO's
published figures) does.
"""

from bpnet.config import load_experiment_spec
from bpnet.models import build_model, count_parameters
from bpnet.pose import load_pose_config

PRESETS = {
    "TAO default (vgg, stages 3)": [],
    "TAO default (vgg, stages 6)": ["model.stages=6"],
    "resnet18, stages 3": ["model.backbone_attributes.architecture=resnet"],
    "openpose_coco (CMU, stages 6)": [
        "model.backbone_attributes.architecture=openpose",
        "model.backbone_attributes.mtype=openpose_coco",
        "model.stages=6",
    ],
}


def main() -> None:
    pose = load_pose_config()
    rows = [(name, load_experiment_spec(None, overrides)) for name, overrides in PRESETS.items()]
    scratch = "specs/synthetic_scratch.yaml"
    rows.append((scratch, load_experiment_spec(scratch)))
    print("| model | parameters | with BN statistics |\n|---|---|---|")
    for name, spec in rows:
        model = build_model(spec.model, pose)
        plain, keras = count_parameters(model), count_parameters(model, with_bn_statistics=True)
        print(f"| {name} | {plain:,} | {keras:,} |")


if __name__ == "__main__":
    main()
