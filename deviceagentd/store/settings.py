"""Tuning knobs of the store, one frozen object passed in by the daemon."""

from __future__ import annotations

from dataclasses import dataclass, fields

from deviceagentd.store.outbox import OutboxBounds


@dataclass(frozen=True)
class StoreSettings:
    batch_interval_s: float = 1.0
    """How long the writer collects rows before one commit (the loss window of a crash)."""
    batch_max_rows: int = 5000
    """Commit early when this many rows are waiting."""
    events_max_age_days: float = 30.0
    events_max_rows: int = 1_000_000
    commands_max_age_days: float = 30.0
    commands_max_rows: int = 200_000
    sessions_max_age_days: float = 30.0
    """Sessions (header and messages) not written to for this long are deleted."""
    retention_interval_s: float = 300.0
    max_backlog_rows: int = 20_000
    """Past this many rows waiting for a commit, `Store.has_room` is False: device messages
    wait (their acknowledgement held, so the broker queues them) instead of piling up."""
    max_pending_rows: int = 40_000
    """Rows held in memory at most (producers that cannot wait); past it the oldest waiting
    events are dropped and counted as lost."""
    close_timeout_s: float = 10.0
    """Closing with commits failing (a full disk), keep trying this long before giving up."""
    outbox_max_rows: int = 500_000
    outbox_max_bytes: int = 256 * 1024 * 1024
    outbox_max_age_s: float = 7 * 86400.0
    """The uplink outbox's bounds (store/outbox.py): past one, the oldest rows are dropped."""

    def outbox_bounds(self) -> OutboxBounds:
        return OutboxBounds(self.outbox_max_rows, self.outbox_max_bytes, int(self.outbox_max_age_s * 1000))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"store setting {f.name} must be a positive number, got {value!r}")
