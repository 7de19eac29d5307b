"""`GET /_health`: 200 with the state of each dependency the API process relies on.

Always 200 while the process serves requests (a liveness answer); `status` says `degraded` and
each dependency says what is wrong when one is down. The events store reports its watermark: the
time before which every write has committed, which a scheduled run waits to pass its interval's end.
"""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse

from batchexports import __version__
from batchexports.events.stores import get_store
from batchexports.exports.engine_port import get_engine


def _database() -> dict[str, object]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "vendor": connection.vendor}
    except Exception as error:  # reported, not raised: health must answer
        return {"ok": False, "vendor": connection.vendor, "error": type(error).__name__}


def _engine() -> dict[str, object]:
    engine = get_engine()
    check = getattr(engine, "health", None)
    if check is None:
        return {"ok": True, "kind": type(engine).__name__}
    return {"kind": type(engine).__name__, **check()}


def _events_store() -> dict[str, object]:
    try:
        store = get_store()
        return {"ok": True, "kind": type(store).__name__, "watermark": store.watermark().isoformat()}
    except Exception as error:  # reported, not raised: health must answer
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


def health(request: HttpRequest) -> JsonResponse:
    dependencies = {"database": _database(), "engine": _engine(), "events_store": _events_store()}
    ok = all(dep.get("ok") for dep in dependencies.values())
    return JsonResponse({"status": "ok" if ok else "degraded", "version": __version__, "dependencies": dependencies})
