"""User-facing errors.

A `GraftError` is a problem the user can fix (a config field, a file, a plugin
name). The CLI prints its message as one line and exits 2 without a traceback;
anything else is a bug and keeps its traceback.
"""


class GraftError(Exception):
    """A user mistake or an environment problem, explained in one line."""

    exit_code = 2


class ConfigError(GraftError):
    """A config value is invalid; the message starts with the field path."""


class PluginError(GraftError):
    """A plugin could not be loaded, clashes with another, or is unknown."""


class DataError(GraftError):
    """The data cannot be acquired or is unusable for the requested task."""


class TransientDataError(DataError):
    """A source failed in a way that may pass on its own (HTTP 5xx or 429, a dropped
    connection, a truncated transfer): the acquire stage is retried with back-off."""


class StageError(GraftError):
    """A stage cannot run, e.g. an earlier stage's output is missing."""
