"""Experiment specs: typed loading, error messages, overrides, round trip."""

from pathlib import Path

import pytest

from bpnet.config import (
    ExperimentSpec,
    InferenceSpec,
    load_experiment_spec,
    load_inference_spec,
    load_spec,
    save_spec,
)
from bpnet.errors import SpecError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_shipped_specs_load():
    paths = sorted((REPO / "specs").glob("*.yaml"))
    for path in paths:
        if path.name.startswith("infer_spec"):
            assert isinstance(load_inference_spec(path), InferenceSpec), path
        else:
            assert isinstance(load_experiment_spec(path), ExperimentSpec), path
    modes = {load_inference_spec(p).mode for p in paths if p.name.startswith("infer_spec")}
    assert modes == {"default", "strict", "multi_scale"}


def test_defaults_are_taos():
    spec = load_experiment_spec(None)
    assert spec.model.stages == 3
    assert spec.dataloader.label_processor_config.heatmap_gaussian_sigma == 7.0
    assert spec.dataloader.augmentation_config.spatial_aug_params.target_person_scale == 0.6
    assert spec.dataloader.normalization_params.image_offset == (0.5, 0.5, 0.5)


def test_values_are_typed_and_frozen(tmp_path):
    spec = load_experiment_spec(write(tmp_path, "dataloader:\n  batch_size: 3\n"))
    assert spec.dataloader.batch_size == 3
    assert spec.dataloader.normalization_params.image_scale == (256.0, 256.0, 256.0)
    with pytest.raises(AttributeError):
        spec.dataloader.batch_size = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("dataloader:\n  batchsize: 3\n", ["dataloader.batchsize", "batch_size"]),
        ("model:\n  stages: 8\n", ["model.stages", "2..7"]),
        ("model:\n  stages: 1\n", ["model.stages", "2..7"]),
        ("model:\n  stages: three\n", ["model.stages", "integer"]),
        (
            "dataloader:\n  image_config:\n    image_dims: {height: 300, width: 368}\n",
            ["dataloader.image_config.image_dims.height", "multiple of 8", "304"],
        ),
        ("dataloader:\n  batch_size: 1.5\n", ["dataloader.batch_size", "integer"]),
        ("load_graph: 1\n", ["load_graph", "true or false"]),
        ("optimizer:\n  type: rmsprop\n", ["optimizer.type", "'sgd'"]),
        ("dataloader: 3\n", ["dataloader", "mapping"]),
        (
            "dataloader:\n  normalization_params:\n    image_scale: [1, 2]\n",
            ["image_scale", "3 values"],
        ),
        ("model: {stages: 3\n", ["not valid YAML"]),
    ],
)
def test_bad_specs_name_file_and_key(tmp_path, text, names):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_experiment_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message
    for name in names:
        assert name in message


def test_tao_class_name_markers_are_accepted(tmp_path):
    path = write(tmp_path, "__class_name__: BpNetTrainer\nmodel:\n  __class_name__: X\n")
    assert load_experiment_spec(path).model.stages == 3


def test_overrides(tmp_path):
    path = write(tmp_path, "model:\n  stages: 4\n")
    spec = load_experiment_spec(
        path, ["model.stages=6", "dataloader.image_config.image_dims.width=288", "random_seed=7"]
    )
    assert spec.model.stages == 6
    assert spec.dataloader.image_config.image_dims.width == 288
    assert spec.dataloader.image_config.image_dims.height == 368  # sibling keeps its default
    assert spec.random_seed == 7


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.stagez=4", "model.stagez"),
        ("model.stages.x=4", "no sub-keys"),
        ("model.stages", "key.sub=value"),
        ("model.stages=9", "model.stages"),
    ],
)
def test_bad_overrides(override, needle):
    with pytest.raises(SpecError, match=needle.replace(".", r"\.")):
        load_experiment_spec(None, [override])


def test_resolved_spec_round_trips(tmp_path):
    spec = load_experiment_spec(None, ["model.stages=5", "dataloader.batch_size=2"])
    save_spec(spec, tmp_path / "out" / "spec.yaml")
    assert load_spec(ExperimentSpec, tmp_path / "out" / "spec.yaml") == spec
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["spec.yaml"]  # no temp file left


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_experiment_spec(tmp_path / "nope.yaml")


def test_yaml_1_2_numbers_and_duplicate_keys(tmp_path):
    path = write(tmp_path, "optimizer:\n  learning_rate_schedule:\n    base_learning_rate: 1e-5\n")
    assert load_experiment_spec(path).optimizer.learning_rate_schedule.base_learning_rate == 1e-5
    spec = load_experiment_spec(None, ["optimizer.learning_rate_schedule.min_learning_rate=2e-7"])
    assert spec.optimizer.learning_rate_schedule.min_learning_rate == 2e-7
    path = write(tmp_path, "dataloader: {batch_size: 4}\nmodel: {stages: 3}\ndataloader: {}\n")
    with pytest.raises(SpecError, match="duplicate key 'dataloader'"):
        load_experiment_spec(path)


def test_non_finite_and_negative_values_are_rejected():
    for override, needle in [
        ("dataloader.augmentation_config.spatial_aug_params.translate_max_x=.inf", "finite"),
        ("random_seed=-1", "random_seed"),
        ("model.stage_kernel_sizes=[]", "non-empty"),
    ]:
        with pytest.raises(SpecError, match=needle):
            load_experiment_spec(None, [override])


def test_a_bad_override_is_blamed_not_the_file(tmp_path):
    path = write(tmp_path, "dataloader:\n  batch_size: 4\n")
    with pytest.raises(SpecError) as err:
        load_experiment_spec(path, ["dataloader.batch_size=0"])
    assert str(err.value).startswith("override 'dataloader.batch_size=0': dataloader.batch_size")
    with pytest.raises(
        SpecError, match=r"^override 'dataloader=5': dataloader: expected a mapping"
    ):
        load_experiment_spec(path, ["dataloader=5"])


def test_unreadable_spec_paths_are_one_line(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_experiment_spec(tmp_path)  # a folder
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00model")
    with pytest.raises(SpecError, match="UTF-8"):
        load_experiment_spec(path)
