"""Video and camera inference with tracking: the tracker on known keypoint tracks (noise, a
missed frame, crossing paths), a synthetic video of 3 moving figures end to end (ground-truth
maps through the real pipeline, tracker and writers), batching, and the one-line errors."""

import json
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import tiny_model
from bpnet.cli import main
from bpnet.config import load_experiment_spec
from bpnet.config.inference import InferenceSpec
from bpnet.data.coco import COCO_KEYPOINTS, COCO_OKS_SIGMAS
from bpnet.data.transforms import transform_keypoints
from bpnet.export.onnx_export import export_onnx
from bpnet.inference.pipeline import Predictor, batch_maps, input_geometry
from bpnet.inference.runtime import load_model
from bpnet.inference.torch_source import TorchSource
from bpnet.inference.tracking import Tracker, similarity
from bpnet.inference.video import draw_tracks, is_video_input, open_video, track_video
from bpnet.pose import load_pose_config
from bpnet.targets import encode
from bpnet.visualize import draw_people, id_colour

POSE = load_pose_config()
SIZE = (240, 320)  # frame height, width
FRAMES = 30

# a standing figure, COCO's 17 keypoints around its hips' centre (x right, y down), ~75 px tall
FIGURE = np.array(
    [[0, -36], [3, -39], [-3, -39], [6, -37], [-6, -37],  # nose, eyes, ears
     [10, -26], [-10, -26], [14, -12], [-14, -12], [16, 0], [-16, 0],  # arms
     [7, 0], [-7, 0], [8, 18], [-8, 18], [8, 36], [-8, 36]],  # legs
    np.float64,
)  # fmt: skip


def figure_at(x: float, y: float, score: float = 2.0) -> np.ndarray:
    """(17, 3) the figure with its hips at (x, y), every keypoint found."""
    return np.column_stack([FIGURE + np.array([x, y]), np.full(17, score)])


def three_walkers(frames: int = FRAMES) -> np.ndarray:
    """(frames, 3, 17, 3): one walks right, one left below it (they pass each other), one walks
    down at the right edge."""
    t = np.linspace(0.0, 1.0, frames)
    paths = [
        (40 + 160 * t, np.full(frames, 60.0)),
        (200 - 160 * t, np.full(frames, 180.0)),
        (np.full(frames, 280.0), 60 + 120 * t),
    ]
    return np.stack([[figure_at(x, y) for x, y in zip(*path, strict=True)] for path in paths], 1)


def ids_per_person(tracks: list[tuple[list[int], np.ndarray]]) -> dict[int, set[int]]:
    """Ground-truth person -> the set of track ids it was given over the clip."""
    out: dict[int, set[int]] = {}
    for people, ids in tracks:
        for person, track_id in zip(people, ids, strict=True):
            out.setdefault(person, set()).add(int(track_id))
    return out


# the tracker on known keypoint tracks --------------------------------------------------------


def test_coco_oks_sigmas_are_the_ones_pycocotools_scores_with():
    from pycocotools.cocoeval import Params

    assert len(COCO_OKS_SIGMAS) == len(COCO_KEYPOINTS)
    np.testing.assert_allclose(COCO_OKS_SIGMAS, Params(iouType="keypoints").kpt_oks_sigmas)


def test_similarity_is_oks_and_box_iou_without_shared_keypoints():
    person = figure_at(100, 100)[None]
    assert similarity(person, person, COCO_OKS_SIGMAS)[0, 0] == pytest.approx(1.0)
    moved = figure_at(104, 100)[None]
    assert 0.3 < similarity(person, moved, COCO_OKS_SIGMAS)[0, 0] < 1.0
    far = figure_at(200, 100)[None]
    assert similarity(person, far, COCO_OKS_SIGMAS)[0, 0] < 1e-3
    # upper body seen before, lower body now: no shared keypoint, the boxes' IoU decides
    upper, lower = person.copy(), person.copy()
    upper[0, 11:, 2] = 0
    lower[0, :11, 2] = 0
    lower[0, 11:, 1] -= 30  # pulled up into the upper body's box
    # boxes x 84..116, y 61..100 and x 92..108, y 70..106: 16 x 30 of 1248 + 576 - 480
    iou = similarity(upper, lower, COCO_OKS_SIGMAS)[0, 0]
    assert iou == pytest.approx(480 / 1344)


def test_ids_stay_with_their_people_through_noise_a_missed_frame_and_a_crossing():
    rng = np.random.default_rng(0)
    frames = 40
    t = np.arange(frames, dtype=np.float64)
    # 0 and 1 walk towards each other, 1 a step behind (10 px lower), and cross at frame 20
    # (their boxes overlap in frames 18 to 22); 2 walks down; 0 is missed in frames 25 and 26
    paths = [(40 + 6 * t, 120 + 0 * t), (280 - 6 * t, 130 + 0 * t), (160 + 0 * t, 40 + 3 * t)]
    tracker = Tracker(COCO_OKS_SIGMAS, max_age=3)
    seen = []
    for f in range(frames):
        people = [p for p in range(3) if not (p == 0 and f in (25, 26))]
        keypoints = np.stack([figure_at(paths[p][0][f], paths[p][1][f]) for p in people])
        keypoints[..., :2] += rng.normal(0, 1.5, keypoints[..., :2].shape)  # detector noise
        keypoints[rng.random(keypoints.shape[:2]) < 0.1, :] = 0  # keypoints not found
        order = rng.permutation(len(people))  # the decoder's order means nothing
        ids = tracker.update(keypoints[order])
        seen.append(([people[i] for i in order], ids))
    assert ids_per_person(seen) == {0: {1}, 1: {2}, 2: {3}}


def test_a_person_gone_longer_than_max_age_gets_a_new_id_and_ids_are_never_reused():
    tracker = Tracker(COCO_OKS_SIGMAS, max_age=2)
    a, b = figure_at(50, 100), figure_at(250, 100)
    assert tracker.update(np.stack([a, b])).tolist() == [1, 2]
    assert tracker.update(a[None]).tolist() == [1]  # b missed once: its track waits
    assert tracker.update(np.stack([a, b])).tolist() == [1, 2]  # and b is back as 2
    for _ in range(3):  # b gone for 3 frames > max_age: its track ends
        assert tracker.update(a[None]).tolist() == [1]
    assert tracker.update(np.stack([b, a])).tolist() == [3, 1]
    assert tracker.update(np.zeros((0, 17, 3))).tolist() == []  # an empty frame
    assert tracker.update(figure_at(150, 100)[None]).tolist() == [4]  # far from both: new


# a synthetic video end to end ----------------------------------------------------------------


def write_video(path: Path, people: np.ndarray, fourcc: str = "mp4v") -> Path:
    """The frames of ``people`` (F, P, 17, 3): pale stick figures on a textured background."""
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (*SIZE, 3), dtype=np.uint8), (9, 9), 0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, SIZE[::-1])
    assert writer.isOpened()
    for frame in people:
        pale = [(225, 225, 225)] * len(frame)
        writer.write(draw_people(background, frame, POSE, thickness=5, colours=pale))
    writer.release()
    return path


class GroundTruthFrames:
    """A map source that draws the known figures of the i-th frame it is asked for (the video's
    frames come in order, one input scale each): the oracle of ``bpnet evaluate``, per frame."""

    stride = 8
    input_multiple = 8
    needs_image = True

    def __init__(self, people: np.ndarray, on_frame=None):
        self.people = people  # (F, P, 17, 3) in frame pixels
        self.frame = 0
        self.batches: list[int] = []
        self.on_frame = on_frame or (lambda frame: None)

    def __call__(self, image, geometry):
        joints = POSE.joints_from_dataset(self.people[self.frame])  # (P, J, 3)
        self.on_frame(self.frame)
        self.frame += 1
        keypoints = transform_keypoints(joints, geometry.matrix)
        targets = encode(keypoints, np.ones(geometry.size, np.uint8), POSE, stride=self.stride)
        return targets.heatmaps, targets.pafs

    def batch(self, images, geometry):
        self.batches.append(len(images))
        return [self(image, geometry) for image in images]


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_three_walkers_keep_their_ids_through_a_video(tmp_path):
    people = three_walkers()
    clip = write_video(tmp_path / "walkers.mp4", people)
    assert is_video_input(clip) and not is_video_input(tmp_path / "a.jpg")
    source = GroundTruthFrames(people)
    predictor = Predictor(source, POSE, InferenceSpec(), full_resolution=True)
    out = tmp_path / "out"
    summary = track_video(predictor, open_video(clip), out, batch_size=4)
    assert (summary.frames, summary.people, summary.tracks) == (FRAMES, 3 * FRAMES, 3)
    assert source.batches == [4] * 7 + [2]  # 30 frames in batches of 4
    assert "30 frames, 90 people found in 3 tracks" in summary.line
    # the JSON holds what the docs promise
    data = json.loads((out / "video_detections.json").read_text())
    assert data["source"] == str(clip) and data["input_type"] == "video"
    assert (data["width"], data["height"], data["fps"]) == (320, 240, 10.0)
    assert data["keypoint_names"] == list(COCO_KEYPOINTS)
    assert [f["frame"] for f in data["frames"]] == list(range(FRAMES))
    assert data["frames"][3]["time"] == pytest.approx(0.3)
    seen = []
    for record, truth in zip(data["frames"], people, strict=True):
        assert len(record["people"]) == 3
        found, ids = [], []
        for person in record["people"]:
            assert set(person) == {"track_id", "score", "bbox", "keypoints"}
            keypoints = np.array(person["keypoints"])  # (17, 3) x, y, score
            assert keypoints.shape == (17, 3) and person["score"] > 0
            x, y, w, h = person["bbox"]
            assert x <= keypoints[:, 0].min() and x + w >= keypoints[:, 0].max() - 0.01
            assert y <= keypoints[:, 1].min() and y + h >= keypoints[:, 1].max() - 0.01
            # which walker this is: the nearest hips
            hips = keypoints[11:13, :2].mean(0)
            found.append(int(np.argmin(np.linalg.norm(truth[:, 11:13, :2].mean(1) - hips, axis=1))))
            ids.append(person["track_id"])
            np.testing.assert_allclose(keypoints[:, :2], truth[found[-1], :, :2], atol=2.0)
        assert sorted(found) == [0, 1, 2]  # each walker found once
        seen.append((found, ids))
    # every walker keeps one id through the clip, and no two share one (which walker gets 1
    # depends on the decoder's order in the first frame)
    kept = ids_per_person(seen)
    assert sorted(kept) == [0, 1, 2] and all(len(ids) == 1 for ids in kept.values())
    assert set().union(*kept.values()) == {1, 2, 3}
    # the annotated video: every frame, each skeleton in its track's colour
    annotated = out / "walkers_annotated.mp4"
    assert summary.annotated == annotated and frame_count(annotated) == FRAMES
    assert sorted(p.name for p in out.iterdir()) == ["video_detections.json", annotated.name]
    drawn = draw_tracks(np.zeros((*SIZE, 3), np.uint8), people[0], np.array([7, 8, 9]), POSE)
    for person, track_id in zip(people[0], (7, 8, 9), strict=True):
        x, y = np.rint(person[5:7, :2].mean(0)).astype(int)  # between the shoulders: the neck
        assert tuple(drawn[y, x]) == id_colour(track_id)


def test_ctrl_c_stops_after_the_frames_at_hand_and_still_writes(tmp_path):
    people = three_walkers()
    clip = write_video(tmp_path / "walkers.avi", people, fourcc="MJPG")

    def press_ctrl_c(frame):
        if frame == 10:
            # what the interpreter does at a Ctrl-C: call the SIGINT handler now installed
            # (a real os.kill would end a test worker whose handler another test left at
            # SIG_DFL before this one installed its own, and say nothing about why)
            handler = signal.getsignal(signal.SIGINT)
            assert callable(handler) and handler is not signal.default_int_handler
            handler(signal.SIGINT, None)

    source = GroundTruthFrames(people, on_frame=press_ctrl_c)
    predictor = Predictor(source, POSE, InferenceSpec(), full_resolution=True)
    summary = track_video(predictor, open_video(clip, "video"), tmp_path / "out", batch_size=4)
    # frame 10 is in the batch 8..11: that batch is finished, nothing after it is started
    assert summary.stopped and summary.frames == 12
    assert "(stopped at Ctrl-C)" in summary.line
    data = json.loads((tmp_path / "out" / "video_detections.json").read_text())
    assert len(data["frames"]) == 12
    assert frame_count(tmp_path / "out" / "walkers_annotated.mp4") == 12
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back


def test_batched_frames_equal_one_at_a_time(tmp_path):
    torch.manual_seed(0)
    spec = load_experiment_spec(None)
    net = tiny_model.build_model(spec.model, POSE).eval()
    path = tmp_path / "m.onnx"
    export_onnx(net, path, pose=POSE, train_spec=spec, size=None)
    frames = [np.random.default_rng(i).integers(0, 256, (60, 80, 3), np.uint8) for i in range(3)]
    geometry = input_geometry(80, 60, InferenceSpec(input_shape=(48, 48)))[0]
    torch_source = TorchSource(net, spec.dataloader.normalization_params)
    for source in (torch_source, load_model(path).source()):
        batched = batch_maps(source, frames, geometry)
        for frame, maps in zip(frames, batched, strict=True):
            for one, many in zip(source(frame, geometry), maps, strict=True):
                np.testing.assert_allclose(many, one, atol=1e-5, rtol=0)


# the command line ----------------------------------------------------------------------------


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bpnet_inference_on_a_video_file(checkpoint, tmp_path, capsys):
    clip = write_video(tmp_path / "walkers.mp4", three_walkers(6))
    out = tmp_path / "out"
    argv = ["inference", "-m", str(checkpoint), "--input", str(clip), "-r", str(out),
            "-o", "input_shape=[96,96]", "--batch_size", "2", "--max_frames", "5"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("5 frames, ") and "frames/s; results in" in line
    data = json.loads((out / "video_detections.json").read_text())
    assert [f["frame"] for f in data["frames"]] == [0, 1, 2, 3, 4]
    assert frame_count(out / "walkers_annotated.mp4") == 5
    # --no_visualizations: the JSON alone
    assert main([*argv[:6], str(tmp_path / "json_only"), "--no_visualizations"]) == 0
    assert [p.name for p in (tmp_path / "json_only").iterdir()] == ["video_detections.json"]


def test_unreadable_videos_and_missing_cameras_are_one_line(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["inference", "-m", str(checkpoint), "-r", str(out)]
    err = one_line_error(capsys, [*base, "--input", str(tmp_path / "missing.mp4")])
    assert "missing.mp4: no such video file; check --input" in err
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    err = one_line_error(capsys, [*base, "--input", str(tmp_path / "broken.mp4")])
    assert "broken.mp4: OpenCV cannot decode this video" in err and "ffmpeg" in err
    err = one_line_error(capsys, [*base, "--input_type", "video", "--input", str(tmp_path)])
    assert "is a folder" in err
    err = one_line_error(capsys, [*base, "--input_type", "camera", "--input", "97"])
    assert "camera 97: cannot open this camera" in err and "--input" in err
    err = one_line_error(capsys, [*base, "--input", str(tmp_path / "x.avi"), "--batch_size", "0"])
    assert "--batch_size 0" in err
    assert not out.exists()  # nothing half-written
