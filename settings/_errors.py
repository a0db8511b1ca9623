"""The settings error: one class, raised for any malformed setting or configuration file."""

from __future__ import annotations


class SettingsError(ValueError):
    """A setting is malformed; `str()` names it by its environment variable or TOML key."""
