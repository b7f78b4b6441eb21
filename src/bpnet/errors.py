"""The one exception type for errors a user can cause.

Every message names the file or field at fault and says how to fix it; the CLI prints it on
one line and exits with status 2, without a traceback.
"""

import re


class BpnetError(Exception):
    """A user-facing error: bad input file, bad spec key, missing image, ..."""

    def __init__(self, *args):
        # A DataLoader worker's error is raised again in the main process as
        # type(err)("Caught <type> in DataLoader worker process N.\nOriginal Traceback ...
        # \n<module>.<type>: <message>\n"): keep the message, the worker's stack means nothing
        # to a user
        if len(args) == 1 and isinstance(args[0], str) and _WORKER_ERROR.match(args[0]):
            last = args[0].rstrip("\n").rsplit("\n", 1)[-1]
            args = (last.split(": ", 1)[-1],)
        super().__init__(*args)


_WORKER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class SpecError(BpnetError):
    """An experiment / inference spec or pose config that cannot be used as written."""


class DatasetError(BpnetError):
    """A dataset whose files or annotations cannot be used as written."""


class UnreadableImageError(DatasetError):
    """An image file that cannot be read or decoded.

    The message advises what fits an annotated dataset; a caller that reads other folders
    (inference, calibration) words its own advice from ``path`` and ``reason``.

    Attributes:
        path: the image file (None when rebuilt from a DataLoader worker's message).
        reason: what is wrong with it, e.g. ``not a readable image (...)``.
    """

    def __init__(self, message: str, *, path=None, reason: str | None = None):
        super().__init__(message)
        self.path, self.reason = path, reason

    def advise(self, fix: str) -> str:
        """The one-line message with another fix: ``<path>: <reason>; <fix>``."""
        return f"{self.path}: {self.reason}; {fix}" if self.reason else str(self)
