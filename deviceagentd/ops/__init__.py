"""Operator commands behind the CLI: backup, restore and a read-only look at the database.

They run as separate short-lived processes next to (or instead of) the daemon and work on
the SQLite file directly, so every one of them is safe while the daemon runs, or refuses.
"""
