"""PostgreSQL roles for tests: unique names (roles are cluster-wide), always dropped.

Also reads the SQL blocks of docs/guides/database-roles.md, so that tests grant exactly what
the docs say.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROLES_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "database-roles.md"
_SQL_BLOCK = re.compile(r"```sql\n-- pgpubsub: (?P<title>[^\n]+)\n(?P<sql>.*?)```", re.DOTALL)
#: The role names the guide uses, each replaced by a test's own.
GUIDE_ROLES = ("myapp_web", "myapp_worker", "myapp_operator")


def documented_sql(title: str, roles: dict[str, str]) -> str:
    """The SQL block of the roles guide headed ``-- pgpubsub: <title>``, for ``roles``.

    ``roles`` maps each of the guide's role names (``myapp_web``...) to a test's role.
    """
    blocks = {
        match["title"]: match["sql"] for match in _SQL_BLOCK.finditer(ROLES_GUIDE.read_text())
    }
    sql = blocks[title]
    for guide_name, name in roles.items():
        sql = re.sub(rf"\b{guide_name}\b", name, sql)
    return sql


@contextmanager
def temporary_roles(*kinds: str) -> Iterator[dict[str, str]]:
    """Create a LOGIN role (no superuser) per kind; yield ``{kind: name}``; drop them all.

    Each role's privileges in the test database go with it (``DROP OWNED BY``), and so do
    objects it created there.
    """
    prefix = f"pgpubsub_t{uuid.uuid4().hex[:10]}"
    names = {kind: f"{prefix}_{kind}" for kind in kinds}
    with connection.cursor() as cursor:
        for name in names.values():
            cursor.execute(f'CREATE ROLE "{name}" LOGIN')
    try:
        yield names
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
            for name in names.values():
                cursor.execute(f'DROP OWNED BY "{name}" CASCADE')
                cursor.execute(f'DROP ROLE "{name}"')


@contextmanager
def acting_as(role: str) -> Iterator[None]:
    """Run Django's connection as ``role`` (``SET ROLE``) inside the block."""
    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{role}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
