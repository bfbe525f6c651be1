"""Benchmark: stream every deal of a big demo CRM over loopback HTTP and print the figures.

    .venv/bin/python -m crm_assets_tests.benchmarks.bench_demo_serve [--deals 1000000] [--streams 3]

Starts `crm-assets demo-crm` in another process (as the sync benchmark does), reads the Open, Won
and Lost views page by page (100 per page, updated_at desc) with one client per view, then after
touching 1% of the deals reads the newest pages again. Not a test: it asserts only completeness.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from crm_assets.demo_crm import DEMO_API_KEY

AUTH = {"Authorization": f"Token token={DEMO_API_KEY}"}
DEAL_VIEWS = ("Open Deals", "Won Deals", "Lost Deals")


def _start(deals: int, accounts: int, contacts: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "crm_assets.cli", "demo-crm", "--port", "0", "--deals", str(deals)]
    command += ["--accounts", str(accounts), "--contacts", str(contacts)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="")
        found = re.search(r"CRM_BASE_URL=(\S+)", line)
        if found:
            return process, found.group(1)
    raise RuntimeError("the demo CRM exited before printing its URL")


def _crawl(url: str, view_id: int) -> tuple[int, int]:
    """(records, pages) of one view, paging until an empty page."""
    records = pages = 0
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        while True:
            params: dict[str, str | int] = {"page": pages + 1, "per_page": 100, "sort": "updated_at"}
            params["sort_type"] = "desc"
            response = client.get(f"/api/deals/view/{view_id}", params=params)
            response.raise_for_status()
            batch = response.json()["deals"]
            if not batch:
                return records, pages
            records, pages = records + len(batch), pages + 1


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return float("nan")
    kilobytes = re.search(r"VmRSS:\s+(\d+)", status.read_text())
    return int(kilobytes.group(1)) / 1024 if kilobytes else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=500_000)
    args = parser.parse_args()
    started = time.perf_counter()
    process, url = _start(args.deals, args.accounts, args.contacts)
    print(f"server ready after {time.perf_counter() - started:.1f} s (process start included)")
    try:
        filters = httpx.get(f"{url}/api/deals/filters", headers=AUTH).json()["filters"]
        views = [next(f["id"] for f in filters if f["name"] == name) for name in DEAL_VIEWS]
        started = time.perf_counter()
        with ThreadPoolExecutor(len(views)) as pool:
            results = list(pool.map(lambda view: _crawl(url, view), views))
        elapsed = time.perf_counter() - started
        records, pages = sum(r for r, _ in results), sum(p for _, p in results)
        print(
            f"read {records} deal records in {pages} pages over {len(views)} concurrent clients: "
            f"{elapsed:.1f} s ({records / elapsed:,.0f} records/s); server RSS {_rss_mb(process.pid):.0f} MB"
        )
        started = time.perf_counter()
        touched = httpx.post(f"{url}/_demo/touch", json={"entity": "deals", "fraction": 0.01}).json()["count"]
        first = httpx.get(f"{url}/api/deals/view/{views[0]}", headers=AUTH, params={"per_page": 100}, timeout=60)
        print(f"touched {touched} deals and re-read the newest page in {time.perf_counter() - started:.1f} s")
        return 0 if first.status_code == 200 else 1
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    sys.exit(main())
