"""docs/reference/commands.md agrees with the commands' parsers (what ``--help`` prints).

Same options, same placeholders in the usage lines, same defaults, and each ``listen``
option's help says what the first sentence of its row in the reference says.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from django.core.management import load_command_class
from django.core.management.base import BaseCommand

REFERENCE = Path(__file__).parents[2] / "docs" / "reference" / "commands.md"
#: Options every Django command has; the reference mentions them in one sentence.
_DJANGO_OPTIONS = {
    "--help",
    "--version",
    "--verbosity",
    "--settings",
    "--pythonpath",
    "--traceback",
    "--no-color",
    "--force-color",
    "--skip-checks",
}


def _parser(name: str) -> argparse.ArgumentParser:
    command: BaseCommand = load_command_class("pgpubsub", name)
    return command.create_parser("manage.py", name)


def _own_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if action.option_strings and not _DJANGO_OPTIONS & {*action.option_strings}
    ]


def _usage_item(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """How argparse writes the option in a usage line, e.g. ``--processes N``."""
    option = max(action.option_strings, key=len)
    if action.nargs == 0:
        return option
    formatter = parser._get_formatter()
    metavar = formatter._get_default_metavar_for_optional(action)
    return f"{option} {formatter._format_args(action, metavar)}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _section(title: str) -> str:
    text = REFERENCE.read_text()
    start = text.index(f"\n## `{title}`\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _usage_block(section: str) -> str:
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    return " ".join(block.split())


def _usage_items(usage: str) -> list[str]:
    return re.findall(r"\[(--[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\]", usage)


def _plain(markdown: str) -> str:
    """Markdown cell text as ``--help`` would say it: no backticks, links as their text."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", markdown)
    return " ".join(text.replace("`", "").split())


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s+", text, maxsplit=1)[0]


def _listen_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in _section("listen").splitlines():
        if line.startswith("| `--"):
            option, default, meaning = (cell.strip() for cell in line.strip("| ").split(" | ", 2))
            rows[option.strip("`")] = (default, meaning.rstrip(" |"))
    return rows


def test_the_listen_usage_lines_name_every_option_with_the_parsers_placeholders() -> None:
    parser = _parser("listen")

    assert _usage_items(_usage_block(_section("listen"))) == [
        _usage_item(parser, action) for action in _own_options(parser)
    ]


@pytest.mark.parametrize("subcommand", ["status", "failed", "retry", "replay"])
def test_the_pgpubsub_usage_lines_name_every_option_with_the_parsers_placeholders(
    subcommand: str,
) -> None:
    parser = _parser("pgpubsub")
    (line,) = [
        line
        for line in _usage_block(_section("pgpubsub")).split("python manage.py pgpubsub ")
        if f"] {subcommand} " in line or line.endswith(f"] {subcommand}")
    ]
    before, after = line.split(f" {subcommand}", 1)

    assert _usage_items(before) == [_usage_item(parser, a) for a in _own_options(parser)]
    sub = _subparsers(parser)[subcommand]
    optional = [a for a in _own_options(sub) if not a.required]
    assert _usage_items(after) == [_usage_item(sub, a) for a in optional]
    # Required options are written without brackets, before the others.
    required = [_usage_item(sub, a) for a in _own_options(sub) if a.required]
    assert after.split(" [", 1)[0].split() == " ".join(required).split()


def test_the_listen_table_has_a_row_per_option_with_its_default() -> None:
    rows = _listen_rows()
    options = _own_options(_parser("listen"))

    assert sorted(rows) == sorted(max(action.option_strings, key=len) for action in options)
    for action in options:
        if isinstance(action.default, (str, int)) and not isinstance(action.default, bool):
            default, _meaning = rows[max(action.option_strings, key=len)]
            assert f"`{action.default}`" in default, action.option_strings


def test_each_listen_options_help_says_what_its_reference_row_begins_with() -> None:
    rows = _listen_rows()
    disagree = {}
    for action in _own_options(_parser("listen")):
        option = max(action.option_strings, key=len)
        help_text = " ".join((action.help or "").replace("%%", "%").split())
        documented = _first_sentence(_plain(rows[option][1]))
        if _first_sentence(help_text) != documented:
            disagree[option] = (_first_sentence(help_text), documented)

    assert disagree == {}
