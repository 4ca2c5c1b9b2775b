"""Errors that carry their own fix.

Every error a user can cause by passing bad input derives from :class:`MMAlignError`, names the
argument at fault and says how to fix it. The CLI prints these as one line, without a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MMAlignError(Exception):
    """Base class of the errors caused by bad input; the message names the argument and the fix."""


class InvalidInputError(MMAlignError, ValueError):
    """An argument has the wrong type, shape, range or length."""


class UnknownRewardError(MMAlignError, KeyError):
    """A reward name that no card, prefix or family resolves."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NotDifferentiableError(MMAlignError, RuntimeError):
    """A reward without gradients was used where gradients are needed."""


class MissingDependencyError(MMAlignError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class WeightsNotFoundError(MMAlignError, FileNotFoundError):
    """A weight file is missing or unreadable; the message names the file and how to get it."""


class CheckpointMismatchError(WeightsNotFoundError):
    """A weight file whose keys or shapes do not fit the architecture its card names; the message
    lists the missing and unexpected keys."""


class RemoteRewardError(MMAlignError, ConnectionError):
    """A ``remote:`` reward's server cannot be reached, did not answer in time, or failed; the
    message names the address and the fix."""


class PreferenceStoreError(MMAlignError, RuntimeError):
    """A preference store cannot be used: locked by another process past the timeout, or a file that
    is not a store. The file is never repaired or overwritten; the message names it and the fix."""


def require(module: str, *, extra: str | None = None, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        target = f"mmalign[{extra}]" if extra else (package or module)
        raise MissingDependencyError(
            f"`{module}` is not installed ({error}). Fix: pip install '{target}'"
        ) from error
