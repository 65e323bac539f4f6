"""The library's exceptions for user mistakes.

Every error a user can fix (a bad file, field, flag or config key) is a
:class:`UserError` whose message names the culprit.  The command-line entry points
turn it into one line on stderr and exit code 2; library callers can catch it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a field, a flag); the message names it."""


class ConfigError(UserError, ValueError):
    """A mistake in a config file or a ``--set`` override; the message names the key path."""
