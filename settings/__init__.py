"""The settings toolkit both services use: `DISPATCH_*` environment variables over an optional
TOML file, read once at the entrypoint into frozen, typed dataclasses.

- `SettingsError`: the one error; `str()` names the variable or TOML key at fault, so start-up
  stops with a message an operator can act on (the command line exits 2 with it).
- `Secret`: a string that never prints.
- `build_settings(cls, env, table, where=...)`: a frozen dataclass from a TOML table, then the
  environment (`DISPATCH_<FIELD>` unless the field's metadata names another variable), then
  explicit overrides.
- `read_config(path)`: the parsed TOML file; `check_config(raw, schema)`: refuses any table or
  key the schema does not know, naming it. The schema of every documented table is assembled
  by the composition root (`dispatch_bridge`), which knows both services.
"""

from ._build import build_settings, env_name, fields_of
from ._errors import SettingsError
from ._file import Schema, check_config, read_config, top_level
from ._secret import Secret

__all__ = [
    "Schema",
    "Secret",
    "SettingsError",
    "build_settings",
    "check_config",
    "env_name",
    "fields_of",
    "read_config",
    "top_level",
]
