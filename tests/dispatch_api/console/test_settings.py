"""The console's settings: read like every other, refused with a message naming them."""

from __future__ import annotations

import pytest

from dispatch_api.settings import SettingsError, load_api_settings


def test_the_console_settings_are_read_from_the_environment() -> None:
    settings = load_api_settings(
        {
            "DISPATCH_CONSOLE_SESSION_MINUTES": "60",
            "DISPATCH_TRACE_UI_URL": "http://jaeger:16686/trace/{trace_id}",
        }
    )
    assert settings.console_session_minutes == 60
    assert settings.trace_ui_url == "http://jaeger:16686/trace/{trace_id}"
    assert load_api_settings({}).trace_ui_url is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DISPATCH_CONSOLE_SESSION_MINUTES", "0"),
        ("DISPATCH_TRACE_UI_URL", "https://jaeger.example/trace/"),  # no {trace_id}
        ("DISPATCH_TRACE_UI_URL", "javascript:alert(1)//{trace_id}"),
    ],
)
def test_a_bad_console_setting_is_refused_naming_it(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_api_settings({variable: value})
