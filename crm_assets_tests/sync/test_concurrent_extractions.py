"""Two extractions of one domain at once (a second `crm-assets run`, a manual run beside the schedule): the
second waits for the first instead of resuming its scan and spending the request budget a second time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets import pipeline
from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.domains import DEALS
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import ExtractResult, extract_domain
from crm_assets.warehouse.scan import ExtractionBusyError
from crm_assets.warehouse.schema import RAW_TABLES

PER_PAGE = 10


class Notes(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(DemoConfig(accounts=5, contacts=5, deals=60, seed=3, dirty=False))


@pytest.fixture
def crm_url(demo: DemoCrm) -> Iterator[str]:
    with serve_demo_crm(demo) as url:
        yield url


def _extract(crm_url: str, engine: Engine, log: logging.Logger, results: list[ExtractResult], full: bool) -> None:
    client = FreshsalesClient(
        crm_url, DEMO_API_KEY, rate_limit_per_minute=0, rate_limit_per_hour=0, per_page=PER_PAGE, max_concurrency=1
    )
    with client:
        results.append(extract_domain(engine, DEALS, client, "run", full_refresh=full, log=log))


def _logger(name: str) -> tuple[logging.Logger, Notes]:
    log = logging.getLogger(f"crm_assets_tests.concurrent.{name}")
    notes = Notes()
    log.addHandler(notes)
    log.setLevel(logging.INFO)
    return log, notes


def _page_requests(demo: DemoCrm) -> int:
    return sum(1 for r in demo.request_log if "/view/" in r.path)


def _hold_the_first_page(demo: DemoCrm, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """(answered, release): the demo CRM holds its first page's answer until `release` is set, so the
    extraction that asked for it holds its extract lock."""
    answered, release = threading.Event(), threading.Event()
    original = demo.handle

    def hold(request: httpx.Request, *, over_http: bool = False) -> httpx.Response:
        response = original(request, over_http=over_http)
        if "/view/" in request.url.path and not answered.is_set():
            answered.set()
            assert release.wait(30), "the test never released the first extraction"
        return response

    monkeypatch.setattr(demo, "handle", hold)
    return answered, release


def test_a_second_extraction_of_a_domain_waits_for_the_first(
    demo: DemoCrm, crm_url: str, warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_page_answered, release = _hold_the_first_page(demo, monkeypatch)
    first_log, _ = _logger("first")
    second_log, second_notes = _logger("second")
    first_results: list[ExtractResult] = []
    second_results: list[ExtractResult] = []
    first = threading.Thread(target=_extract, args=(crm_url, warehouse_engine, first_log, first_results, True))
    first.start()
    assert first_page_answered.wait(30)
    second = threading.Thread(target=_extract, args=(crm_url, warehouse_engine, second_log, second_results, False))
    second.start()
    deadline = time.monotonic() + 30
    while not any("another sync is extracting it now" in line for line in second_notes.lines):
        assert time.monotonic() < deadline, second_notes.lines
        time.sleep(0.05)
    time.sleep(0.3)  # were it not waiting, the second would have asked for pages by now
    assert _page_requests(demo) == 1, "only the first extraction's first page"

    release.set()
    first.join(60)
    second.join(60)

    assert not first.is_alive() and not second.is_alive()
    (done_first,), (done_second,) = first_results, second_results
    assert done_first.plan.full and not done_first.resumed
    assert not done_second.resumed, "the second did not pick up the first one's scan"
    assert not done_second.plan.full, "it read only what changed since the first"
    assert done_first.stats.fetched == 60 and done_second.stats.fetched < 60
    with warehouse_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(RAW_TABLES["deals"])).scalar_one() == 60


def test_a_second_extraction_gives_up_after_its_wait_naming_the_other_scan(
    demo: DemoCrm, crm_url: str, warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync of hours must not hold a crm_api pool slot (wanted by write-backs) for its whole length."""
    first_page_answered, release = _hold_the_first_page(demo, monkeypatch)
    monkeypatch.setattr(pipeline, "EXTRACT_LOCK_WAIT_SECONDS", 0.6)
    first_log, _ = _logger("holder")
    first_results: list[ExtractResult] = []
    first = threading.Thread(target=_extract, args=(crm_url, warehouse_engine, first_log, first_results, True))
    first.start()
    try:
        assert first_page_answered.wait(30)
        second_log, _ = _logger("gives-up")
        busy = r"raw_deals: another sync has been extracting deals for longer than this run waits \(0.01 min\)"
        with pytest.raises(ExtractionBusyError, match=busy + ", its scan started .* ago .*Nothing was read"):
            _extract(crm_url, warehouse_engine, second_log, [], False)
        assert _page_requests(demo) == 1
    finally:
        release.set()
        first.join(60)
    (done,) = first_results
    assert done.stats.fetched == 60
