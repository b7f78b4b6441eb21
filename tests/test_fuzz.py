"""Fuzzing (hypothesis): random COCO documents through `dataset stats` and the data loader, and
random or damaged bytes through every model loader. Whatever the input, the result is a value
or one BpnetError line, never another exception and never a hang. Example counts stay small so
that the suite stays fast; raise ``FUZZ_EXAMPLES`` for a longer hunt."""

import copy
import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bpnet.config import load_experiment_spec
from bpnet.data.coco import build_records, load_coco_split
from bpnet.data.dataset import CocoPoseDataset
from bpnet.data.stats import dataset_stats
from bpnet.encryption import encrypt
from bpnet.errors import BpnetError
from bpnet.inference.runtime import load_model
from bpnet.pose import load_pose_config
from coco_subset import TRAIN_IDS, VAL_IDS, subset
from test_train import write_spec

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the alarm below catches a hang; slow CI machines must not flake
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure reproduces
)


@contextmanager
def no_hang(seconds: int = 20):
    """Fail (instead of waiting forever) when the block runs longer than ``seconds``."""

    def hung(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line_or_nothing(call):
    """Run ``call()``; a BpnetError must be one line; any other exception fails the test."""
    with no_hang():
        try:
            return call()
        except BpnetError as err:
            assert "\n" not in str(err) and str(err), repr(err)
            return None


# COCO documents ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


def valid_document(fixture: Path) -> dict:
    """Two images and their people from the real fixture: the seed that mutations damage."""
    data = json.loads((fixture / "annotations" / "person_keypoints_val2017.json").read_text())
    ids = {img["id"] for img in data["images"][:2]}
    return {
        "images": [img for img in data["images"] if img["id"] in ids],
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        "categories": data["categories"],
    }


def paths_in(tree, prefix=()):
    """Every path (tuple of keys / indices) into a JSON tree."""
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from paths_in(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from paths_in(value, (*prefix, index))


@st.composite
def damaged_documents(draw, seed: dict):
    """The seed document with 1-3 values replaced by random JSON, or keys / items removed."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in paths_in(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON_VALUES)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return doc


@pytest.fixture(scope="module")
def coco_seed(coco_fixture, tmp_path_factory):
    """(seed document, a dataset root whose val2017/ holds its images)."""
    root = tmp_path_factory.mktemp("fuzz_coco")
    seed = valid_document(coco_fixture)
    (root / "annotations").mkdir()
    (root / "val2017").mkdir()
    for img in seed["images"]:
        image = cv2.imread(str(coco_fixture / "val2017" / img["file_name"]))
        cv2.imwrite(str(root / "val2017" / img["file_name"]), image)
    return seed, root


def check_document(root: Path, doc) -> None:
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(doc))
    one_line_or_nothing(lambda: dataset_stats(root, "val2017"))

    def load_and_sample():
        split = load_coco_split(root, "val2017")
        pose = load_pose_config()
        records = build_records(split, pose)
        for train in (True, False):
            dataset = CocoPoseDataset(records, size=(64, 64), pose=pose, train=train)
            for index in range(min(len(dataset), 2)):
                dataset[index]

    one_line_or_nothing(load_and_sample)


def test_random_json_documents(coco_seed):
    _, root = coco_seed

    @FUZZ
    @given(JSON_VALUES)
    def run(doc):
        check_document(root, doc)

    run()


def test_damaged_coco_documents(coco_seed):
    seed, root = coco_seed

    @FUZZ
    @given(damaged_documents(seed))
    def run(doc):
        check_document(root, doc)

    run()


# model files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_files(coco_fixture, tmp_path_factory):
    """A real checkpoint (a 1-epoch tiny training) and its ONNX export, made by the CLI."""
    tmp = tmp_path_factory.mktemp("fuzz_models")
    subset(coco_fixture, "train2017", TRAIN_IDS, tmp / "data", "train")
    subset(coco_fixture, "val2017", VAL_IDS, tmp / "data", "val")
    spec = write_spec(tmp / "spec.yaml", tmp / "data", num_epoch=1, validation_every_n_epoch=0)
    bpnet = [sys.executable, "-m", "bpnet"]
    subprocess.run(
        [*bpnet, "train", "-e", spec, "-r", tmp / "run"], check=True, capture_output=True
    )
    checkpoint = tmp / "run" / "model_epoch_001.pth"
    onnx = tmp / "model.onnx"
    subprocess.run(
        [*bpnet, "export", "-m", checkpoint, "-o", onnx], check=True, capture_output=True
    )
    return {".pth": checkpoint.read_bytes(), ".onnx": onnx.read_bytes()}


@st.composite
def damaged_bytes(draw, original: bytes):
    """Random bytes, or the original file with bytes overwritten and perhaps cut short."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=4096))
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=16))
        data[at : at + len(patch)] = patch
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.parametrize("suffix", [".pth", ".onnx"])
@pytest.mark.parametrize("key", [None, "tlt_encode"])
def test_damaged_model_files(model_files, tmp_path, suffix, key):
    """Plain files, and (with a key) the same files encrypted as -k writes them."""
    path = tmp_path / f"model{suffix}"
    original = model_files[suffix] if key is None else encrypt(model_files[suffix], key)

    @FUZZ
    @given(damaged_bytes(original))
    @example(b"X")  # found by this test: torch.load raised struct.error
    def run(data):
        path.write_bytes(data)
        one_line_or_nothing(lambda: load_model(path, key=key))

    run()


def test_checkpoints_with_random_values(model_files, tmp_path):
    """A readable checkpoint whose arch, weights, stored spec, pose, version or counters hold
    anything."""
    original = torch.load(_write(tmp_path / "seed.pth", model_files[".pth"]), weights_only=True)
    path = tmp_path / "model.pth"

    @FUZZ
    @given(st.data())
    def run(data):
        checkpoint = copy.copy(original)
        key = data.draw(
            st.sampled_from(["arch", "state_dict", "spec", "pose", "version", "epoch", "step"])
        )
        if isinstance(checkpoint[key], dict) and checkpoint[key] and data.draw(st.booleans()):
            checkpoint[key] = dict(checkpoint[key])
            inner = data.draw(st.sampled_from(sorted(checkpoint[key])))
            checkpoint[key][inner] = data.draw(JSON_VALUES | st.just(torch.zeros(2, 3)))
        else:
            checkpoint[key] = data.draw(JSON_VALUES)
        torch.save(checkpoint, path)
        one_line_or_nothing(lambda: load_model(path))

    run()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_random_bytes_through_the_import_and_backbone_loaders(tmp_path):
    from bpnet.models import build_model

    spec = load_experiment_spec(None, ["model.backbone_attributes.width_multiplier=0.1"])
    model = build_model(spec.model, load_pose_config())
    layout = Path(__file__).parents[1] / "specs" / "layouts" / "tfpose_mobilenet_v2_small.yaml"

    @FUZZ
    @given(st.binary(max_size=2048))
    def run(data):
        source = _write(tmp_path / "input.bin", data)
        from bpnet.models.pretrained_backbone import load_pretrained_backbone

        one_line_or_nothing(lambda: load_pretrained_backbone(model, source))
        onnx = _write(tmp_path / "input.onnx", data)
        from bpnet.convert.onnx_layout import import_onnx

        one_line_or_nothing(
            lambda: import_onnx(onnx, layout, tmp_path / "out.onnx", force=True, say=print)
        )
        try:
            from bpnet.convert.tfpose import import_tfpose
        except ImportError:
            return
        graph = _write(tmp_path / "graph.pb", data)
        one_line_or_nothing(lambda: import_tfpose(graph, tmp_path / "out.pth", force=True))

    run()
