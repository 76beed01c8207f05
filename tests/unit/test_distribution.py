"""Every install command we print or document installs our distribution, not a namesake.

The registry's ``pgpubsub`` is an unrelated project: ``pip install pgpubsub`` would fetch it.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError

import pgpubsub

ROOT = Path(__file__).parents[2]
DISTRIBUTION = "django-pgpubsub-reliable"
_OURS = re.compile(rf"^{re.escape(DISTRIBUTION)}(\[[a-z0-9,-]+\])?( @ file://\S+)?$")
_PIP_INSTALL = re.compile(r"pip install ([^`\n]+)")


def _help_texts() -> dict[str, str]:
    texts = {}
    for name in ("listen", "pgpubsub"):
        parser = load_command_class("pgpubsub", name).create_parser("manage.py", name)
        # argparse wraps lines: a command may continue on the next one.
        texts[f"manage.py {name} --help"] = " ".join(parser.format_help().split())
        for action in parser._actions:
            for choice, subparser in (
                getattr(action, "choices", None)
                and isinstance(action.choices, dict)
                and action.choices.items()
            ) or ():
                texts[f"manage.py {name} {choice} --help"] = " ".join(
                    subparser.format_help().split()
                )
    return texts


def _metrics_error(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(CommandError) as raised:
        call_command("listen", "--worker", "--metrics-port", "9100")
    return str(raised.value)


def _texts(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    files = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "pgpubsub").rglob("*.py")) + sorted((ROOT / "testapp").rglob("*.py"))
    texts = {
        str(path.relative_to(ROOT)): path.read_text().replace("{DISTRIBUTION}", DISTRIBUTION)
        for path in files
    }
    texts.update(_help_texts())
    texts["listen --metrics-port error"] = _metrics_error(monkeypatch)
    return texts


_TOKEN = re.compile(r"\"[^\"]*\"|'[^']*'|[^\s\"'`()]+")


def _install_commands(text: str) -> list[list[str]]:
    """The requirements of each ``pip install`` in ``text`` (options left out)."""
    commands = []
    for start in re.finditer(r"pip install\b", text):
        requirements: list[str] = []
        position = start.end()
        for token in _TOKEN.finditer(text, position):
            # The command ends at a line break, a parenthesis or a backtick between two words.
            if text[position : token.start()].strip() or "\n" in text[position : token.start()]:
                break
            word, position = token.group(), token.end()
            if word.startswith("-"):
                continue
            requirements.append(word.strip("'\"").rstrip(".,;:"))
            if word[-1] in ".,;:":
                break
        commands.append(requirements)
    return commands


def test_every_install_command_names_our_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _texts(monkeypatch)
    wrong, ours = [], set()
    for source, text in texts.items():
        for requirements in _install_commands(text):
            for requirement in requirements:
                if "pgpubsub" not in requirement.lower():
                    continue  # another package (psycopg[pool], py-spy, ...)
                if _OURS.match(requirement):
                    ours.add(source)
                else:
                    wrong.append(f"{source}: pip install {requirement}")

    assert wrong == []
    # The places a new user meets an install command, so this test cannot pass by finding none.
    assert {
        "README.md",
        "docs/quickstart.md",
        "docs/guides/installation.md",
        "docs/operations.md",
        "pgpubsub/metrics.py",
        "manage.py listen --help",
        "listen --metrics-port error",
    } <= ours


def test_the_version_is_that_of_our_installed_distribution() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()

    assert f'name = "{DISTRIBUTION}"' in pyproject
    assert pgpubsub.DISTRIBUTION == DISTRIBUTION
    assert pgpubsub.__version__ == version(DISTRIBUTION)
