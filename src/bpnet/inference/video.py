"""`bpnet inference --input_type video|camera`: the people of a video file or a live camera, each
with a track id that stays theirs from frame to frame.

Frames are read with OpenCV, go through the same :class:`~bpnet.inference.pipeline.Predictor`
as images (``batch_size`` frames per network batch where the runtime allows it) and then through
a :class:`~bpnet.inference.tracking.Tracker`. Writes, into the results folder:

* ``video_detections.json``: the video's ``source``, ``input_type``, ``fps``, ``width``,
  ``height`` and ``keypoint_names``, and ``frames``: per frame its ``frame`` index (from 0),
  ``time`` in seconds (frame / fps for a file; since the first frame for a camera) and
  ``people``, each with ``track_id``, ``score``, ``bbox`` [x, y, w, h] around its found
  keypoints and ``keypoints``: one [x, y, score] per keypoint name (0, 0, 0: not found);
* ``<name>_annotated.mp4`` (unless ``draw`` is off): the frames with each person's skeleton in
  their track's colour and the track id beside it.

Both are written when the run ends: at the end of the video, after ``max_frames`` frames, or at
Ctrl-C (which stops after the frames at hand). A run that fails writes nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bpnet.config.inference import InferenceSpec
from bpnet.data.coco import oks_sigmas
from bpnet.errors import BpnetError
from bpnet.inference.pipeline import Prediction, Predictor
from bpnet.inference.tracking import Tracker, boxes
from bpnet.io import check_output_dir, copy_all_atomic, staging_folder, write_json_atomic
from bpnet.pose import PoseConfig
from bpnet.progress import progress
from bpnet.visualize import draw_people, id_colour

DETECTIONS_FILE = "video_detections.json"
VIDEO_TYPES = ("video", "camera")
# what a file needs to be taken for a video when --input_type is not given
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
CAMERA_FPS = 30.0  # the annotated video's rate when a camera does not say its own


def is_video_input(source: str | Path, input_type: str | None = None) -> bool:
    """True for ``--input_type video|camera``, or, without one, a file with a video suffix."""
    if input_type is not None:
        return input_type in VIDEO_TYPES
    return Path(source).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoInput:
    """An opened video file or camera.

    Attributes:
        capture: OpenCV's reader, positioned after ``first``.
        label: the input in messages: the file's path or ``camera 0``.
        name: the input in file names: the file's stem or ``camera0``.
        live: a camera (times are measured, there is no end).
        fps: frames per second the input says (0 when it does not know).
        frame_count: frames the file says it holds (None for a camera or when unknown).
        first: (H, W, 3) uint8 BGR, the first frame (read to check that frames decode).
    """

    capture: cv2.VideoCapture
    label: str
    name: str
    live: bool
    fps: float
    frame_count: int | None
    first: np.ndarray = field(repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return self.first.shape[:2]


def open_video(source: str | Path, input_type: str | None = None) -> VideoInput:
    """Open a video file, or a camera (``source`` its index, ``0`` for the first), and read its
    first frame.

    Raises:
        BpnetError: a missing file, a folder, a video OpenCV cannot decode, or a camera that
            cannot be opened (one line naming the input and the fix).
    """
    text = str(source)
    if input_type == "camera":
        device = int(text) if text.isdigit() else text
        label, name = f"camera {text}", f"camera{text}" if text.isdigit() else Path(text).name
        fix = (
            "check that it is connected and not used by another program, or give another "
            "index with --input (0 is the first camera)"
        )
        capture = _open(device)
        if not capture.isOpened():
            raise BpnetError(f"{label}: cannot open this camera; {fix}")
        ok, first = _read_first(capture)
        if not ok:
            capture.release()
            raise BpnetError(f"{label}: the camera opened but gave no frame; {fix}")
        return VideoInput(capture, label, name, True, _fps(capture), None, first)
    path = Path(source)
    if not path.exists():
        raise BpnetError(f"{path}: no such video file; check --input")
    if path.is_dir():
        raise BpnetError(f"{path}: is a folder; --input_type video needs a video file")
    capture = _open(str(path))
    ok, first = _read_first(capture) if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise BpnetError(
            f"{path}: OpenCV cannot decode this video (damaged, empty, or a codec it lacks); "
            f"convert it, e.g. ffmpeg -i {path} -c:v libx264 {path.stem}_h264.mp4"
        )
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return VideoInput(capture, str(path), path.stem, False, _fps(capture), count or None, first)


def _open(device: int | str) -> cv2.VideoCapture:
    with _quiet_native_stderr():
        return cv2.VideoCapture(device)


def _read_first(capture: cv2.VideoCapture) -> tuple[bool, np.ndarray | None]:
    with _quiet_native_stderr():
        ok, frame = capture.read()
    return ok and frame is not None, frame


def _fps(capture: cv2.VideoCapture) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if np.isfinite(fps) and 0 < fps < 1000 else 0.0


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what OpenCV and FFmpeg print straight to the process's stderr while a video or
    camera opens (``moov atom not found``, ``can't open camera by index``): bpnet reports a
    failure in one line of its own."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@dataclass(frozen=True)
class VideoSummary:
    """What a video run did.

    Attributes:
        frames: frames processed.
        people: people found, summed over the frames.
        tracks: distinct track ids.
        seconds: wall time from the first frame to the last.
        stopped: the run ended at Ctrl-C.
        detections: path of ``video_detections.json``.
        annotated: path of the annotated video, None when not drawn.
    """

    frames: int
    people: int
    tracks: int
    seconds: float
    stopped: bool
    detections: Path
    annotated: Path | None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def line(self) -> str:
        """The command's last line."""
        stopped = " (stopped at Ctrl-C)" if self.stopped else ""
        return (
            f"{self.frames} frames{stopped}, {self.people} people found in {self.tracks} "
            f"tracks, {self.frames_per_second:.1f} frames/s; results in "
            f"{self.detections.parent}"
        )


def run_video(
    model: str | Path | None,
    source: str | Path,
    results_dir: str | Path,
    spec: InferenceSpec,
    *,
    input_type: str | None = None,
    draw: bool = True,
    threads: int | None = None,
    key: str | None = None,
    batch_size: int = 4,
    max_frames: int | None = None,
    runtime: str | None = None,
) -> VideoSummary:
    """Find and track the people of a video file or a camera, and write the results.

    Args:
        model: a ``.pth``, ``.onnx`` or ``.engine`` file; None: ``spec.model_path``.
        source: a video file, or a camera's index (``0``) with ``input_type="camera"``.
        results_dir: receives ``video_detections.json`` and ``<name>_annotated.mp4``.
        spec: input geometry and decoder settings.
        input_type: ``video`` or ``camera``; None: ``video``.
        draw: write the annotated video.
        threads: ONNX Runtime / OpenVINO threads (None: as many as PyTorch uses).
        key: the key an encrypted model was written with.
        batch_size: frames per network batch (PyTorch, ONNX Runtime, OpenVINO; a TensorRT engine
            runs them one at a time).
        max_frames: stop after this many frames (None: the whole video; a camera runs until
            Ctrl-C).
        runtime: ``auto`` or None (the file's own), ``onnxruntime`` or ``openvino`` (.onnx).

    Raises:
        BpnetError: no model, a bad count, an unwritable folder, a video or camera that cannot
            be read, or a model that cannot be loaded; nothing is written then.
    """
    from bpnet.inference.runtime import load_model

    model = model or spec.model_path
    if model is None:
        raise BpnetError("bpnet inference: give a model with -m MODEL (.pth, .onnx or .engine)")
    if batch_size < 1 or (max_frames is not None and max_frames < 1):
        raise BpnetError(
            f"--batch_size {batch_size} --max_frames {max_frames}: both must be at least 1"
        )
    results_dir = check_output_dir(results_dir)
    video = open_video(source, input_type or "video")
    try:
        loaded = load_model(model, key=key)
        map_source = loaded.source(stage=spec.output_stage_to_use, threads=threads, runtime=runtime)
        predictor = Predictor(map_source, loaded.pose, spec)
    except BaseException:
        video.capture.release()
        raise
    return track_video(
        predictor, video, results_dir, draw=draw, batch_size=batch_size, max_frames=max_frames
    )


def track_video(
    predictor: Predictor,
    video: VideoInput,
    results_dir: str | Path,
    *,
    draw: bool = True,
    batch_size: int = 4,
    max_frames: int | None = None,
    tracker: Tracker | None = None,
) -> VideoSummary:
    """Run ``predictor`` and a tracker over the frames of an opened video; write the results.

    Args:
        predictor: finds the people of a batch of frames.
        video: from :func:`open_video`; released when this returns.
        results_dir: receives the outputs (module docstring).
        draw: write the annotated video.
        batch_size: frames per :meth:`Predictor.frames` call.
        max_frames: stop after this many frames.
        tracker: None: a :class:`Tracker` with the pose's OKS sigmas and its defaults.
    """
    results_dir = Path(results_dir)
    pose = predictor.pose
    tracker = tracker or Tracker(oks_sigmas(pose))
    height, width = video.size
    fps = video.fps or CAMERA_FPS
    total = video.frame_count
    if max_frames is not None:
        total = min(total or max_frames, max_frames)
    records: list[dict] = []
    track_ids: set[int] = set()
    with (
        _released(video),
        staging_folder("bpnet-video-") as staging,
        _ctrl_c_stops() as stop,
        progress(desc=f"inference {video.label}", unit="frame", total=total) as bar,
    ):
        annotated = staging / f"{video.name}_annotated.mp4"
        writer = _video_writer(annotated, fps, (width, height)) if draw else None
        start = time.perf_counter()
        try:
            for batch in _batches(video, batch_size, max_frames, stop):
                found = predictor.frames([image for _, _, image in batch], [i for i, _, _ in batch])
                for (index, seconds, image), prediction in zip(batch, found, strict=True):
                    ids = tracker.update(prediction.keypoints)
                    track_ids.update(ids.tolist())
                    records.append(_frame_record(index, seconds, prediction, ids))
                    if writer is not None:
                        writer.write(draw_tracks(image, prediction.keypoints, ids, pose))
                bar.update(len(batch))
        finally:
            if writer is not None:
                writer.release()
        elapsed = time.perf_counter() - start
        if writer is not None:
            copy_all_atomic([(annotated, results_dir / annotated.name)])
    write_json_atomic(
        results_dir / DETECTIONS_FILE,
        {
            "source": video.label,
            "input_type": "camera" if video.live else "video",
            "fps": round(fps, 3),
            "width": width,
            "height": height,
            "keypoint_names": list(pose.dataset_keypoints),
            "frames": records,
        },
    )
    return VideoSummary(
        frames=len(records),
        people=sum(len(r["people"]) for r in records),
        tracks=len(track_ids),
        seconds=elapsed,
        stopped=stop.is_set(),
        detections=results_dir / DETECTIONS_FILE,
        annotated=results_dir / annotated.name if draw else None,
    )


@contextmanager
def _released(video: VideoInput) -> Iterator[VideoInput]:
    try:
        yield video
    finally:
        video.capture.release()


def _video_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An mp4v writer of (width, height) frames.

    Raises:
        BpnetError: this OpenCV build cannot write it.
    """
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise BpnetError(
            f"{path.name}: OpenCV cannot write an mp4v video here; install an opencv-python "
            "build with FFmpeg, or run with --no_visualizations"
        )
    return writer


def _batches(
    video: VideoInput, size: int, max_frames: int | None, stop: threading.Event
) -> Iterator[list[tuple[int, float, np.ndarray]]]:
    """Lists of up to ``size`` (index, time in seconds, frame), until the video ends,
    ``max_frames`` frames were read, or ``stop`` is set."""
    start = time.perf_counter()
    batch: list[tuple[int, float, np.ndarray]] = []
    index, image = 0, video.first
    while image is not None and (max_frames is None or index < max_frames):
        if stop.is_set():
            break
        seconds = time.perf_counter() - start if video.live else index / (video.fps or 1.0)
        batch.append((index, round(seconds, 3), image))
        if len(batch) == size:
            yield batch
            batch = []
        index += 1
        if max_frames is None or index < max_frames:
            ok, image = video.capture.read()
            image = image if ok else None
    if batch:
        yield batch


@contextmanager
def _ctrl_c_stops() -> Iterator[threading.Event]:
    """While the block runs, Ctrl-C (SIGINT) sets the yielded event instead of raising, so the
    frame loop ends after the frames at hand and the outputs are still written; a second
    Ctrl-C interrupts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # only the main thread can install handlers
        return

    def request_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _frame_record(index: int, seconds: float, found: Prediction, ids: np.ndarray) -> dict:
    people = []
    for person, score, box, track_id in zip(
        found.keypoints, found.people.scores, boxes(found.keypoints), ids, strict=True
    ):
        people.append(
            {
                "track_id": int(track_id),
                "score": round(float(score), 5),
                "bbox": [round(float(v), 2) for v in box],
                "keypoints": [_keypoint(x, y, s) for x, y, s in person],
            }
        )
    return {"frame": index, "time": seconds, "people": people}


def _keypoint(x: float, y: float, score: float) -> list[float]:
    return [round(float(x), 2), round(float(y), 2), round(float(score), 4)]


def draw_tracks(
    image: np.ndarray, keypoints: np.ndarray, ids: np.ndarray, pose: PoseConfig
) -> np.ndarray:
    """A frame with each person's skeleton in their track's colour and the id beside them.

    Args:
        image: (H, W, 3) uint8 BGR frame (not modified).
        keypoints: (N, K, 3) x, y, score in dataset keypoint order.
        ids: (N,) track ids.
    """
    colours = [id_colour(int(i)) for i in ids]
    canvas = draw_people(image, keypoints, pose, scores=True, colours=colours)
    for box, track_id, colour in zip(boxes(keypoints), ids, colours, strict=True):
        if box[2] <= 0 and box[3] <= 0:
            continue
        corner = (int(box[0]), max(int(box[1]) - 4, 12))
        for ink, width in (((0, 0, 0), 3), (colour, 1)):  # dark outline, then the colour
            text = str(int(track_id))
            font = cv2.FONT_HERSHEY_SIMPLEX
            cv2.putText(canvas, text, corner, font, 0.5, ink, width, cv2.LINE_AA)
    return canvas


__all__ = [
    "DETECTIONS_FILE",
    "VIDEO_SUFFIXES",
    "VideoInput",
    "VideoSummary",
    "draw_tracks",
    "is_video_input",
    "oks_sigmas",
    "open_video",
    "run_video",
    "track_video",
]
