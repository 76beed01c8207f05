"""Settings: one typed accessor with documented defaults, and system checks for mistakes."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from pgpubsub.checks import check_settings
from pgpubsub.conf import PgPubSubSettings, get_settings
from pgpubsub.queue import retry_delay


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
