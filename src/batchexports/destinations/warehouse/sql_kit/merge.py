"""The pieces of the merge statements PostgreSQL and Redshift share: how a run's staged rows replace
the table's rows of the same key, so that re-running an interval never duplicates a row.

Events are keyed by uuid: the rows of the table with a staged uuid are replaced. Persons and
sessions are keyed by the model's keys, and a staged row replaces the table's only when it is newer
by the model's version columns (a table row without a version is always replaced). Each dialect
assembles these into its own statements (`ON CONFLICT` on PostgreSQL, delete-then-insert on Redshift).
"""

from __future__ import annotations

from collections.abc import Sequence

from batchexports.destinations.warehouse.sql_kit.identifiers import ident
from batchexports.destinations.warehouse.sql_kit.plan import LoadPlan


def column_list(plan: LoadPlan) -> str:
    """The table's written columns, quoted."""
    return ", ".join(ident(c) for c in plan.columns)


def select_list(plan: LoadPlan) -> str:
    """The expressions over the stage (alias `s`) filling `column_list`, in its order."""
    return ", ".join(plan.expressions[c] for c in plan.columns)


def insert_select(plan: LoadPlan, stage: str) -> str:
    """Every row of `stage` into the table."""
    return f"INSERT INTO {plan.target} ({column_list(plan)}) SELECT {select_list(plan)} FROM {stage} AS s"


def event_key(plan: LoadPlan) -> str:
    """The one column that identifies an event (its uuid)."""
    (key,) = plan.rules.keys
    return key


def staged_keys(plan: LoadPlan, key: str, stage: str) -> str:
    """The values of `key` in `stage`, as the table's column holds them."""
    return f"SELECT {plan.expressions[key]} FROM {stage} AS s"


def newer(incoming: str, existing: str, versions: Sequence[str]) -> str:
    """A condition true when the row `incoming` is newer than the row `existing` by any version column
    (or `existing` has no version); empty without version columns."""
    return " OR ".join(
        f"COALESCE({incoming}.{ident(v)} > {existing}.{ident(v)}, {existing}.{ident(v)} IS NULL)" for v in versions
    )
