"""Deterministic demo traffic: a small online shop's visitors over the last days.

Same seed, same events (content, order and uuids; times are relative to the current hour):
visitors arrive on landing pages with UTM parameters, browse with pageviews and autocaptured
clicks, some add to cart and buy, some sign up and are identified with `$set` properties.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from batchexports.events.duckdb_store import EVENTS_SCHEMA

HOST = "https://shop.example"
PAGES = ["/", "/products", "/products/boots", "/products/jacket", "/products/scarf", "/cart", "/pricing", "/blog"]
CAMPAIGNS = [
    ("google", "cpc", "winter_sale", "boots"),
    ("newsletter", "email", "weekly_digest", None),
    ("twitter", "social", "launch", None),
    (None, None, None, None),
]
REFERRERS = ["www.google.com", "news.ycombinator.com", "t.co", "$direct"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge"]
BUTTONS = [("button", "btn primary", "Add to cart"), ("a", "nav-link", "Pricing"), ("button", "btn", "Checkout")]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class DemoTraffic:
    def __init__(self, events: int, days: int, seed: int, now: dt.datetime | None = None):
        self.total = events
        self.days = days
        self.rng = random.Random(seed)
        self.end = (now or dt.datetime.now(dt.UTC)).replace(minute=0, second=0, microsecond=0)
        self.start = self.end - dt.timedelta(days=days)
        self.visitors = max(1, events // 40)

    def _session(self, visitor: int, identified: bool) -> list[tuple]:
        rng = self.rng
        anon = f"anon-{visitor:07d}"
        email = f"visitor{visitor}@example.com"
        distinct = email if identified and rng.random() < 0.5 else anon
        session_id = _uuid(rng)
        at = self.start + dt.timedelta(seconds=rng.uniform(0, self.days * 86400 - 3600))
        source, medium, campaign, term = rng.choice(CAMPAIGNS)
        base: dict[str, Any] = {"$session_id": session_id, "$browser": rng.choice(BROWSERS), "$lib": "web"}
        events: list[tuple] = []
        path = rng.choice(PAGES[:5])
        landing = {**base, "$referring_domain": rng.choice(REFERRERS)}
        for key, value in (("utm_source", source), ("utm_medium", medium), ("utm_campaign", campaign),
                           ("utm_term", term)):  # fmt: skip
            if value:
                landing[key] = value
        for step in range(rng.randint(1, 8)):
            props = {**(landing if step == 0 else base), "$current_url": HOST + path, "$pathname": path}
            events.append(("$pageview", distinct, at, props, None))
            at += dt.timedelta(seconds=rng.randint(5, 120))
            if rng.random() < 0.5:
                tag, classes, text = rng.choice(BUTTONS)
                chain = f'{tag}.{".".join(sorted(classes.split()))}:text="{text}"nth-child="1"nth-of-type="1"'
                events.append(("$autocapture", distinct, at, {**base, "$event_type": "click"}, chain))
                at += dt.timedelta(seconds=rng.randint(1, 30))
                if text == "Add to cart":
                    events.append(("added_to_cart", distinct, at, {**base, "product": path.rsplit("/", 1)[-1]}, None))
            path = rng.choice(PAGES)
        if identified and distinct == anon and rng.random() < 0.3:
            props = {**base, "$anon_distinct_id": anon,
                     "$set": {"email": email, "plan": rng.choice(["free", "pro"])},
                     "$set_once": {"first_campaign": campaign or "none"}}  # fmt: skip
            events.append(("$identify", email, at, props, None))
        if rng.random() < 0.1:
            events.append(("purchased", distinct, at, {**base, "revenue": rng.randint(10, 300)}, None))
        return events

    def batches(self, batch_rows: int = 50_000) -> Iterator[pa.Table]:
        produced = 0
        buffer: list[tuple] = []
        while produced < self.total:
            visitor = self.rng.randrange(self.visitors)
            session = self._session(visitor, identified=visitor % 3 == 0)
            session = session[: self.total - produced]
            buffer.extend(session)
            produced += len(session)
            if len(buffer) >= batch_rows or produced >= self.total:
                yield self._table(buffer)
                buffer = []

    def _table(self, rows: list[tuple]) -> pa.Table:
        return pa.table(
            {
                "uuid": [_uuid(self.rng) for _ in rows],
                "event": [r[0] for r in rows],
                "properties": [json.dumps(r[3], separators=(",", ":")) for r in rows],
                "timestamp": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
                "distinct_id": [r[1] for r in rows],
                "elements_chain": [r[4] for r in rows],
            },
            schema=EVENTS_SCHEMA,
        )
