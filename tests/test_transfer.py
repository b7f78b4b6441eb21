"""Transfer learning: fine-tuning an imported network (another skeleton, frozen batch-norm
statistics) and retraining by distillation from a teacher on pictures without labels."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from bpnet.config import load_experiment_spec
from bpnet.convert.tfpose import import_tfpose
from bpnet.errors import DatasetError, SpecError
from bpnet.inference.runtime import load_model
from bpnet.models.checkpoint import save_checkpoint
from bpnet.pose import load_pose_config
from bpnet.pose.skeleton import load_pose_config as load_pose_file
from bpnet.prune import PruneSettings, prune_model
from bpnet.train import trainer, transfer

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "coco_fixture"
RAW_PIXELS = {"image_scale": [1.0, 1.0, 1.0], "image_offset": [0.0, 0.0, 0.0]}
MOBILENET = {"architecture": "mobilenet_v2", "mtype": "tfpose", "width_multiplier": 0.5}
TFPOSE_MODEL = {
    "backbone_attributes": MOBILENET,
    "stages": 6, "num_filters": 64, "stage_kernel_sizes": [3, 3, 3], "stage_batch_norm": True,
    "data_format": "channels_first", "regularization_type": "none",
}  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two real photos with people in a folder of their own, no annotation file: pictures
    without labels."""
    folder = tmp_path_factory.mktemp("unlabelled")
    for name in ("000000252219.jpg", "000000397133.jpg"):
        shutil.copy(FIXTURE / "val2017" / name, folder)
    return folder


def pictures_only(photos: Path) -> dict:
    """dataset_config for training on the pictures alone."""
    return {"train_split": None, "unlabelled_images": str(photos)}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tfpose") / "tfpose.pth"
    import_tfpose(REPO / "pretrained/tfpose_mobilenet_v2_small/graph_opt.pb", out, say=print)
    return out


def spec_file(path: Path, **top) -> Path:
    """A 64x64, batch-2 spec for the imported network's layout; ``top`` overrides sections."""
    spec = {
        "random_seed": 3,
        "num_epoch": 1,
        "validation_every_n_epoch": 0,
        "log_every_n_secs": 1000,
        "use_stagewise_lr_multipliers": False,
        "dataloader": {
            "batch_size": 2,
            "image_config": {"image_dims": {"height": 64, "width": 64}},
            "normalization_params": RAW_PIXELS,
            "augmentation_config": {"spatial_augmentation_mode": "whole_image"},
        },
        "model": TFPOSE_MODEL,
        "optimizer": {"type": "adam", "learning_rate_schedule": {"base_learning_rate": 1e-3}},
    }
    for key, value in top.items():
        if isinstance(value, dict):
            spec[key] = {**spec.get(key, {}), **value}
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec))
    return path


def test_fine_tuning_onto_another_skeleton_keeps_the_body(imported, five_joint_config, tmp_path):
    dataloader = {
        "batch_size": 2,
        "image_config": {"image_dims": {"height": 64, "width": 64}},
        "normalization_params": RAW_PIXELS,
        "pose_config": {"pose_config_path": str(five_joint_config)},
    }
    spec = load_experiment_spec(
        spec_file(tmp_path / "s.yaml", pretrained_weights=str(imported), dataloader=dataloader)
    )
    pose = load_pose_file(five_joint_config)
    said = []
    model, _ = trainer.build_training_model(spec, pose, None, said.append)
    # the outputs, and every conv reading the maps: stage t >= 2's first depthwise conv and
    # the pointwise conv after it, per branch
    fresh = {k.rsplit(".", 1)[0].removesuffix(".bn") for k in transfer.skeleton_tensors(model)}
    expected = {f"stage{s}.{b}.out" for s in range(1, 7) for b in ("heatmap", "paf")}
    expected |= {f"stage{s}.{b}.conv1_{k}" for s in range(2, 7) for b in ("heatmap", "paf")
                 for k in ("dw", "pw")}  # fmt: skip
    assert fresh == expected
    assert f"{len(transfer.skeleton_tensors(model))} tensors" in said[0]
    teacher = load_model(imported).model.state_dict()
    own = model.state_dict()
    torch.testing.assert_close(own["backbone.conv.weight"], teacher["backbone.conv.weight"])
    body = "stage3.paf.conv2_pw.weight"  # a stage conv that reads no map of the skeleton
    torch.testing.assert_close(own[body], teacher[body])
    assert own["stage1.heatmap.out.weight"].shape[0] == pose.num_heatmap_channels == 6
    assert own["stage2.paf.conv1_dw.weight"].shape != teacher["stage2.paf.conv1_dw.weight"].shape


def test_fine_tuning_the_first_stages_of_a_deeper_network(imported, tmp_path):
    model_section = {**TFPOSE_MODEL, "stages": 2}
    spec = spec_file(tmp_path / "s.yaml", pretrained_weights=str(imported), model=model_section)
    said = []
    model, _ = trainer.build_training_model(
        load_experiment_spec(spec), load_pose_config(), None, said.append
    )
    assert model.num_stages == 2
    assert "first 2 stages" in said[0] and "stages 3-6 are left out" in said[0]
    teacher = load_model(imported).model.state_dict()
    for key, tensor in model.state_dict().items():  # every kept tensor, outputs included
        torch.testing.assert_close(tensor, teacher[key])


def test_missing_pretrained_weights_say_how_to_import(tmp_path):
    missing = tmp_path / "tfpose.pth"
    spec = spec_file(tmp_path / "s.yaml", pretrained_weights=str(missing))
    with pytest.raises(
        SpecError, match=r"tfpose\.pth: pretrained_weights not found.*make pretrained"
    ):
        trainer.build_training_model(load_experiment_spec(spec), load_pose_config(), None)


def test_a_pretrained_network_refuses_other_pixel_scaling(imported, tmp_path):
    spec = spec_file(tmp_path / "s.yaml", pretrained_weights=str(imported))
    raw = yaml.safe_load(spec.read_text())
    del raw["dataloader"]["normalization_params"]  # TAO's default: rgb / 256 - 0.5
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"image_scale .*set dataloader.normalization_params"):
        trainer.build_training_model(load_experiment_spec(spec), load_pose_config(), None)


def test_frozen_batch_norm_statistics_stay(imported, tmp_path, photos):
    spec = spec_file(
        tmp_path / "s.yaml",
        pretrained_weights=str(imported),
        dataloader={"dataset_config": pictures_only(photos)},
        teacher_model=str(imported),
        loss={"label_weight": 0.0},
        model={**TFPOSE_MODEL, "freeze_bn": True},
    )
    trainer.train(load_experiment_spec(spec), tmp_path / "run")
    before = load_model(imported).model.state_dict()
    after = load_model(tmp_path / "run" / "model_epoch_001.pth").model.state_dict()
    stat = "stage1.paf.conv1_pw.bn.running_mean"
    torch.testing.assert_close(after[stat], before[stat])
    weight = "stage1.paf.conv1_pw.weight"
    assert not torch.equal(after[weight], before[weight])  # it trained


def test_distillation_on_pictures_without_labels(imported, tmp_path, photos):
    """A pruned copy of the imported network learns the teacher's maps on two unlabelled
    photos: its teacher loss falls, and no dataset root is needed."""
    teacher = load_model(imported).model
    pruned, _ = prune_model(teacher, PruneSettings(threshold=0.8))
    student = save_checkpoint(
        tmp_path / "pruned.pth", pruned, spec=load_model(imported).train_spec,
        pose=load_pose_config(),
    )  # fmt: skip
    spec = load_experiment_spec(
        spec_file(
            tmp_path / "s.yaml",
            num_epoch=12,
            pretrained_weights=str(student),
            load_graph=True,
            teacher_model=str(imported),
            dataloader={
                "dataset_config": pictures_only(photos),
                # the same two letterboxed pictures every epoch: the losses are comparable
                "augmentation_config": {"spatial_augmentation_mode": "none"},
            },
            loss={"label_weight": 0.0, "teacher_weight": 1.0},
            optimizer={
                "type": "adam",
                "learning_rate_schedule": {"schedule": "constant", "base_learning_rate": 1e-3},
            },
        )
    )
    summary = trainer.train(spec, tmp_path / "run")
    assert summary["steps"] == 12  # two photos, batch 2: one step an epoch
    log = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [yaml.safe_load(line)["loss"] for line in log if '"kind": "epoch"' in line]
    assert losses[0] > 0 and losses[-1] < 0.8 * losses[0], losses


def test_teacher_mistakes_are_one_line(imported, five_joint_config, tmp_path, photos):
    five = {"pose_config": {"pose_config_path": str(five_joint_config)}}
    common = {"dataloader": {"dataset_config": pictures_only(photos)}}
    spec = spec_file(
        tmp_path / "s.yaml",
        teacher_model=str(imported),
        dataloader={**common["dataloader"], **five, "normalization_params": RAW_PIXELS},
    )
    with pytest.raises(SpecError, match="a teacher must have the same skeleton"):
        trainer.train(load_experiment_spec(spec), tmp_path / "a")
    spec = spec_file(tmp_path / "t.yaml", loss={"label_weight": 0.0}, **common)
    with pytest.raises(SpecError, match="only a teacher_model can teach on it"):
        trainer.train(load_experiment_spec(spec), tmp_path / "b")
    spec = spec_file(
        tmp_path / "u.yaml", teacher_model=str(imported), validation_every_n_epoch=1, **common
    )
    with pytest.raises(DatasetError, match="validation needs a labelled dataset"):
        trainer.train(load_experiment_spec(spec), tmp_path / "c")
    labelled_split = {"dataset_config": {"unlabelled_images": str(photos)}}  # train2017, no root
    spec = spec_file(tmp_path / "v.yaml", teacher_model=str(imported), dataloader=labelled_split)
    with pytest.raises(DatasetError, match=r"needs a dataset root .*train_split: null"):
        trainer.train(load_experiment_spec(spec), tmp_path / "d")
    odd_size = {"image_config": {"image_dims": {"height": 72, "width": 64}}}
    spec = spec_file(
        tmp_path / "w.yaml", teacher_model=str(imported),
        dataloader={**common["dataloader"], **odd_size},
    )  # fmt: skip
    with pytest.raises(SpecError, match="multiples of 16; use 64x64"):
        trainer.train(load_experiment_spec(spec), tmp_path / "e")
    spec = spec_file(tmp_path / "x.yaml", model={**TFPOSE_MODEL, "freeze_bn": True}, **common)
    raw = yaml.safe_load(spec.read_text())
    raw["teacher_model"] = str(imported)
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="freeze_bn keeps stored batch-norm statistics"):
        trainer.train(load_experiment_spec(spec), tmp_path / "f")
    assert not any(
        (tmp_path / name).glob("*.pth") for name in "abcdef" if (tmp_path / name).exists()
    )


def test_teacher_peaks_weigh_more_when_asked():
    """An error at the teacher's joint costs 1 + teacher_peak_weight x its heatmap value times
    as much as the same error on the background."""
    teacher_maps = torch.zeros(1, 19, 4, 4)
    teacher_maps[:, -1] = 1.0
    teacher_maps[0, 0, 1, 1], teacher_maps[0, -1, 1, 1] = 0.8, 0.2  # a nose here
    pafs = torch.zeros(1, 38, 4, 4)
    at_joint = teacher_maps.clone()
    at_joint[0, 0, 1, 1] = 0.3  # the student misses the nose by 0.5
    on_background = teacher_maps.clone()
    on_background[0, 0, 3, 3] = 0.5  # or sees one where there is none, by 0.5
    no_labels = {"loss": torch.tensor(0.0), "heatmap": torch.tensor(0.0), "paf": torch.tensor(0.0)}

    def cost(student, peak_weight):
        spec = load_experiment_spec(None, [f"loss.teacher_peak_weight={peak_weight}"])
        return trainer.distillation_loss(
            [(student, pafs)], [(teacher_maps, pafs)], no_labels, spec
        )["loss"].item()

    assert cost(at_joint, 0) == pytest.approx(cost(on_background, 0))
    assert cost(at_joint, 10) == pytest.approx(9 * cost(on_background, 10))  # 1 + 10 x 0.8


def test_matched_teacher_stages_teach_each_stage_its_own_stage():
    """A 2-stage student of a 3-stage teacher: with ``last`` both stages learn the teacher's
    stage 3; with ``matched`` stage 1 learns its stage 1 and stage 2 its stage 3 (not 2)."""
    teacher = [(torch.full((1, 19, 4, 4), v), torch.full((1, 38, 4, 4), v)) for v in (1, 2, 3)]
    no_labels = {"loss": torch.tensor(0.0), "heatmap": torch.tensor(0.0), "paf": torch.tensor(0.0)}

    def cost(student, stages):
        spec = load_experiment_spec(None, [f"loss.teacher_stages={stages}"])
        return trainer.distillation_loss(student, teacher, no_labels, spec)["loss"].item()

    as_teacher = [teacher[0], teacher[2]]
    assert cost(as_teacher, "matched") == 0.0
    assert cost(as_teacher, "last") > 0.0
    assert cost([teacher[2], teacher[2]], "last") == 0.0
    assert cost([teacher[0], teacher[1]], "matched") > 0.0  # stage 2 must learn stage 3
    with pytest.raises(SpecError, match="teacher_stages"):
        load_experiment_spec(None, ["loss.teacher_stages=first"])


@pytest.mark.parametrize(
    "stages,said",
    [("last", "its last-stage maps teach every stage"), ("matched", "its stage k teaches stage k")],
)
def test_the_teacher_line_says_which_stages_it_teaches(imported, tmp_path, photos, stages, said):
    spec = spec_file(
        tmp_path / "s.yaml",
        teacher_model=str(imported),
        dataloader={"dataset_config": pictures_only(photos)},
        loss={"label_weight": 0.0, "teacher_stages": stages},
    )
    lines = []
    transfer.load_teacher(load_experiment_spec(spec), load_model(imported).model, lines.append)
    assert len(lines) == 1 and said in lines[0] and str(imported) in lines[0]
