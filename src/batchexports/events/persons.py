"""Person resolution: which person each distinct id belongs to, and what that person's properties are.

Follows PostHog's rules: a new distinct id gets a new person; `$identify` (with
`$anon_distinct_id`) and `$create_alias` (with `alias`) tie two distinct ids to one person,
merging two persons when both exist and the absorbed one is not identified; `$set`,
`$set_once` and `$unset` change a person's properties. Every change appends a new version, so
an export of persons can pick the latest version of each row.

The resolver works on one batch at a time against a `PersonState` loaded for the distinct ids
the batch mentions; plain events cost one dict lookup each.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

PERSON_NAMESPACE = uuid.UUID("5c2b7d0e-3b8f-4c8e-9a51-0a6f0f1d9b7e")


def new_person_id(team_id: int, distinct_id: str) -> str:
    """Deterministic, so that replaying the same data yields the same person ids."""
    return str(uuid.uuid5(PERSON_NAMESPACE, f"{team_id}:{distinct_id}"))


@dataclass
class Person:
    person_id: str
    properties: dict[str, Any]
    version: int
    is_identified: bool
    created_at: datetime
    is_deleted: bool = False
    dirty: bool = False
    changed_at: datetime | None = None  # when the latest change happened (event time)
    _json: str | None = None

    def properties_json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.properties, separators=(",", ":"), default=str)
        return self._json

    def changed(self, at: datetime) -> None:
        self._json = None
        self.changed_at = at if self.changed_at is None else max(self.changed_at, at)
        if not self.dirty:
            self.version += 1
            self.dirty = True


@dataclass
class DistinctIdRow:
    person_id: str
    version: int
    dirty: bool = False
    changed_at: datetime | None = None


class PersonStateSource(Protocol):
    """What the resolver needs from the store."""

    def load_distinct_ids(self, team_id: int, distinct_ids: Sequence[str]) -> dict[str, DistinctIdRow]: ...

    def load_persons(self, team_id: int, person_ids: Sequence[str]) -> dict[str, Person]: ...

    def distinct_ids_of(self, team_id: int, person_id: str) -> list[str]: ...


@dataclass
class PersonChanges:
    """New versions to append, produced by one batch."""

    persons: list[Person] = field(default_factory=list)
    distinct_ids: list[tuple[str, DistinctIdRow]] = field(default_factory=list)


@dataclass(frozen=True)
class PersonUpdate:
    """What a special event asks of persons (parsed from its properties)."""

    event: str
    properties: Mapping[str, Any]


PERSON_EVENTS = frozenset({"$identify", "$create_alias", "$merge_dangerously", "$set", "$groupidentify"})


def needs_person_processing(event: str, properties: Mapping[str, Any]) -> bool:
    return event in PERSON_EVENTS or "$set" in properties or "$set_once" in properties or "$unset" in properties


class PersonResolver:
    def __init__(self, source: PersonStateSource, team_id: int, now: datetime):
        self.source = source
        self.team_id = team_id
        self.now = now
        self.mapping: dict[str, DistinctIdRow] = {}
        self.persons: dict[str, Person] = {}

    # Loading

    def preload(self, distinct_ids: Sequence[str]) -> None:
        missing = [d for d in set(distinct_ids) if d not in self.mapping]
        if not missing:
            return
        self.mapping.update(self.source.load_distinct_ids(self.team_id, missing))
        self._load_persons([row.person_id for row in self.mapping.values()])

    def _load_persons(self, person_ids: Sequence[str]) -> None:
        wanted = [p for p in set(person_ids) if p not in self.persons]
        if wanted:
            self.persons.update(self.source.load_persons(self.team_id, wanted))

    # Resolution

    def existing(self, distinct_id: str) -> Person | None:
        """The live person of a known distinct id, without creating anything."""
        row = self.mapping.get(distinct_id)
        if row is None:
            return None
        person = self.persons.get(row.person_id)
        return person if person is not None and not person.is_deleted else None

    def person_for(self, distinct_id: str, created_at: datetime) -> Person:
        person = self.existing(distinct_id)
        if person is not None:
            return person
        person_id = new_person_id(self.team_id, distinct_id)
        person = self.persons.get(person_id)
        if person is None or person.is_deleted:
            person = Person(person_id, {}, version=-1, is_identified=False, created_at=created_at)
            person.changed(created_at)
            self.persons[person_id] = person
        self._map(distinct_id, person.person_id, created_at)
        return person

    def _map(self, distinct_id: str, person_id: str, at: datetime) -> None:
        row = self.mapping.get(distinct_id)
        if row is not None and row.person_id == person_id:
            return
        if row is None:
            self.mapping[distinct_id] = DistinctIdRow(person_id, 0, dirty=True, changed_at=at)
        else:
            row.person_id = person_id
            row.version += 1 if not row.dirty else 0
            row.dirty = True
            row.changed_at = at

    def apply(self, distinct_id: str, timestamp: datetime, update: PersonUpdate) -> Person:
        """Process a person-changing event; return the person the event belongs to afterwards."""
        props = update.properties
        if update.event == "$identify":
            anon = props.get("$anon_distinct_id")
            if isinstance(anon, str | int) and str(anon) and str(anon) != distinct_id:
                self._merge(distinct_id, str(anon), timestamp, force=False)
            identified = self.person_for(distinct_id, timestamp)
            if not identified.is_identified:
                identified.is_identified = True
                identified.changed(timestamp)
        elif update.event in ("$create_alias", "$merge_dangerously"):
            other = props.get("alias")
            if isinstance(other, str | int) and str(other) and str(other) != distinct_id:
                self._merge(distinct_id, str(other), timestamp, force=update.event == "$merge_dangerously")
        person = self.person_for(distinct_id, timestamp)
        self._set_properties(person, props, timestamp)
        return person

    def _merge(self, keep_id: str, other_id: str, timestamp: datetime, force: bool) -> None:
        self.preload([keep_id, other_id])
        kept_row, other_row = self.mapping.get(keep_id), self.mapping.get(other_id)
        if kept_row is None and other_row is None:
            person = self.person_for(keep_id, timestamp)
            self._map(other_id, person.person_id, timestamp)
            return
        if kept_row is None:
            other = self.person_for(other_id, timestamp)
            if other.is_identified and not force:
                self.person_for(keep_id, timestamp)  # an identified person is never claimed implicitly
            else:
                self._map(keep_id, other.person_id, timestamp)
            return
        if other_row is None:
            self._map(other_id, kept_row.person_id, timestamp)
            return
        if kept_row.person_id == other_row.person_id:
            return
        kept = self.person_for(keep_id, timestamp)
        absorbed = self.person_for(other_id, timestamp)
        if absorbed.is_identified and not force:
            return  # PostHog never merges an already identified person implicitly
        for moved in {*self.source.distinct_ids_of(self.team_id, absorbed.person_id), other_id}:
            self.preload([moved])
            row = self.mapping.get(moved)
            if row is not None and row.person_id == absorbed.person_id:
                self._map(moved, kept.person_id, timestamp)
        kept.properties = {**absorbed.properties, **kept.properties}
        kept.created_at = min(kept.created_at, absorbed.created_at)
        kept.changed(timestamp)
        absorbed.is_deleted = True
        absorbed.changed(timestamp)

    def _set_properties(self, person: Person, props: Mapping[str, Any], at: datetime) -> None:
        before = person.properties
        after = dict(before)
        set_once = props.get("$set_once")
        if isinstance(set_once, Mapping):
            for key, value in set_once.items():
                after.setdefault(key, value)
        to_set = props.get("$set")
        if isinstance(to_set, Mapping):
            after.update(to_set)
        unset = props.get("$unset")
        if isinstance(unset, list):
            for key in unset:
                after.pop(str(key), None)
        if after != before:
            person.properties = after
            person.changed(at)

    def changes(self) -> PersonChanges:
        """The new versions produced so far; marks them written."""
        result = PersonChanges()
        for person in self.persons.values():
            if person.dirty:
                result.persons.append(person)
                person.dirty = False
        for distinct_id, row in self.mapping.items():
            if row.dirty:
                result.distinct_ids.append((distinct_id, row))
                row.dirty = False
        return result
