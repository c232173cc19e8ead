"""Errors the store raises to its callers."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked (not open, closed, writer stopped)."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer deviceagentd; opening it could damage it."""

    def __init__(self, path: str, found: int, known: int) -> None:
        super().__init__(
            f"database {path} has schema version {found}, but this deviceagentd only knows "
            f"versions up to {known}; refusing to open it (downgrade). Install the newer "
            f"deviceagentd again, or move the file away to start with an empty database."
        )
        self.found = found
        self.known = known
