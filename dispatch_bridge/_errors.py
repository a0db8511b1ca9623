"""The command line's error: a command that cannot run as asked.

`SettingsError` (a malformed setting) and `CommandError` (a missing prerequisite: a database,
a free port) end a command with one line on stderr and exit status 2; operator commands
have their own `OpsError` (exit 1), see _ops.py.
"""

from __future__ import annotations


class CommandError(Exception):
    """One line telling the operator what to do; the command exits 2."""
