"""Errors meant for the person at the keyboard, not for a traceback.

`main.py` prints any `UserFacingError` as one paragraph and exits with status 2, so every message
must name the thing that is wrong and the way to fix it.
"""


class UserFacingError(RuntimeError):
    """A problem with the user's data, config or files, explained in its message."""


class DataNotFoundError(UserFacingError):
    """No copy of a data set in any accepted layout, and it could not be downloaded."""


class DataCorruptError(UserFacingError):
    """A data set copy was found but some of its files cannot be read."""


class CheckpointError(UserFacingError):
    """A checkpoint path that does not exist or does not hold a Lightning checkpoint."""


class ConfigError(UserFacingError, ValueError):
    """A config value outside what the component accepts."""
