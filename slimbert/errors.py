"""One error family for everything a user can get wrong.

The CLI prints a SlimbertError as one paragraph (what was wrong, where, what to do) and
exits with its ``exit_code``; anything else is a bug: it keeps its traceback and exits 3.
"""

from __future__ import annotations


class SlimbertError(Exception):
    """A problem with the user's input or environment, explained for the user."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


class RecipeError(SlimbertError):
    """The recipe file (or the CLI options standing in for it) is malformed."""


class DataError(SlimbertError):
    """A dataset cannot be read, is empty, or its columns and labels do not fit."""


class ModelError(SlimbertError):
    """A model cannot be found or loaded."""


class AssetError(SlimbertError):
    """A built-in asset cannot be fetched, verified or cached."""


class ArtifactError(SlimbertError):
    """An artifact folder is damaged: its manifest is unreadable or its files no longer match it."""


class ExportError(SlimbertError):
    """An export failed or produced a graph that disagrees with PyTorch."""


class RuntimeUnavailable(SlimbertError):
    """A runtime/target is not installed or cannot run here."""


class GateError(SlimbertError):
    """The gate cannot compare: unreadable report, unknown row, or different evaluation data."""


class GateFailed(SlimbertError):
    """The candidate was compared and missed a threshold: a verdict, not a usage error.

    Exit code 1 lets CI tell "the model regressed" (1) from "the gate was misconfigured" (2).
    """

    exit_code = 1


class DeployError(SlimbertError):
    """A bundle cannot be built, shipped, installed, rolled back or benchmarked on a device."""
