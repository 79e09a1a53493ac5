"""Typed settings from GOVLEDGER_* environment variables."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from schemas.settings import (
    ALL_SETTINGS,
    CommonSettings,
    GatewaySettings,
    RuntimeSettings,
    SettingsError,
    SinkSettings,
    StreamSettings,
    describe,
    load,
)


def test_empty_environment_gives_the_declared_defaults() -> None:
    settings = load(GatewaySettings, environ={})
    for field in dataclasses.fields(GatewaySettings):
        assert getattr(settings, field.name) == field.default


def test_values_are_converted_to_the_declared_types() -> None:
    settings = load(
        GatewaySettings,
        environ={
            "GOVLEDGER_MAX_MESSAGES": "16",
            "GOVLEDGER_SIM_ERROR_RATE": "0.25",
            "GOVLEDGER_UPSTREAM_TIMEOUT_S": "7",
            "GOVLEDGER_UPSTREAM_BASE_URL": "http://llm.internal:8000/v1",
            "GOVLEDGER_GATEWAY_PORT": "9090",
        },
    )
    assert settings.max_messages == 16
    assert type(settings.max_messages) is int
    assert settings.sim_error_rate == 0.25
    assert settings.upstream_timeout_s == 7.0
    assert type(settings.upstream_timeout_s) is float
    assert settings.upstream_base_url == "http://llm.internal:8000/v1"
    assert settings.gateway_url == "http://127.0.0.1:9090"


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " True "])
def test_truthy_booleans(raw: str) -> None:
    assert load(SinkSettings, environ={"GOVLEDGER_RESTORE_ON_START": raw}).restore_on_start is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off"])
def test_falsy_booleans(raw: str) -> None:
    settings = load(SinkSettings, environ={"GOVLEDGER_RESTORE_ON_START": raw})
    assert settings.restore_on_start is False


def test_other_environment_variables_are_ignored() -> None:
    settings = load(StreamSettings, environ={"PATH": "/usr/bin", "HOME": "/root"})
    assert settings == StreamSettings()


def test_a_variable_of_another_service_is_accepted_from_the_shared_environment() -> None:
    # `govledger up` hands one environment to every service.
    settings = load(StreamSettings, environ={"GOVLEDGER_MAX_MESSAGES": "8"})
    assert settings == StreamSettings()


def test_unknown_variables_are_rejected_by_name() -> None:
    environ = {
        "GOVLEDGER_MAX_MESAGES": "10",
        "GOVLEDGER_SINK_BATCH": "5",
        "GOVLEDGER_LOG_LEVEL": "x",
    }
    with pytest.raises(SettingsError) as raised:
        load(GatewaySettings, environ=environ)
    message = str(raised.value)
    assert "GOVLEDGER_MAX_MESAGES" in message
    assert "GOVLEDGER_SINK_BATCH" in message
    assert "GOVLEDGER_LOG_LEVEL" not in message


@pytest.mark.parametrize(
    ("settings_class", "name", "raw"),
    [
        (GatewaySettings, "GOVLEDGER_MAX_MESSAGES", "ten"),
        (GatewaySettings, "GOVLEDGER_MAX_MESSAGES", "1.5"),
        (GatewaySettings, "GOVLEDGER_MAX_BODY_BYTES", ""),
        (GatewaySettings, "GOVLEDGER_SIM_ERROR_RATE", "half"),
        (RuntimeSettings, "GOVLEDGER_START_TIMEOUT_S", "60s"),
        (SinkSettings, "GOVLEDGER_RESTORE_ON_START", "maybe"),
        (SinkSettings, "GOVLEDGER_RESTORE_ON_START", ""),
    ],
)
def test_bad_values_are_rejected_naming_the_variable(
    settings_class: type[Any], name: str, raw: str
) -> None:
    with pytest.raises(SettingsError, match=name):
        load(settings_class, environ={name: raw})


def test_overrides_win_and_unknown_overrides_are_rejected() -> None:
    settings = load(GatewaySettings, environ={"GOVLEDGER_MAX_MESSAGES": "16"}, max_messages=2)
    assert settings.max_messages == 2
    with pytest.raises(SettingsError, match="max_mesages"):
        load(GatewaySettings, environ={}, max_mesages=2)


def test_describe_lists_every_setting_once_with_a_doc() -> None:
    rows = describe()
    env_names = [env for _service, env, _default, _doc in rows]
    assert len(env_names) == len(set(env_names))
    classes: tuple[type[CommonSettings], ...] = (CommonSettings, *ALL_SETTINGS)
    declared = {f"GOVLEDGER_{f.name.upper()}" for cls in classes for f in dataclasses.fields(cls)}
    assert set(env_names) == declared
    for _service, env, _default, doc in rows:
        assert doc.strip(), f"{env} has no doc"


def test_describe_shows_each_default() -> None:
    defaults = {env: default for _service, env, default, _doc in describe()}
    assert defaults["GOVLEDGER_GATEWAY_PORT"] == repr(CommonSettings().gateway_port)
    assert defaults["GOVLEDGER_SINK_BATCH_ROWS"] == repr(SinkSettings().sink_batch_rows)
