"""File input and output: atomic writes (a reader never sees a half-written file) and readers
whose failures are one-line errors naming the file."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from bpnet.errors import BpnetError, DatasetError, SpecError

# write errors that mean "the disk (or the user's quota) is full"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NEARLY_FULL = 4 << 20  # bytes: free space below this after a failed write means no space


class DiskFullError(BpnetError):
    """A file could not be written because its disk or quota is full."""

    def __init__(self, path: str | os.PathLike | None):
        if isinstance(path, str) and path.startswith("Caught "):  # from a DataLoader worker
            super().__init__(path)
            return
        what = f"{path}: not written" if path is not None else "a file could not be written"
        folder = Path(path).parent if path is not None else "the output folder"
        super().__init__(
            f"{what}: no space left on the device (the files written before are intact); free "
            f"some space on the disk of {folder} (temporary files go to "
            f"{tempfile.gettempdir()}; TMPDIR moves them) and run the command again"
        )


def is_disk_full(err: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """True when ``err`` says the disk or quota is full, or ``folder``'s disk has (almost) no
    free space left: torch.save's C++ writer reports a full disk as "unexpected pos" or
    "iostream error", without an errno."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return True
    if folder is None or not isinstance(err, OSError | RuntimeError):
        return False
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    The file is flushed to disk before the rename, so a crash leaves either the old file or
    the complete new one, never an empty or partial file under the real name. The result gets
    the usual permissions (0666 minus the umask), not mkstemp's private 0600.

    Raises:
        BpnetError: the folder cannot be created or written (names the path).
        DiskFullError: the disk or quota filled up while writing (names the path).

    Example:
        >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # keep the real suffix last: writers such as cv2.imwrite choose the format by it
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(path) from None
        raise BpnetError(
            f"{path}: cannot write here ({err.strerror}); choose a writable folder"
        ) from None
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as err:
        if is_disk_full(err, path.parent):  # checked before the partial file is removed
            raise DiskFullError(path) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_output_dir(path: str | os.PathLike) -> Path:
    """Fail before any work when an output folder could not be written later.

    Nothing is created: a run that fails leaves no empty folder behind.

    Raises:
        BpnetError: the path is a file, or its nearest existing folder is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BpnetError(f"{path}: is a file, not a folder; choose another output folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BpnetError(f"{path}: cannot create or write this folder; choose a writable one")
    return path


# what atomic_path's temporary files are called: ".<stem>.<8 random chars>.tmp<suffix>"
_TEMP_FILE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?")


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` that a killed process left in ``folder``.

    Only call it while no other process writes there (under :func:`folder_lock`): a live
    writer's temporary file has the same name. Returns the deleted paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMP_FILE.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def process_alive(pid: int) -> bool:
    """True when a process with this id runs (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def staging_folder(prefix: str) -> Iterator[Path]:
    """A private temporary folder ``<TMPDIR>/<prefix><pid>-<random>``, removed when the block
    ends, also on SIGTERM (turned into KeyboardInterrupt while the block runs).

    Folders of the same prefix that a killed process left (``kill -9``: its pid no longer
    runs) and that belong to this user are removed first.

    Example:
        >>> with staging_folder("bpnet-inference-") as staging:  # doctest: +SKIP
        ...     (staging / "a.jpg").write_bytes(data)
    """
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)-[a-z0-9_]{{8}}")
    root = Path(tempfile.gettempdir())
    with suppress(OSError):
        for folder in root.iterdir():
            match = pattern.fullmatch(folder.name)
            if not match or not folder.is_dir() or process_alive(int(match.group(1))):
                continue
            if folder.stat().st_uid == os.getuid():
                shutil.rmtree(folder, ignore_errors=True)
    # the pid in the name tells a later run whether this one still runs
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    try:
        with _sigterm_as_interrupt():
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let ``kill PID`` (SIGTERM) unwind the stack like Ctrl-C, so ``finally`` blocks run."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can install handlers
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


LOCK_FILE = ".bpnet.lock"


@contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold an exclusive lock on an output folder (created if missing) while the block runs.

    The lock is ``flock`` on ``folder/.bpnet.lock``: the kernel drops it when the process dies,
    so a run killed with ``kill -9`` never blocks the next one. The file is removed on exit,
    and so is the folder when this call created it and nothing else was written there.

    Args:
        folder: the output folder.
        command: what holds it, for the other process's message (e.g. ``bpnet train``).

    Raises:
        BpnetError: another process holds the lock (names it and its pid), or the folder
            cannot be written.

    Example:
        >>> with folder_lock("runs/demo/train", "bpnet train"):  # doctest: +SKIP
        ...     train(spec, "runs/demo/train")
    """
    try:
        import fcntl
    except ImportError:  # not on POSIX: run unlocked
        yield Path(folder)
        return
    folder = check_output_dir(folder)
    created = not folder.exists()
    lock = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").split()
                os.close(fd)
                who = f"{command} (pid {holder[0]})" if holder else command
                raise BpnetError(
                    f"{folder}: {who} is already writing to this folder; wait for it to end, "
                    "or choose another folder"
                ) from None
            # the holder may have removed the file between our open and our lock: retry
            with suppress(FileNotFoundError):
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {command}\n".encode())
    except OSError as err:
        raise BpnetError(
            f"{folder}: cannot lock this folder ({err.strerror}); choose a writable one"
        ) from None
    try:
        yield folder
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)  # releases the lock
        if created:
            with suppress(OSError):
                folder.rmdir()  # only when empty: a run that failed before writing anything


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent)


def write_with_atomic(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` if it returns normally."""
    with atomic_path(path) as tmp:
        writer(tmp)


def copy_all_atomic(pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]]) -> None:
    """Copy each ``(source, target)``: every target is written, or none is touched.

    Every copy is first made in full beside its target; only then are they all renamed into
    place, so a copy that fails (no space, no permission) leaves the targets as they were and
    no temporary file behind.
    """
    with ExitStack() as stack:
        for source, target in pairs:
            shutil.copyfile(source, stack.enter_context(atomic_path(target)))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files (jpg, jpeg, png, bmp, any case) directly inside ``folder``, by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a one-line DatasetError."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path}: malformed JSON at line {err.lineno} column {err.colno} ({err.msg}); "
            "fix the file or download it again"
        ) from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 JSON text ({err.reason}); fix the file") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror}); check the path") from None


class _SpecYamlLoader(yaml.SafeLoader):
    """YAML for specs: YAML 1.2 floats (``1e-5`` is a number) and no duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where "1e-5" (no dot) is a string; specs want YAML 1.2's numbers.
_SpecYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse spec YAML text; errors are one-line SpecErrors naming ``source``."""
    try:
        return yaml.load(text, Loader=_SpecYamlLoader)
    except yaml.YAMLError as err:
        msg = " ".join(str(err).split())
        raise SpecError(f"{source}: not valid YAML ({msg}); fix the syntax") from None


def read_yaml(path: str | os.PathLike, what: str = "spec file") -> Any:
    """Read and parse a YAML spec / pose-config file.

    Raises:
        SpecError: missing, unreadable, not UTF-8, or not valid YAML (one line, naming it).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: {what} not found; pass an existing YAML file") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text ({err.reason}); save it as UTF-8") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read the {what} ({err.strerror})") from None
    return parse_yaml(text, str(path))
