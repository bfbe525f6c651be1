"""Budget benchmark: how well a sync spends a Freshsales request budget, against a demo CRM that enforces one.

The demo CRM (its own process, over loopback HTTP) answers as Freshsales does over budget: 429 with
x-ratelimit-* headers and no Retry-After, in fixed per-minute and per-hour windows. The clock is scaled (a
"minute" of --minute-seconds) so that a run takes minutes, not hours. The three domains are extracted into
PostgreSQL side by side, each with its own client (as the three raw steps run in the `crm_api` pool of 3),
all spending one budget kept in the warehouse. Then 1% of every domain changes and a re-sync runs.

Prints: requests per minute achieved over the budget (target >= 90%), 429s after the first minute
(target 0), records per request on the full sync (target >= 99 of 100), requests per changed record on
the re-sync. Not a test: it prints figures.

    python crm_assets_tests/benchmarks/bench_budget.py            # 100k deals, 400/min, a "minute" of 30 s
    python crm_assets_tests/benchmarks/bench_budget.py --deals 20000 --minute-seconds 6
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from crm_assets.demo_crm import DEMO_API_KEY
from crm_assets.domains import Domain, configured_domains
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import extract_domain
from crm_assets.warehouse.budget import shared_budget_store
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets_tests.benchmarks.bench_sync import demo_server, throwaway_database


@dataclass(frozen=True)
class Budget:
    per_minute: int
    per_hour: int
    minute_seconds: float


@dataclass
class Phase:
    requests: int  # every request the clients sent, retries included
    records: int
    seconds: float
    rate_limited: int  # 429s the clients saw
    paced_seconds: float  # time the clients' limiters held requests back (summed over threads)


def admin(base: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    root = base.split("/crm/")[0]
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{root}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def extract_in_parallel(engine: sa.Engine, base: str, budget: Budget, full: bool) -> Phase:
    """The three domains side by side, one client each, one budget between them (as the raw steps run)."""

    def one(domain: Domain) -> tuple[int, dict[str, Any]]:
        with FreshsalesClient(
            base,
            DEMO_API_KEY,
            rate_limit_per_minute=budget.per_minute,
            rate_limit_per_hour=budget.per_hour,
            rate_limit_minute_seconds=budget.minute_seconds,
            budget_store=shared_budget_store(engine, base),
        ) as client:
            result = extract_domain(engine, domain, client, "bench", full_refresh=full)
            return result.stats.fetched, client.stats.as_dict()

    started = time.perf_counter()
    with ThreadPoolExecutor(len(configured_domains())) as pool:
        results = list(pool.map(one, configured_domains()))
    seconds = time.perf_counter() - started
    return Phase(
        requests=sum(stats["requests"] for _, stats in results),
        records=sum(fetched for fetched, _ in results),
        seconds=seconds,
        rate_limited=sum(stats["by_status"].get(429, 0) for _, stats in results),
        paced_seconds=sum(stats["waited_seconds"] for _, stats in results),
    )


def run(deals: int, budget: Budget, changed: float) -> None:
    with demo_server(deals) as base, throwaway_database() as url:
        engine = create_warehouse_engine(url)
        migrate(engine)
        admin(
            base,
            "/_demo/faults",
            {
                "budget_per_minute": budget.per_minute,
                "budget_per_hour": budget.per_hour,
                "budget_minute_seconds": budget.minute_seconds,
            },
        )
        full = extract_in_parallel(engine, base, budget, full=True)
        after_full = admin(base, "/_demo/stats")["budget"]
        touched = sum(
            int(admin(base, "/_demo/touch", {"entity": d.entity, "fraction": changed})["count"])
            for d in configured_domains()
        )
        resync = extract_in_parallel(engine, base, budget, full=False)
        engine.dispose()

    minutes = full.seconds / budget.minute_seconds
    admitted = after_full["admitted"]
    print(
        f"budget: {budget.per_minute} requests/minute, {budget.per_hour or 'no'} requests/hour; "
        f'a "minute" is {budget.minute_seconds:g} s'
    )
    print(
        f"full sync: {full.records:,} records, {full.requests:,} requests in {full.seconds:.1f} s "
        f'({minutes:.1f} "minutes")'
    )
    print(
        f"  requests per minute achieved: {admitted / minutes:.0f} of {budget.per_minute} = "
        f"{admitted / minutes / budget.per_minute:.1%} (target >= 90%), the last partial minute included"
    )
    print(
        f"  429s: {after_full['rejected']} in all, {after_full['rejected_after_first_minute']} after the first "
        "minute (target 0)"
    )
    print(
        f"  the limiters held requests back {full.paced_seconds:.0f} s in all (0: the budget never bound, "
        "the machine did)"
    )
    print(f"  records per request: {full.records / full.requests:.1f} of 100 (target >= 99)")
    print(
        f"re-sync after {changed:.0%} changed ({touched:,} records): {resync.requests} requests, "
        f"{resync.requests / max(touched, 1):.3f} requests per changed record, {resync.rate_limited} 429s, "
        f"{resync.seconds:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=100_000, help="+ deals/10 accounts and deals/2 contacts")
    parser.add_argument("--per-minute", type=int, default=400)
    parser.add_argument("--per-hour", type=int, default=5000, help="Freshsales Forest; Growth is 1000")
    parser.add_argument(
        "--minute-seconds",
        type=float,
        default=30.0,
        help='length of a "minute" of the budget; keep per-minute / minute-seconds below what the machine can '
        "fetch, or the figure measures the machine, not the limiter",
    )
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of each domain changed before re-sync")
    args = parser.parse_args()
    run(args.deals, Budget(args.per_minute, args.per_hour, args.minute_seconds), args.changed)


if __name__ == "__main__":
    main()
