"""Exceptions a user can cause. The CLI catches ``UserError`` in one place, prints its message on one line
and exits 2.

The family: ``UserError`` itself (bad file, flag or dataset), ``ConfigError`` (a config key, type or value;
also a ``ValueError``) and ``UnknownNameError`` (a name no registry knows; also a ``KeyError``, its message
lists the known names). ``spatialboost.config`` and ``spatialboost.registry`` re-export the last two.

``EmptyLabelsError`` is not a user error: a sample (or batch) with no answer token to learn from, raised by
the data stage (``data.conversation``, ``data.collate``) and the model's loss (``models.vlm``); datasets skip
such samples.
"""


class UserError(Exception):
    """Bad input from the user (file, flag, config); the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A user-facing configuration error (bad key, bad type, impossible value)."""


class UnknownNameError(UserError, KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class EmptyLabelsError(ValueError):
    """A sample or batch with no answer token to learn from (would give a silent zero loss)."""
