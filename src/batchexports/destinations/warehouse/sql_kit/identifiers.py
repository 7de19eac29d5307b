"""SQL text: quoted identifiers and string literals, as PostgreSQL and Redshift read them.

Knows nothing of a connection or a model: every statement the sinks send is built from these.
"""

from __future__ import annotations

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def literal(value: str) -> str:
    """A quoted SQL string literal (standard conforming: only quotes are doubled)."""
    return "'" + value.replace("'", "''") + "'"
