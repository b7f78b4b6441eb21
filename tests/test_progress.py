"""Progress output (issue 16 item 10): tqdm bars with items/s on a terminal, plain lines in logs,
nothing on stderr when it is not a terminal (so one-line errors stay one line)."""

import io
import json
import shutil
import sys

from bpnet.cli import main
from bpnet.progress import progress, step_callback
from bpnet.train.monitor import Progress


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_training_epoch_in_a_log_is_plain_lines_with_every_number():
    log = io.StringIO()
    progress_ = Progress(3, 20, 4, every_secs=0.0, stream=log)
    for done in range(1, 5):
        progress_.update(done, 0.0123456, 1e-3, 28.44)
    progress_.close("val AP 0.1234")
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in log.getvalue()  # 3 along the way, the last at close
    assert lines[0].startswith("epoch 3/20:  25%|#####") and " 1/4 [" in lines[0]
    assert lines[-1].startswith("epoch 3/20: 100%|") and " 4/4 [" in lines[-1]
    assert lines[-1].endswith(", loss 0.012346, lr 1.0e-03, 28.4 img/s, val AP 0.1234]")
    # every_secs spaces the lines out: only the last one when the epoch is faster
    log = io.StringIO()
    progress_ = Progress(1, 1, 4, every_secs=3600, stream=log)
    for done in range(1, 5):
        progress_.update(done, 1.0, 1e-3, 2.0)
    progress_.close()
    assert log.getvalue().count("\n") == 1


def test_a_training_epoch_on_a_terminal_is_a_tqdm_bar_redrawn_in_place():
    screen = Terminal()
    progress_ = Progress(3, 20, 4, stream=screen)
    for done in range(1, 5):
        progress_.update(done, 0.0123456, 1e-3, 28.44)
    progress_.close("val AP 0.1234")
    text = screen.getvalue()
    assert "\r" in text and text.endswith("\n")
    last = text.rstrip("\n").rsplit("\r", 1)[-1]
    assert last.startswith("epoch 3/20: 100%|") and "4/4" in last
    assert "loss 0.012346, lr 1.0e-03, 28.4 img/s, val AP 0.1234" in last


def test_bars_show_items_per_second_on_a_terminal_and_nothing_elsewhere(monkeypatch, capsys):
    assert list(progress(range(3), desc="evaluate")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    said = []
    report = step_callback("calibration batch", "batch", said.append)
    for done in range(1, 21):
        report(done, 20)
    assert said == [f"  calibration batch {i}/20" for i in range(2, 21, 2)]  # a log's lines

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    assert list(progress(range(3), desc="evaluate")) == [0, 1, 2]
    report = step_callback("calibration batch", "batch", said.append)
    for done in range(1, 21):
        report(done, 20)
    text = screen.getvalue()
    assert "evaluate: 100%" in text and "3/3" in text and "image/s" in text
    assert "calibration batch: 100%" in text and "20/20" in text and "batch/s" in text
    assert len(said) == 10  # no log lines while a bar shows the progress


def test_evaluate_draws_a_bar_on_a_terminal(coco_fixture, tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "annotations").mkdir(parents=True)
    data = json.loads((coco_fixture / "annotations" / "person_keypoints_val2017.json").read_text())
    data["images"] = data["images"][:3]
    ids = {i["id"] for i in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    (root / "annotations" / "person_keypoints_val.json").write_text(json.dumps(data))
    (root / "val").mkdir()
    for image in data["images"]:
        shutil.copy(coco_fixture / "val2017" / image["file_name"], root / "val")
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    argv = ["evaluate", "--oracle", "-d", str(root), "--split", "val", "-r", str(tmp_path / "r")]
    assert main(argv) == 0
    text = screen.getvalue()
    assert "evaluate oracle: 100%" in text and "3/3" in text and "image/s" in text
