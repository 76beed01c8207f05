"""Run django-pgpubsub 1.3.1's own test suite against this pgpubsub.

A user of django-pgpubsub 1.3.1 switches by changing one requirement; this checks that the
promise holds for the project's own 40 tests. The script

1. downloads django-pgpubsub 1.3.1's published wheel once (test data, never shipped or
   committed; cached in ``.compat/wheels``, which git ignores);
2. unpacks the wheel's ``pgpubsub/tests/`` into ``.compat/suite/upstream131/tests``, an app
   outside our package: imports of ``pgpubsub.tests`` are rewritten to
   ``upstream131.tests``, and the app label stays ``tests`` (the tests query it). Nothing
   else in the tests is changed;
3. drops the app's 1.3.1 migrations (their trigger SQL is 1.3.1's) and regenerates them
   with this pgpubsub;
4. runs the 40 tests with pytest, with settings of their own (``INSTALLED_APPS``: pgtrigger,
   pgpubsub and the ``tests`` app) and a database of their own: DATABASE_URL's database name
   with ``_compat131`` appended (pytest-django prefixes it with ``test_``);
5. prints ``N passed, M failed`` on a line of its own and exits 0 only when every test
   passed but those in ``EXPECTED_FAILURES`` below, which must fail (strict xfail).

Usage: ``.venv/bin/python tests/compat/run_1_3_1_suite.py [PYTEST ARGUMENTS...]``. With
pytest arguments (``-k name``, ``-x``, ``-v``) the tests are run as asked and the exit code
is pytest's, for debugging one test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".compat"
WHEELS = WORK / "wheels"
SUITE = WORK / "suite"
PACKAGE = "upstream131"
REQUIREMENT = "django-pgpubsub==1.3.1"
TEST_COUNT = 40

# Tests that must fail, each because passing it would bring back a 1.3.1 defect or a design
# replaced on purpose. docs/guides/upgrading.md gives the same reasons.
EXPECTED_FAILURES: dict[str, str] = {
    "test_core.py::test_author_bulk_insert_notify": (
        "It counts one NOTIFY per inserted row. A bulk insert on a lockable channel is "
        "stored by one statement-level trigger that rings the doorbell once; the two rows "
        "are stored and both processed (the test fails on the NOTIFY count only)."
    ),
    "test_core.py::test_process_stored_notifications": (
        "It expects process_stored_notifications() to send one NOTIFY per lockable channel "
        "for running listeners to act on. It now runs the callbacks of the stored messages "
        "in the calling process and sends nothing: processing no longer depends on a "
        "listener receiving a NOTIFY."
    ),
}

SETTINGS = f'''"""Settings of django-pgpubsub 1.3.1's test suite, run against this pgpubsub."""

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres")

SECRET_KEY = "compat-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "pgtrigger",
    "pgpubsub",
    "{PACKAGE}.tests",
]
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": (unquote(_url.path.lstrip("/")) or "postgres") + "_compat131",
        "USER": unquote(_url.username or "postgres"),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "127.0.0.1",
        "PORT": str(_url.port or 5432),
    }}
}}
'''

PYTEST_INI = f"""[pytest]
DJANGO_SETTINGS_MODULE = {PACKAGE}.settings
pythonpath = .
testpaths = {PACKAGE}/tests
addopts = -p no:cacheprovider -p expected_failures -rfEX
xfail_strict = true
"""

PLUGIN = f'''"""Marks EXPECTED_FAILURES of tests/compat/run_1_3_1_suite.py strict xfail."""

import pytest

EXPECTED_FAILURES = {EXPECTED_FAILURES!r}


def pytest_collection_modifyitems(items):
    for item in items:
        key = item.nodeid.split("/")[-1].split("[")[0]
        if key in EXPECTED_FAILURES:
            item.add_marker(pytest.mark.xfail(reason=EXPECTED_FAILURES[key], strict=True))
'''


def fetch_wheel() -> Path:
    """The cached 1.3.1 wheel, downloaded with pip on first use."""
    cached = sorted(WHEELS.glob("django_pgpubsub-1.3.1-*.whl"))
    if not cached:
        WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", REQUIREMENT,
             "--dest", str(WHEELS)],
            check=True,
        )  # fmt: skip
        cached = sorted(WHEELS.glob("django_pgpubsub-1.3.1-*.whl"))
    if not cached:
        raise SystemExit(f"pip download {REQUIREMENT} left no wheel in {WHEELS}")
    return cached[0]


def unpack(wheel: Path) -> None:
    """Write the suite's app, settings and pytest configuration into SUITE, afresh."""
    shutil.rmtree(SUITE, ignore_errors=True)
    app = SUITE / PACKAGE / "tests"
    (app / "migrations").mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            relative = name.removeprefix("pgpubsub/tests/")
            if relative == name or relative.startswith("migrations/") or not name.endswith(".py"):
                continue
            text = archive.read(name).decode()
            (app / relative).write_text(text.replace("pgpubsub.tests", f"{PACKAGE}.tests"))
    (app / "migrations" / "__init__.py").write_text("")
    (SUITE / PACKAGE / "__init__.py").write_text("")
    (SUITE / PACKAGE / "settings.py").write_text(SETTINGS)
    (SUITE / "expected_failures.py").write_text(PLUGIN)
    (SUITE / "pytest.ini").write_text(PYTEST_INI)


def suite_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(SUITE),
        "DJANGO_SETTINGS_MODULE": f"{PACKAGE}.settings",
    }


def make_migrations() -> None:
    """Generate the app's migrations with this pgpubsub's triggers."""
    # makemigrations checks the migration history of a database that does not exist yet.
    quiet = "ignore:Got an error checking a consistent migration history:RuntimeWarning"
    subprocess.run(
        [sys.executable, "-W", quiet, "-m", "django", "makemigrations", "tests", "--no-input",
         "-v", "0"],
        cwd=SUITE,
        env=suite_env(),
        check=True,
    )  # fmt: skip


def run_pytest(extra: list[str]) -> tuple[int, Path]:
    report = SUITE / "report.xml"
    report.unlink(missing_ok=True)
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", "pytest.ini", "--rootdir", ".",
         f"--junitxml={report}", *extra],
        cwd=SUITE,
        env=suite_env(),
        check=False,
    )  # fmt: skip
    return completed.returncode, report


def count(report: Path) -> tuple[int, int, int]:
    """Passed, failed (failures, errors and strict xpasses) and xfailed tests of a report."""
    passed = failed = xfailed = 0
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        outcomes = {child.tag: child for child in case}
        if "failure" in outcomes or "error" in outcomes:
            failed += 1
        elif "skipped" in outcomes:
            if outcomes["skipped"].get("type") == "pytest.xfail":
                xfailed += 1
            else:
                failed += 1  # nothing in the suite may be skipped
        else:
            passed += 1
    return passed, failed, xfailed


def main(argv: list[str]) -> int:
    unpack(fetch_wheel())
    make_migrations()
    code, report = run_pytest(argv)
    if report.exists():
        passed, failed, xfailed = count(report)
    else:  # the suite could not even be collected (a conftest.py import failed)
        print(f"pytest ended with exit code {code} and no report", file=sys.stderr)
        passed, failed, xfailed = 0, TEST_COUNT, 0
    print(f"{passed} passed, {failed} failed")
    if xfailed:
        print(f"{xfailed} expected failure(s), as EXPECTED_FAILURES in {Path(__file__).name} says")
    if argv:
        return code
    expected = TEST_COUNT - len(EXPECTED_FAILURES)
    if (passed, failed, xfailed) != (expected, 0, len(EXPECTED_FAILURES)):
        print(
            f"django-pgpubsub 1.3.1's suite: expected {expected} passed, 0 failed and "
            f"{len(EXPECTED_FAILURES)} expected failures",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
