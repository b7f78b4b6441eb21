"""TAO's ``-k KEY``: model files encrypted with AES-256-GCM (bpnet.encryption), end to end.

train -k -> prune -k -> export -k (.etlt) -> evaluate / inference -k on a tiny model; a wrong
key, no key, and a flipped byte each give one line and exit 2.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from bpnet import encryption
from bpnet.errors import BpnetError
from bpnet.models import checkpoint as ckpt
from test_reliability import one_line_error
from test_train import run_cli, write_spec

KEY = "tlt_encode"


def flipped(path: Path, tmp_path: Path, offset: int) -> Path:
    """A copy of ``path`` with the byte at ``offset`` (negative: from the end) inverted."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    copy = tmp_path / f"flipped{offset}{path.suffix}"
    copy.write_bytes(bytes(data))
    return copy


# the module ------------------------------------------------------------------------------------


def test_round_trip_wrong_key_and_every_flipped_region():
    plain = b"weights " * 100
    sealed = encryption.encrypt(plain, KEY)
    assert encryption.is_encrypted(sealed) and plain not in sealed
    assert encryption.encrypt(plain, KEY) != sealed  # a fresh salt and nonce each time
    assert encryption.decrypt(sealed, KEY, "m.pth") == plain
    assert encryption.decrypt(plain, None, "m.pth") == plain  # a plain file reads as it is
    assert encryption.decrypt(plain, KEY, "m.pth") == plain

    with pytest.raises(BpnetError, match=r"m\.pth: wrong key \(-k\)"):
        encryption.decrypt(sealed, "another", "m.pth")
    with pytest.raises(BpnetError, match=r"m\.pth: this model is encrypted; pass the key"):
        encryption.decrypt(sealed, None, "m.pth")
    with pytest.raises(BpnetError, match="-k: the key is empty"):
        encryption.encrypt(plain, "")
    salt = len(encryption.MAGIC) + 1
    body = encryption.HEADER_SIZE
    for offset, message in (
        (salt, "wrong key"),  # another salt derives another key check
        (salt + 16, "changed or damaged"),  # the nonce
        (body - 1, "wrong key"),  # the key check itself
        (body + 5, "changed or damaged"),  # the ciphertext
        (len(sealed) - 1, "changed or damaged"),  # the tag
    ):
        data = bytearray(sealed)
        data[offset] ^= 0x01
        with pytest.raises(BpnetError, match=message):
            encryption.decrypt(bytes(data), KEY, "m.pth")
    with pytest.raises(BpnetError, match="cut short"):
        encryption.decrypt(sealed[: body + 3], KEY, "m.pth")
    data = bytearray(sealed)
    data[len(encryption.MAGIC)] = 9
    with pytest.raises(BpnetError, match="version 9"):
        encryption.decrypt(bytes(data), KEY, "m.pth")


# the commands ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encrypted_run(tiny_coco, tmp_path_factory):
    """train -k (1 epoch) -> prune -k -> export -k: (spec, results folder, pruned, .etlt)."""
    tmp = tmp_path_factory.mktemp("encrypted")
    spec = write_spec(tmp / "spec.yaml", tiny_coco, num_epoch=1, validation_every_n_epoch=0)
    out = tmp / "train"
    run_cli(["train", "-e", str(spec), "-r", str(out), "-k", KEY])
    pruned = tmp / "pruned.pth"
    run_cli(["prune", "-m", str(out / "model_epoch_001.pth"), "-o", str(pruned), "-k", KEY,
             "-pth", "0.5", "-nf", "4", "-pg", "4"])  # fmt: skip
    etlt = tmp / "model.etlt"
    run_cli(["export", "-m", str(pruned), "-o", str(etlt), "-k", KEY])
    return spec, out, pruned, etlt


def test_train_prune_export_evaluate_with_a_key(encrypted_run, tiny_coco, tmp_path, capsys):
    spec, out, pruned, etlt = encrypted_run
    for model in (out / "model_epoch_001.pth", pruned, etlt):
        data = model.read_bytes()
        assert encryption.is_encrypted(data), model
        assert b"bpnet-checkpoint" not in data and b"bpnet.io" not in data  # nothing in clear
    assert "pruning" in ckpt.load_checkpoint(pruned, key=KEY)  # the pruned model, decrypted
    with pytest.raises(Exception):  # noqa: B017 (torch alone cannot read it)
        torch.load(pruned, weights_only=True)

    results = tmp_path / "eval"
    stdout = run_cli(["evaluate", "-m", str(etlt), "-k", KEY, "-d", str(tiny_coco),
                      "--split", "val", "-r", str(results)])  # fmt: skip
    assert "AP " in stdout and (results / "results.json").is_file()
    # the checkpoints evaluate too, and so does the .etlt under inference
    run_cli(["evaluate", "--model_filename", str(pruned), "-k", KEY, "-d", str(tiny_coco),
             "--split", "val", "-r", str(tmp_path / "eval_pth")])  # fmt: skip
    run_cli(["inference", "-m", str(etlt), "-k", KEY, "--input", str(tiny_coco / "val"),
             "-r", str(tmp_path / "infer")])  # fmt: skip
    assert len(json.loads((tmp_path / "infer" / "detections.json").read_text())) >= 0

    # resume needs the same key: another epoch continues the encrypted run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    argv = ["train", "-e", str(spec), "-r", str(resumed), "-k", KEY, "-o", "num_epoch=2"]
    assert "resuming from" in run_cli(argv)
    assert encryption.is_encrypted((resumed / "model_epoch_002.pth").read_bytes())


@pytest.mark.parametrize("which", ["checkpoint", "pruned", "etlt"])
def test_a_wrong_key_no_key_and_a_flipped_byte_are_one_line(
    encrypted_run, tiny_coco, tmp_path, capsys, which
):
    _, out, pruned, etlt = encrypted_run
    model = {"checkpoint": out / "model_epoch_001.pth", "pruned": pruned, "etlt": etlt}[which]
    evaluate = ["evaluate", "-d", tiny_coco, "--split", "val", "-r", tmp_path / "eval"]
    err = one_line_error(capsys, [*evaluate, "-m", model, "-k", "not_the_key"])
    assert f"{model}: wrong key (-k)" in err
    err = one_line_error(capsys, [*evaluate, "-m", model])
    assert f"{model}: this model is encrypted; pass the key it was written with (-k KEY)" in err
    for offset in (encryption.HEADER_SIZE + 100, -1):  # the ciphertext, the tag
        damaged = flipped(model, tmp_path, offset)
        err = one_line_error(capsys, [*evaluate, "-m", damaged, "-k", KEY])
        assert f"{damaged}: the encrypted model was changed or damaged" in err
    assert not (tmp_path / "eval").exists()  # nothing written


def test_every_model_reading_command_refuses_a_wrong_key(
    encrypted_run, tiny_coco, tmp_path, capsys
):
    spec, out, pruned, etlt = encrypted_run
    wrong = ["-k", "not_the_key"]
    for argv in (
        ["train", "-e", spec, "-r", out, "-o", "num_epoch=2"],  # resume
        ["prune", "-m", pruned, "-o", tmp_path / "p.pth"],
        ["prune", "-m", pruned, "--sweep", "0.1,0.5"],
        ["export", "-m", pruned, "-o", tmp_path / "m.onnx"],
        ["inference", "-m", etlt, "--input", tiny_coco / "val", "-r", tmp_path / "infer"],
    ):
        err = one_line_error(capsys, [*argv, *wrong])
        assert "wrong key (-k)" in err, argv
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
    # a retrain from an encrypted pruned model reads it with the key
    spec2 = write_spec(tmp_path / "retrain.yaml", tiny_coco, num_epoch=1,
                       validation_every_n_epoch=0, pretrained_weights=str(pruned),
                       load_graph=True)  # fmt: skip
    err = one_line_error(capsys, ["train", "-e", spec2, "-r", tmp_path / "retrain"])
    assert f"{pruned}: this model is encrypted" in err


def test_without_a_key_files_stay_plain_and_etlt_needs_one(encrypted_run, tmp_path, capsys):
    _, _, pruned, _ = encrypted_run
    plain = tmp_path / "plain.pth"
    run_cli(["prune", "-m", str(pruned), "-k", KEY, "-o", str(plain), "-pth", "0",
             "-nf", "4", "-pg", "4"])  # fmt: skip
    assert encryption.is_encrypted(plain.read_bytes())  # -k on prune encrypts its output
    # the decrypted bytes are the plain checkpoint itself
    (tmp_path / "clear.pth").write_bytes(encryption.read_model_bytes(pruned, KEY))
    assert torch.load(tmp_path / "clear.pth", weights_only=True)["format"] == "bpnet-checkpoint"
    # a plain model reads with a key too (TAO's commands always pass one)
    run_cli(["export", "-m", str(tmp_path / "clear.pth"), "-o", str(tmp_path / "m.onnx"),
             "-k", KEY])  # fmt: skip
    assert encryption.is_encrypted((tmp_path / "m.onnx").read_bytes())
    err = one_line_error(capsys, ["export", "-m", tmp_path / "clear.pth", "-o",
                                  tmp_path / "n.etlt"])  # fmt: skip
    assert "n.etlt: an .etlt model is encrypted; pass the key with -k KEY" in err
    assert not (tmp_path / "n.etlt").exists()
