"""The one exception type for errors a user can cause.

Every message names the file or field at fault and says how to fix it; the CLI prints it on
one line and exits with status 2, without a traceback.
"""


class BpnetError(Exception):
    """A user-facing error: bad input file, bad spec key, missing image, ..."""


class SpecError(BpnetError):
    """An experiment / inference spec or pose config that cannot be used as written."""


class DatasetError(BpnetError):
    """A dataset whose files or annotations cannot be used as written."""
