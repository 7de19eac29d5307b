"""The load plan of one run: which model columns are staged, which table columns are written, and
the expression over the stage (alias `s`) that fills each, in the dialect's SQL.

Columns the table lacks are not written; columns the model lacks are derived where the dialect
knows how (`ip`, `elements`) and else left to their default. A table without the model's key
columns is refused before anything is loaded. Reads no catalogue itself: `plan_load` is given the
table's columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from batchexports.core.errors import NonRetryableError
from batchexports.core.model_rules import MODEL_RULES, ModelRules
from batchexports.core.run import ExportRun
from batchexports.destinations.warehouse.sql_kit.dialect import SqlDialect, StageColumn, TargetColumn
from batchexports.destinations.warehouse.sql_kit.identifiers import ident, qualified
from batchexports.destinations.warehouse.sql_kit.stages import stage_table_name


@dataclass(frozen=True)
class LoadPlan:
    model: str
    rules: ModelRules
    schema: str
    table: str
    target: str  # qualified name of the destination table
    stage_name: str
    stage: str  # qualified name of the stage table
    stage_columns: tuple[StageColumn, ...]
    columns: tuple[str, ...]  # destination columns written, in the table's order
    expressions: dict[str, str]  # destination column -> expression over the stage (alias `s`)
    versions: tuple[str, ...]  # version columns both the stage and the table have
    targets: tuple[TargetColumn, ...]

    @property
    def stage_by_name(self) -> dict[str, StageColumn]:
        return {c.name: c for c in self.stage_columns}

    @property
    def target_by_name(self) -> dict[str, TargetColumn]:
        return {c.name: c for c in self.targets}

    @property
    def stage_names(self) -> list[str]:
        return [c.name for c in self.stage_columns]


def plan_load(
    dialect: SqlDialect,
    run: ExportRun,
    schema_name: str,
    table: str,
    model_schema: pa.Schema,
    targets: list[TargetColumn],
) -> LoadPlan:
    """Which columns to stage and write, and how, for a table with columns `targets`."""
    rules = MODEL_RULES[run.model]
    fields = {field.name: field for field in model_schema}
    available = set(fields)
    target_names = [t.name for t in targets]
    missing = [key for key in rules.keys if key not in target_names]
    if missing:
        raise NonRetryableError(
            f"The table '{schema_name}.{table}' has no column {', '.join(repr(m) for m in missing)}, which identifies "
            f"{run.model} rows so that a re-run replaces them: add the column, or export into a new table."
        )
    needed: set[str] = set(rules.keys)
    sources: dict[str, tuple[str, tuple[str, ...]]] = {}
    for target in targets:
        if target.name in fields:
            sources[target.name] = (f"s.{ident(target.name)}", (target.name,))
        elif (derived := dialect.derived(target.name, available)) is not None:
            sources[target.name] = derived
    for _, used in sources.values():
        needed.update(used)
    versions = tuple(v for v in rules.versions if v in fields and v in target_names)
    needed.update(versions)
    stage_columns = tuple(dialect.stage_column(fields[name]) for name in model_schema.names if name in needed)
    by_stage = {c.name: c for c in stage_columns}
    by_target = {t.name: t for t in targets}
    expressions: dict[str, str] = {}
    columns: list[str] = []
    for target in targets:
        if target.name not in sources:
            continue
        expression, used = sources[target.name]
        if used == (target.name,) and target.name in by_stage:
            expression = dialect.convert(expression, by_stage[target.name], target)
        columns.append(target.name)
        expressions[target.name] = expression
    for key in rules.keys:
        expressions.setdefault(key, dialect.convert(f"s.{ident(key)}", by_stage[key], by_target[key]))
    stage_name = stage_table_name(run, table)
    return LoadPlan(
        model=run.model,
        rules=rules,
        schema=schema_name,
        table=table,
        target=qualified(schema_name, table),
        stage_name=stage_name,
        stage=qualified(schema_name, stage_name),
        stage_columns=stage_columns,
        columns=tuple(columns),
        expressions=expressions,
        versions=versions,
        targets=tuple(targets),
    )
