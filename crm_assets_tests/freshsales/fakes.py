"""An in-memory Freshsales fake behind httpx.MockTransport, with scripted failures and a request log."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson

API_KEY = "sk-test-5ecret-Key-0042"
BASE_URL = "https://acme.myfreshworks.com/crm/sales"
ACCOUNT_ZONE = timezone(timedelta(hours=-6))
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

Scripted = Callable[[httpx.Request], httpx.Response]


def make_records(count: int, *, first_id: int = 17_000_000_000, newest: datetime = T0) -> list[dict[str, Any]]:
    """Records newest first, one minute apart, with timestamps in a -06:00 account zone."""
    return [
        {
            "id": first_id + i,
            "name": f"record {i}",
            "updated_at": (newest - timedelta(minutes=i)).astimezone(ACCOUNT_ZONE).isoformat(),
        }
        for i in range(count)
    ]


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(body), headers={"content-type": "application/json", **(headers or {})}
    )


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Scripted:
    return lambda request: json_response(code, body if body is not None else {}, headers)


def raise_(exc_type: type[httpx.TransportError]) -> Scripted:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


@dataclass
class Seen:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    headers: httpx.Headers

    @property
    def page(self) -> int | None:
        return int(self.params["page"]) if "page" in self.params else None


@dataclass
class FakeView:
    view_id: int
    records: list[dict[str, Any]]


@dataclass
class FakeCrm:
    """Serves views, records, lookup and filtered_search like Freshsales; everything else is scripted."""

    api_key: str = API_KEY
    views: dict[str, dict[str, FakeView]] = field(default_factory=dict)
    short_pages: dict[int, int] = field(default_factory=dict)  # page number -> records it serves
    # page number -> records each answer leaves out, in turn (the last number repeats); unlike short_pages,
    # later pages do not move: the records left out are lost to a client that does not read the page again
    dropped: dict[int, list[int]] = field(default_factory=dict)
    # page number -> answers it gives (say a 200 whose body is not JSON) before its real one, in turn
    broken_answers: dict[int, list[httpx.Response]] = field(default_factory=dict)
    omit_total_pages: bool = False
    ignore_page: bool = False  # every page request gets page 1, like a proxy that drops the query string
    endless: bool = False  # pages past the view's end hold made-up records instead of none
    scripted: deque[Scripted] = field(default_factory=deque)  # answers for the next requests, in order
    barrier: int = 0  # view pages 2..barrier_last_page wait until this many requests are in flight
    barrier_last_page: int = 0
    requests: list[Seen] = field(default_factory=list)
    max_in_flight: int = 0
    _in_flight: int = 0
    _generation: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def add_view(self, entity: str, name: str, view_id: int, records: list[dict[str, Any]]) -> None:
        self.views.setdefault(entity, {})[name] = FakeView(view_id, records)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def view_requests(self) -> list[Seen]:
        return [r for r in self.requests if "/view/" in r.path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        seen = Seen(
            request.method,
            request.url.path.removeprefix("/crm/sales"),
            dict(request.url.params),
            orjson.loads(request.content) if request.content else None,
            request.headers,
        )
        with self._cond:
            self.requests.append(seen)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            if self.barrier and seen.page and 2 <= seen.page <= self.barrier_last_page:
                # Hold until `barrier` requests overlap: proves they run concurrently (times out otherwise).
                generation = self._generation
                if self._in_flight >= self.barrier:
                    self._generation += 1
                    self._cond.notify_all()
                else:
                    self._cond.wait_for(lambda: self._generation != generation, timeout=2.0)
            script = self.scripted.popleft() if self.scripted else None
        try:
            if request.headers.get("authorization") != f"Token token={self.api_key}":
                return json_response(401, {"errors": {"code": 401, "message": ["invalid key"]}})
            return script(request) if script else self._route(seen)
        finally:
            with self._cond:
                self._in_flight -= 1

    def _route(self, seen: Seen) -> httpx.Response:
        parts = seen.path.strip("/").split("/")  # api, entity, ...
        if parts[1:] == ["selector", "owners"]:
            return json_response(200, {"users": [{"id": 1, "display_name": "Jane"}]})
        if len(parts) == 3 and parts[2] == "filters":
            views = self.views.get(parts[1], {})
            return json_response(200, {"filters": [{"id": v.view_id, "name": n} for n, v in views.items()]})
        if len(parts) == 4 and parts[2] == "view":
            return self._view_page(parts[1], int(parts[3]), seen.params)
        if parts[1] == "lookup":
            plural = seen.params["entities"] + "s"
            hits = [r for r in self._all(plural) if str(r.get(seen.params["f"])) == seen.params["q"]]
            return json_response(200, {plural: {plural: hits}})
        if parts[1] == "filtered_search":
            return self._view_page(parts[2] + "s", None, seen.params)
        if len(parts) == 3 and seen.method in ("GET", "PUT"):
            return self._record(parts[1], int(parts[2]), seen)
        return json_response(404, {"errors": {"code": 404, "message": ["no route"]}})

    def _all(self, entity: str) -> list[dict[str, Any]]:
        return [r for v in self.views.get(entity, {}).values() for r in v.records]

    def _view_page(self, entity: str, view_id: int | None, params: dict[str, str]) -> httpx.Response:
        views = self.views.get(entity, {}).values()
        records = next((v.records for v in views if v.view_id == view_id), None)
        if records is None:
            records = self._all(entity) if view_id is None else []
        page, per_page = int(params.get("page", "1")), int(params.get("per_page", "25"))
        page = 1 if self.ignore_page else page
        if self.broken_answers.get(page):
            return self.broken_answers[page].pop(0)
        start = sum(self.short_pages.get(p, per_page) for p in range(1, page))
        chunk = records[start : start + self.short_pages.get(page, per_page)]
        drops = self.dropped.get(page)
        if drops:
            left_out = drops.pop(0) if len(drops) > 1 else drops[0]
            chunk = chunk[: max(len(chunk) - left_out, 0)]
        if self.endless and not chunk:
            chunk = make_records(per_page, first_id=9_000_000_000 + page * per_page)
        meta: dict[str, Any] = {"total": len(records)}
        if not self.omit_total_pages:
            meta["total_pages"] = math.ceil(len(records) / per_page)
        return json_response(200, {entity: chunk, "meta": meta})

    def _record(self, entity: str, crm_id: int, seen: Seen) -> httpx.Response:
        singular = entity.removesuffix("s")
        for record in self._all(entity):
            if record["id"] == crm_id:
                if seen.method == "PUT":
                    record.update(seen.body[singular])
                return json_response(200, {singular: record})
        return json_response(404, {"errors": {"code": 404, "message": ["Record not found"]}})
