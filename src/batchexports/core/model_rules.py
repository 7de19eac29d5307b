"""The facts about each exported model that every destination shares, written once.

Warehouse sinks merge persons and sessions by `keys`, replacing a row only when one of the
`versions` columns is newer; events are keyed by uuid and never updated. The sessions'
versions are PostHog's `end_timestamp` plus `_inserted_at`, which also moves when a late
event re-opens a session whose end did not change.
"""

from __future__ import annotations

from dataclasses import dataclass

# String columns that hold JSON documents: file formats nest them, warehouses type them as JSON.
JSON_COLUMNS = frozenset({"properties", "person_properties", "set", "set_once"})


@dataclass(frozen=True)
class ModelRules:
    """How rows of a model are identified and which columns tell a newer version of a row."""

    keys: tuple[str, ...]
    versions: tuple[str, ...]
    upsert: bool  # update rows in place (persons, sessions) rather than insert only new ones (events)


MODEL_RULES: dict[str, ModelRules] = {
    "events": ModelRules(("uuid",), (), upsert=False),
    "persons": ModelRules(("team_id", "distinct_id"), ("person_version", "person_distinct_id_version"), upsert=True),
    "sessions": ModelRules(("team_id", "session_id"), ("_inserted_at", "end_timestamp"), upsert=True),
}

MERGE_KEYS: dict[str, tuple[str, ...]] = {model: rules.keys for model, rules in MODEL_RULES.items()}
VERSION_COLUMNS: dict[str, tuple[str, ...]] = {model: rules.versions for model, rules in MODEL_RULES.items()}
