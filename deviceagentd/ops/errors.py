"""The one error an operator command reports: a single line saying what went wrong."""

from __future__ import annotations


class OpsError(Exception):
    """The command cannot do what was asked; str() is the line shown to the operator."""
