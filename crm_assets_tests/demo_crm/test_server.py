"""The demo CRM over real HTTP on loopback: same answers as in process, concurrency, faults, CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from crm_assets.demo_crm import DEMO_API_KEY, DemoCrm, Faults
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets_tests.demo_crm.conftest import AUTH, client_for, read_view, small_config

VIEWS = [("deals", 17_000_000_301), ("deals", 17_000_000_302), ("deals", 17_000_000_303)]
VIEWS += [("contacts", 17_000_000_201), ("sales_accounts", 17_000_000_101), ("deals", 17_000_000_306)]


def test_http_answers_match_the_in_process_transport() -> None:
    demo = DemoCrm(small_config())
    with serve_demo_crm(demo) as url, httpx.Client(base_url=url, headers=AUTH) as http:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/crm/sales", url)
        with client_for(demo) as local:
            for path in ("/api/deals/filters", "/api/deals/view/17000000302?page=2&per_page=9", "/api/deals/9"):
                remote, inside = http.get(path), local.get(path)
                assert (remote.status_code, remote.content) == (inside.status_code, inside.content)
        assert http.get("/api/deals/filters", headers={"Authorization": "Token token=nope"}).status_code == 401
        put = http.put("/api/deals/17200000004", json={"deal": {"custom_field": {"cf_deal_stage": "Closed-Lost"}}})
        assert put.status_code == 200 and put.json()["deal"]["custom_field"]["cf_deal_stage"] == "Closed-Lost"
        assert http.delete("/api/deals/17200000004").status_code == 204
        assert http.get("/api/deals/17200000004").json()["deal"]["is_deleted"] is True


def test_eight_concurrent_clients_read_every_view() -> None:
    demo = DemoCrm(small_config(deals=1500, contacts=600))
    with client_for(demo) as local:
        expected = [[r["id"] for r in read_view(local, entity, view)] for entity, view in VIEWS]

    def crawl(job: tuple[str, int]) -> list[int]:
        with httpx.Client(base_url=url, headers=AUTH) as http:
            return [r["id"] for r in read_view(http, *job, per_page=50)]

    with serve_demo_crm(demo) as url, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(crawl, VIEWS + VIEWS[:2]))
    assert results == expected + expected[:2]


def test_faults_over_http() -> None:
    demo = DemoCrm(small_config())
    with serve_demo_crm(demo) as url, httpx.Client(base_url=url, headers=AUTH, timeout=5) as http:
        root = url.removesuffix("/crm/sales")
        assert httpx.post(f"{root}/_demo/faults", json={"rate_limit_every": 1}).status_code == 200
        limited = http.get("/api/deals/filters")
        assert limited.status_code == 429 and limited.headers["x-ratelimit-remaining"] == "0"
        assert "retry-after" not in limited.headers
        httpx.post(f"{root}/_demo/faults", json={"drop_every": 1})
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/api/deals/filters")
        httpx.post(f"{url}/_demo/faults", json={"slow_seconds": 0.3})  # admin also under /crm/sales
        with pytest.raises(httpx.ReadTimeout):
            http.get("/api/deals/filters", timeout=0.05)
        demo.faults = Faults()
        assert http.get("/api/deals/filters").status_code == 200  # still serving after all that
        stats = httpx.get(f"{root}/_demo/stats").json()["requests"]
        # The slow request may still be sleeping in its thread: count only the settled ones.
        assert stats["by_status"]["429"] == 1 and stats["by_status"]["0"] == 1


def test_cli_serves_until_interrupted(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "crm_assets.cli", "demo-crm", "--port", "0", "--deals", "30"]
    command += ["--accounts", "5", "--contacts", "10", "--seed", "3"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        banner = "".join(process.stdout.readline() for _ in range(3))
        match = re.search(r"CRM_BASE_URL=(\S+)", banner)
        assert match, banner
        assert f"CRM_API_KEY={DEMO_API_KEY}" in banner and "30 deals" in banner
        response = httpx.get(f"{match.group(1)}/api/deals/view/17000000301", headers=AUTH, params={"per_page": 100})
        assert 0 < response.json()["meta"]["total"] < 30
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_cli_reports_a_busy_port() -> None:
    demo = DemoCrm(small_config(deals=1, contacts=1, accounts=1))
    with serve_demo_crm(demo) as url:
        port = url.split(":")[2].split("/")[0]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run(
            [sys.executable, "-m", "crm_assets.cli", "demo-crm", "--port", port, "--deals", "1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert done.returncode == 1 and "cannot listen" in done.stderr
