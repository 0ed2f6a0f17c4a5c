"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad config, missing model...)."""

    exit_code = 2


class SourceError(UserError):
    """The video source cannot be opened or stopped delivering frames."""

    exit_code = 3


class ModelError(UserError):
    """A model file is missing or cannot be loaded."""

    exit_code = 4


class ConfigError(UserError):
    """The YAML configuration is unreadable or invalid."""

    exit_code = 2


class OutputError(UserError):
    """The output folder cannot be written (not a folder, read-only, disk full)."""

    exit_code = 5
