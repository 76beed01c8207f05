"""The admin of stored notifications in a real browser, with a real worker behind it.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.
``.ci/run`` installs them and sets PGPUBSUB_BROWSER_TESTS=required, so that there a missing
browser fails the test; elsewhere it is skipped. Screenshots are saved in ``artifacts/`` (not
committed); docs/images/ holds copies for docs/operations.md.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

import pgpubsub
from pgpubsub.models import Notification
from testapp.channels import PostReads, Task, Tick
from testapp.models import ListenerEvent
from tests.acceptance.conftest import StartListen

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium in a fresh profile, quit after the test."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = "needs chromium and chromium-driver: apt-get install chromium chromium-driver"
        if os.environ.get("PGPUBSUB_BROWSER_TESTS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    profile = tempfile.mkdtemp(prefix="pgpubsub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,820",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER)
    )
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def failed_task(key: str, error: str) -> Notification:
    pgpubsub.notify(Task, key=key)
    notification = Notification.objects.latest("id")
    notification.attempts = 3
    notification.failed_at = notification.last_attempt_at = timezone.now()
    notification.last_error = f"Traceback (most recent call last):\n  ...\n{error}"
    notification.save()
    return notification


def seed() -> tuple[Notification, Notification]:
    """Pending, retrying and failed notifications; returns two failed Task ones."""
    for post_id in (101, 102, 103):
        pgpubsub.notify(PostReads, post_id=post_id)  # no worker listens to PostReads
    pgpubsub.notify(Tick, number=1)
    pgpubsub.notify(Task, key="flaky")
    Notification.objects.filter(pk=Notification.objects.latest("id").pk).update(
        attempts=1,
        last_attempt_at=timezone.now(),
        available_at=timezone.now() + datetime.timedelta(hours=1),
        last_error="Traceback (most recent call last):\n  ...\n"
        "ConnectionError: payment gateway timed out",
    )
    to_retry = failed_task("retry me", "ValueError: invoice 17 has no lines")
    to_delete = failed_task("delete me", "KeyError: 'customer'")
    return to_retry, to_delete


def row_checkbox(driver: Any, notification: Notification) -> Any:
    return driver.find_element(
        By.CSS_SELECTOR, f"input[name='_selected_action'][value='{notification.pk}']"
    )


def run_action(driver: Any, notification: Notification, action: str) -> None:
    row_checkbox(driver, notification).click()
    Select(driver.find_element(By.NAME, "action")).select_by_value(action)
    driver.find_element(By.NAME, "index").click()


def messages(driver: Any) -> str:
    return " ".join(
        element.text for element in driver.find_elements(By.CSS_SELECTOR, ".messagelist li")
    )


@pytest.mark.django_db(transaction=True)
def test_admin_retries_a_failed_notification_that_a_worker_then_processes_and_deletes_another(
    browser: Any, live_server: Any, listen: StartListen, django_user_model: Any
) -> None:
    to_retry, to_delete = seed()
    django_user_model.objects.create_superuser("oncall", "oncall@example.com", "not-secret")
    worker = listen("--worker", "--channels", "testapp.channels.Task")
    worker.wait_for_workers(1)
    # A page may be replaced between finding an element and reading it: poll again then.
    wait = WebDriverWait(
        browser, 15, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    ARTIFACTS.mkdir(exist_ok=True)

    # Log in; the admin sends us on to the notifications.
    browser.get(f"{live_server.url}/admin/login/?next=/admin/pgpubsub/notification/")
    browser.find_element(By.NAME, "username").send_keys("oncall")
    browser.find_element(By.NAME, "password").send_keys("not-secret")
    browser.find_element(By.CSS_SELECTOR, "input[type='submit']").click()
    rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result_list tbody tr"))
    statuses = [row.find_element(By.CSS_SELECTOR, ".field-status_label").text for row in rows]
    assert sorted(statuses) == [
        "failed",
        "failed",
        "new",
        "new",
        "new",
        "new",
        "retrying",
    ]
    page = browser.find_element(By.ID, "result_list").text
    browser.find_element(By.ID, "toggle-nav-sidebar").click()  # more room for the screenshot
    assert "testapp.channels.PostReads" in page
    assert "ValueError: invoice 17 has no lines" in page
    browser.save_screenshot(str(ARTIFACTS / "admin-notifications.png"))

    # Retry now: the worker, woken by the action's NOTIFY, processes it and the row goes.
    run_action(browser, to_retry, "retry_now")
    wait.until(lambda d: "1 notification(s) will be processed now." in messages(d))

    def row_gone(driver: Any) -> bool:
        driver.refresh()
        return not driver.find_elements(
            By.CSS_SELECTOR, f"input[name='_selected_action'][value='{to_retry.pk}']"
        )

    wait.until(row_gone)
    assert ListenerEvent.objects.filter(listener="task", object_key="retry me").count() == 1

    # Delete: nothing is deleted before the confirmation.
    run_action(browser, to_delete, "delete_selected")
    wait.until(lambda d: "Are you sure you want to delete" in d.find_element(By.ID, "content").text)
    assert Notification.objects.filter(pk=to_delete.pk).exists()
    browser.find_element(By.CSS_SELECTOR, "#content form input[type='submit']").click()
    wait.until(lambda d: "Successfully deleted 1 notification" in messages(d))
    assert not Notification.objects.filter(pk=to_delete.pk).exists()

    # The detail page of the retrying one: formatted payload and traceback.
    retrying = Notification.objects.get(attempts=1)
    browser.get(f"{live_server.url}/admin/pgpubsub/notification/{retrying.pk}/change/")
    detail = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".field-formatted_payload"))
    browser.execute_script("arguments[0].scrollIntoView()", detail)
    assert '"key": "flaky"' in detail.text
    assert "ConnectionError: payment gateway timed out" in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "admin-notification-detail.png"))
