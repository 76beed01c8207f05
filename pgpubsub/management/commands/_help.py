"""Help output of pgpubsub's commands that can be copied: words are never split at hyphens."""

from __future__ import annotations

import re
import textwrap

from django.core.management.base import DjangoHelpFormatter


class HelpFormatter(DjangoHelpFormatter):
    """Django's help layout, wrapping lines only between words.

    argparse breaks long words at hyphens, which turns an install command or an option named
    in the text (``django-pgpubsub-reliable``, ``--exclude-channels``) into two words.
    """

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(re.sub(r"\s+", " ", text).strip(), width, break_on_hyphens=False)
