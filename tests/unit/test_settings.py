"""Settings: one typed accessor with documented defaults, and system checks for mistakes."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import override_settings

from pgpubsub.checks import check_settings
from pgpubsub.conf import PgPubSubSettings, get_settings, rule_of, setting_names
from pgpubsub.exceptions import SettingsError
from pgpubsub.options import WorkerOptions
from pgpubsub.queue import retry_delay
from pgpubsub.supervisor import Supervisor


class NoGetFilter:
    pass


class TenantFilter:
    def get_filter(self) -> object:
        return None


def test_every_setting_has_its_documented_default_when_unset() -> None:
    with override_settings():
        for name in PgPubSubSettings.__dataclass_fields__:
            if hasattr(settings, f"PGPUBSUB_{name.upper()}"):
                delattr(settings, f"PGPUBSUB_{name.upper()}")

        assert get_settings() == PgPubSubSettings(
            tx_bound_notification_context=False,
            pass_context_to_listeners=False,
            listener_filter=None,
            poll_interval=5.0,
            batch_size=100,
            max_attempts=5,
            retry_backoff=2.0,
            retry_backoff_max=3600.0,
            shutdown_timeout=30.0,
            reconnect_timeout=600.0,
            broadcast_retention=3600.0,
            progress_interval=5.0,
            message_time_limit=None,
            keep_handled=None,
        )


def test_project_settings_override_the_defaults() -> None:
    # testapp/settings.py shortens the poll interval for the example and the tests.
    assert get_settings().poll_interval == settings.PGPUBSUB_POLL_INTERVAL


def test_override_settings_is_seen_at_once() -> None:
    with override_settings(PGPUBSUB_BATCH_SIZE=7, PGPUBSUB_PASS_CONTEXT_TO_LISTENERS=True):
        assert get_settings().batch_size == 7
        assert get_settings().pass_context_to_listeners is True

    assert get_settings().batch_size == 100


def test_retry_delay_doubles_after_each_attempt_up_to_the_maximum() -> None:
    config = PgPubSubSettings(retry_backoff=2.0, retry_backoff_max=10.0)

    assert [retry_delay(attempts, config) for attempts in range(1, 6)] == [
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
    ]


def test_valid_configuration_passes_the_system_checks() -> None:
    with override_settings(PGPUBSUB_LISTENER_FILTER=f"{__name__}.TenantFilter"):
        assert check_settings() == []


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"PGPUBSUB_LISTENER_FILTER": "nowhere.Filter"}, "pgpubsub.E002"),
        ({"PGPUBSUB_LISTENER_FILTER": f"{__name__}.NoGetFilter"}, "pgpubsub.E003"),
        ({"PGPUBSUB_BATCH_SIZE": 0}, "pgpubsub.E004"),
        ({"PGPUBSUB_POLL_INTERVAL": -1}, "pgpubsub.E004"),
        ({"PGPUBSUB_POLL_INTERVAL": "5"}, "pgpubsub.E005"),
        ({"PGPUBSUB_RETRY_BACKOFF": -2}, "pgpubsub.E004"),
        ({"PGPUBSUB_RECONNECT_TIMEOUT": 0}, "pgpubsub.E004"),
        ({"PGPUBSUB_BATCH_SIZE": 2.5}, "pgpubsub.E005"),
        ({"PGPUBSUB_LISTENER_FILTER": TenantFilter}, "pgpubsub.E005"),
    ],
)
def test_configuration_mistakes_are_reported_by_system_checks(
    overrides: dict[str, object], check_id: str
) -> None:
    with override_settings(**overrides):
        assert [error.id for error in check_settings()] == [check_id]


def test_missing_pgtrigger_app_is_reported_by_a_system_check() -> None:
    apps_without_pgtrigger = [app for app in settings.INSTALLED_APPS if app != "pgtrigger"]
    with override_settings(INSTALLED_APPS=apps_without_pgtrigger):
        assert "pgpubsub.E001" in [error.id for error in check_settings()]


# One wrong value per setting: its type, then its range (None where every value of the type
# is allowed).
WRONG_VALUES = {
    "PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT": ("yes", None),
    "PGPUBSUB_PASS_CONTEXT_TO_LISTENERS": (1, None),
    "PGPUBSUB_LISTENER_FILTER": (42, None),
    "PGPUBSUB_POLL_INTERVAL": ("5", 0),
    "PGPUBSUB_BATCH_SIZE": (2.5, 0),
    "PGPUBSUB_MAX_ATTEMPTS": (True, 0),
    "PGPUBSUB_RETRY_BACKOFF": ("2", -1),
    "PGPUBSUB_RETRY_BACKOFF_MAX": (None, float("nan")),
    "PGPUBSUB_SHUTDOWN_TIMEOUT": ([30], 0.0),
    "PGPUBSUB_RECONNECT_TIMEOUT": ("600", 0),
    "PGPUBSUB_BROADCAST_RETENTION": (None, -3600),
    "PGPUBSUB_PROGRESS_INTERVAL": ("5", -0.5),
    "PGPUBSUB_MESSAGE_TIME_LIMIT": ("30", 0),
    "PGPUBSUB_KEEP_HANDLED": ("7 days", timedelta(0)),
}


def test_every_setting_has_a_wrong_value_in_this_test() -> None:
    assert sorted(WRONG_VALUES) == sorted(setting_names())


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        pytest.param(name, value, check_id, id=f"{name}={value!r}")
        for name, (wrong_type, out_of_range) in WRONG_VALUES.items()
        for value, check_id in ((wrong_type, "pgpubsub.E005"), (out_of_range, "pgpubsub.E004"))
        if value is not None or check_id == "pgpubsub.E005"
    ],
)
def test_a_wrong_value_of_any_setting_is_a_check_error_naming_it_and_the_allowed_values(
    name: str, value: object, check_id: str
) -> None:
    with override_settings(**{name: value}):
        errors = check_settings()
        with pytest.raises(SettingsError, match=name):
            get_settings()

    assert [error.id for error in errors] == [check_id]
    assert name in errors[0].msg
    assert rule_of(name).allowed() in errors[0].msg


def test_a_default_value_passes_its_own_rule() -> None:
    defaults = PgPubSubSettings()
    for item in fields(PgPubSubSettings):
        assert item.metadata["rule"].problem(getattr(defaults, item.name)) is None, item.name
        assert item.metadata["doc"], item.name


def test_a_number_read_from_the_environment_is_reported_by_check_not_a_type_error() -> None:
    with (
        override_settings(PGPUBSUB_POLL_INTERVAL="5"),
        pytest.raises(SystemCheckError) as raised,
    ):
        call_command("check")

    message = str(raised.value)
    assert "PGPUBSUB_POLL_INTERVAL must be a number greater than 0, but it is '5', a str" in message
    assert "PGPUBSUB_POLL_INTERVAL = float(os.environ['...'])" in message


def test_integers_are_accepted_as_seconds_and_read_as_floats() -> None:
    with override_settings(PGPUBSUB_POLL_INTERVAL=3):
        assert check_settings() == []
        assert get_settings().poll_interval == 3.0
        assert isinstance(get_settings().poll_interval, float)


@pytest.mark.parametrize(
    ("value", "kept"),
    [(timedelta(days=7), timedelta(days=7)), (3600, timedelta(hours=1)), (0.5, timedelta(0, 0.5))],
)
def test_a_duration_is_a_timedelta_or_a_number_of_seconds(value: object, kept: timedelta) -> None:
    with override_settings(PGPUBSUB_KEEP_HANDLED=value):
        assert check_settings() == []
        assert get_settings().keep_handled == kept


@pytest.mark.parametrize("value", [-1, timedelta(days=-1), 0])
def test_a_duration_that_is_not_positive_is_a_check_error(value: object) -> None:
    with override_settings(PGPUBSUB_KEEP_HANDLED=value):
        (error,) = check_settings()

    assert error.id == "pgpubsub.E004"
    assert error.msg == (
        "PGPUBSUB_KEEP_HANDLED must be a timedelta or a number of seconds greater than 0, "
        f"or None, but it is {value!r}."
    )


def test_a_duration_written_as_text_gets_a_hint_with_a_timedelta() -> None:
    with override_settings(PGPUBSUB_KEEP_HANDLED="7 days"):
        (error,) = check_settings()

    assert error.id == "pgpubsub.E005"
    assert error.hint == (
        "Write a duration, e.g. PGPUBSUB_KEEP_HANDLED = datetime.timedelta(days=7), "
        "or None to delete handled messages at once."
    )


def test_a_misspelled_setting_gets_a_warning_naming_the_closest_setting() -> None:
    with override_settings(PGPUBSUB_POLL_INTERVALL=2.0, PGPUBSUB_ZZZ=1):
        messages = check_settings()

    assert [(message.id, message.msg, message.hint) for message in messages] == [
        (
            "pgpubsub.W001",
            "PGPUBSUB_POLL_INTERVALL is not a pgpubsub setting: pgpubsub ignores it.",
            "Did you mean PGPUBSUB_POLL_INTERVAL?",
        ),
        (
            "pgpubsub.W001",
            "PGPUBSUB_ZZZ is not a pgpubsub setting: pgpubsub ignores it.",
            "See the settings reference (docs/reference/settings.md) for the names.",
        ),
    ]


def _settings_reference_rows() -> dict[str, list[str]]:
    text = (Path(__file__).parents[2] / "docs" / "reference" / "settings.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `PGPUBSUB_"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_settings_reference_lists_every_setting_with_its_type_range_and_default() -> None:
    rows = _settings_reference_rows()
    defaults = PgPubSubSettings()

    assert sorted(rows) == sorted(setting_names())
    for item in fields(PgPubSubSettings):
        name = f"PGPUBSUB_{item.name.upper()}"
        rule = item.metadata["rule"]
        type_, allowed, default = rows[name][:3]
        assert (type_, allowed, default) == (
            f"`{rule.type_name()}`",
            rule.allowed(),
            f"`{getattr(defaults, item.name)!r}`",
        ), name


def test_the_supervisor_takes_the_shutdown_timeout_from_the_settings() -> None:
    with override_settings(PGPUBSUB_SHUTDOWN_TIMEOUT=7):
        assert Supervisor(WorkerOptions()).shutdown_timeout == 7.0
    assert Supervisor(WorkerOptions(), settings=PgPubSubSettings()).shutdown_timeout == 30.0


def test_listen_with_skip_checks_reports_a_wrong_setting_as_a_command_error() -> None:
    with (
        override_settings(PGPUBSUB_POLL_INTERVAL="5"),
        pytest.raises(CommandError, match="PGPUBSUB_POLL_INTERVAL must be a number"),
    ):
        call_command("listen", skip_checks=True)
