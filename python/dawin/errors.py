"""The exceptions dawin raises. Each is a `DawinError` and also the
built-in exception of its kind, so `except ValueError` works as expected.
The message is the one the `dawin` command line prints."""


class DawinError(Exception):
    """Every error dawin raises."""


class InvalidInputError(DawinError, ValueError):
    """A bad argument or a file that is not what dawin needs."""


class FileMissingError(DawinError, FileNotFoundError):
    """A file or folder that does not exist."""


class OutOfDeviceMemoryError(DawinError, MemoryError):
    """The executor ran out of memory."""


class DawinWarning(UserWarning):
    """Something odd about an input or a result (an assumed setting, a
    skipped file): what the command line prints as `warning:`."""
