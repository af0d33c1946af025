"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "UserError"]


class UserError(Exception):
    """A mistake in the user's input (config, data, command line): one line, no traceback, exit 2."""


class ConfigError(UserError):
    """A bad config file, key or value. The message names the file and the dotted key."""


class DataError(UserError):
    """Missing or malformed data. The message names the file and, where it can, the line or row."""
