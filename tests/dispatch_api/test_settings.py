"""dispatch-api settings: environment over TOML over defaults, refused when malformed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dispatch_api.settings import (
    DEFAULT_EVIDENCE_TYPES,
    ApiSettings,
    Secret,
    SettingsError,
    load_api_settings,
)

DSN = "postgresql://dispatch:hunter2-very-secret@db.internal:5432/dispatch"


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dispatch.toml"
    path.write_text(text)
    return path


def test_no_environment_and_no_file_gives_the_defaults() -> None:
    assert load_api_settings({}) == ApiSettings()


def test_settings_are_read_from_dispatch_environment_variables() -> None:
    settings = load_api_settings(
        {
            "DISPATCH_API_PORT": "9090",
            "DISPATCH_API_HOST": "0.0.0.0",
            "DISPATCH_DB_POOL_MIN": " 3 ",
            "DISPATCH_DB_POOL_MAX": "12",
            "DISPATCH_DATABASE_URL": DSN,
            "DISPATCH_DATA_DIR": "/var/lib/dispatch",
            "DISPATCH_EVIDENCE_CONTENT_TYPES": "image/png, application/pdf,",
            "DISPATCH_IDEMPOTENCY_PURGE_INTERVAL_S": "30.5",
            "DISPATCH_TEMPLATES_FILE": "/etc/dispatch/templates.json",
            "UNRELATED": "ignored",
        }
    )

    assert settings.api_port == 9090
    assert settings.api_host == "0.0.0.0"
    assert (settings.db_pool_min, settings.db_pool_max) == (3, 12)
    assert settings.database_url == Secret(DSN)
    assert settings.data_dir == Path("/var/lib/dispatch")
    assert settings.evidence_content_types == ("image/png", "application/pdf")
    assert settings.idempotency_purge_interval_s == 30.5
    assert settings.templates_file == Path("/etc/dispatch/templates.json")
    assert settings.bridge_port == ApiSettings().bridge_port


def test_settings_are_read_from_a_toml_file(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        "api_port = 8181\n"
        "max_json_bytes = 2048\n"
        'evidence_content_types = ["image/jpeg", "text/plain"]\n'
        "idempotency_retention_hours = 48\n",
    )

    settings = load_api_settings({}, path)

    assert settings.api_port == 8181
    assert settings.max_json_bytes == 2048
    assert settings.evidence_content_types == ("image/jpeg", "text/plain")
    assert settings.idempotency_retention_hours == 48
    assert settings.evidence_max_bytes == ApiSettings().evidence_max_bytes


def test_the_environment_overrides_the_toml_file(tmp_path: Path) -> None:
    path = toml(tmp_path, "api_port = 8181\ndb_pool_max = 20\n")

    settings = load_api_settings({"DISPATCH_API_PORT": "7070"}, path)

    assert settings.api_port == 7070
    assert settings.db_pool_max == 20


def test_explicit_overrides_win_over_environment_and_file(tmp_path: Path) -> None:
    path = toml(tmp_path, "api_port = 8181\n")

    settings = load_api_settings({"DISPATCH_API_PORT": "7070"}, path, api_port=6060)

    assert settings.api_port == 6060


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DISPATCH_DB_POOL_MAX", "ten"),
        ("DISPATCH_API_PORT", "80.5"),
        ("DISPATCH_MAX_JSON_BYTES", ""),
        ("DISPATCH_IDEMPOTENCY_PURGE_INTERVAL_S", "often"),
    ],
)
def test_a_value_that_does_not_parse_is_refused_naming_its_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_api_settings({variable: value})

    assert str(raised.value).startswith(f"{variable}:")
    assert repr(value) in str(raised.value)


def test_a_bad_toml_value_is_refused_naming_the_variable(tmp_path: Path) -> None:
    for text in ("db_pool_max = true\n", 'db_pool_max = "many"\n', "db_pool_max = 2.5\n"):
        with pytest.raises(SettingsError, match=r"^DISPATCH_DB_POOL_MAX:"):
            load_api_settings({}, toml(tmp_path, text))


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DISPATCH_DB_POOL_MIN": "5", "DISPATCH_DB_POOL_MAX": "4"}, "DISPATCH_DB_POOL_MAX"),
        ({"DISPATCH_DB_POOL_MIN": "0"}, "DISPATCH_DB_POOL_MIN"),
        ({"DISPATCH_IDEMPOTENCY_RETENTION_HOURS": "23"}, "DISPATCH_IDEMPOTENCY_RETENTION_HOURS"),
        ({"DISPATCH_API_PORT": "0"}, "DISPATCH_API_PORT"),
        ({"DISPATCH_API_PORT": "65536"}, "DISPATCH_API_PORT"),
        ({"DISPATCH_MAX_JSON_BYTES": "1023"}, "DISPATCH_MAX_JSON_BYTES"),
        ({"DISPATCH_EVIDENCE_MAX_BYTES": "0"}, "DISPATCH_EVIDENCE_MAX_BYTES"),
        ({"DISPATCH_DB_LOCK_TIMEOUT_MS": "-1"}, "DISPATCH_DB_LOCK_TIMEOUT_MS"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_its_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable}:"):
        load_api_settings(env)


def test_the_boundary_values_are_accepted() -> None:
    settings = load_api_settings(
        {
            "DISPATCH_DB_POOL_MIN": "4",
            "DISPATCH_DB_POOL_MAX": "4",
            "DISPATCH_IDEMPOTENCY_RETENTION_HOURS": "24",
            "DISPATCH_API_PORT": "65535",
            "DISPATCH_MAX_JSON_BYTES": "1024",
        }
    )

    assert (settings.db_pool_min, settings.db_pool_max) == (4, 4)
    assert settings.idempotency_retention_hours == 24


def test_an_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="unknown setting 'api_prot'"):
        load_api_settings({}, toml(tmp_path, "api_prot = 8081\n"))


def test_a_malformed_or_missing_toml_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--config"):
        load_api_settings({}, toml(tmp_path, "api_port = \n"))
    with pytest.raises(SettingsError, match="--config"):
        load_api_settings({}, tmp_path / "absent.toml")


def test_the_database_url_never_prints() -> None:
    settings = load_api_settings({"DISPATCH_DATABASE_URL": DSN})

    assert settings.database_url is not None
    assert settings.database_url.reveal() == DSN
    for text in (repr(settings), str(settings), repr(settings.database_url)):
        assert "hunter2" not in text
        assert "db.internal" not in text
    assert "**********" in repr(settings)
    assert f"{settings.database_url}" == "Secret('**********')"


def test_an_empty_database_url_means_none() -> None:
    assert load_api_settings({"DISPATCH_DATABASE_URL": ""}).database_url is None


def test_the_default_evidence_types_are_the_documented_allow_list() -> None:
    assert ApiSettings().evidence_content_types == DEFAULT_EVIDENCE_TYPES
    assert "image/png" in DEFAULT_EVIDENCE_TYPES
    assert "text/html" not in DEFAULT_EVIDENCE_TYPES


def test_the_cli_exits_2_naming_the_bad_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["DISPATCH_API_PORT"] = "notaport"
    env["DISPATCH_DATA_DIR"] = str(tmp_path / "data")
    cli = Path(sys.executable).parent / "dispatch-bridge"

    done = subprocess.run(
        [str(cli), "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "DISPATCH_API_PORT" in done.stderr
    assert "notaport" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()  # it stopped before touching anything
