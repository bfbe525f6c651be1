"""Resume benchmark: a first sync under a Freshsales plan's request budget, killed half way and resumed.

The budget is the plan's (per minute and per hour), on a clock that runs `--scale` times faster, so an
hour of budget passes in 3600/scale seconds. The demo CRM is served over loopback by this process; each
extraction runs in its own process (all domains, as the raw assets do), and the interrupted one is killed
with SIGKILL when it has spent half the uninterrupted run's requests. Prints the requests spent and the
time each way, in plan hours. Not a test: it prints figures.

    python crm_assets_tests/benchmarks/bench_resume.py --deals 100000 --plan growth --scale 60
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm

# Requests per minute and per hour of each Freshsales plan (docs/freshsales-api.md).
PLANS = {"growth": (400, 1000), "pro": (400, 2000), "enterprise": (400, 5000)}

EXTRACT = """
import logging, sys, time
from crm_assets.domains import configured_domains
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import ScanSettings, extract_domain
from crm_assets.warehouse.engine import create_warehouse_engine, migrate

crm_url, db_url, key = sys.argv[1], sys.argv[2], sys.argv[3]
per_minute, per_hour, scale, checkpoint = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
logging.basicConfig(level=logging.WARNING)
engine = create_warehouse_engine(db_url)
migrate(engine)
client = FreshsalesClient(
    crm_url, key, rate_limit_per_minute=per_minute, rate_limit_per_hour=per_hour,
    clock=lambda: time.monotonic() * scale, sleep=lambda seconds: time.sleep(seconds / scale),
)
with client:
    for domain in configured_domains():
        extract_domain(engine, domain, client, "bench", settings=ScanSettings(checkpoint_pages=checkpoint))
"""


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float


def extraction(crm_url: str, db_url: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    per_minute, per_hour = PLANS[args.plan]
    argv = [crm_url, db_url, DEMO_API_KEY, str(per_minute), str(per_hour), str(args.scale), str(args.checkpoint)]
    return subprocess.Popen([sys.executable, "-c", EXTRACT, *argv], env={**os.environ, "PYTHONPATH": str(Path.cwd())})


def requests(demo: DemoCrm) -> int:
    return int(demo.stats()["requests"]["total"])


def run_through(demo: DemoCrm, crm_url: str, db_url: str, args: argparse.Namespace, kill_at: int | None) -> Run:
    """One extraction; with `kill_at`, SIGKILL it once the CRM has answered that many requests."""
    before, started = requests(demo), time.perf_counter()
    process = extraction(crm_url, db_url, args)
    while kill_at is not None and process.poll() is None and requests(demo) - before < kill_at:
        time.sleep(0.01)
    if kill_at is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
    code = process.wait()
    if kill_at is None and code != 0:
        raise SystemExit(f"the extraction failed with exit code {code}")
    return Run(requests(demo) - before, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=100_000, help="deals; accounts N/50, contacts N/10")
    parser.add_argument("--plan", choices=sorted(PLANS), default="growth")
    parser.add_argument("--scale", type=float, default=60.0, help="budget clock speed-up (60: an hour per minute)")
    parser.add_argument("--checkpoint", type=int, default=50, help="pages per checkpoint")
    parser.add_argument("--db", default="", help="warehouse URL prefix; default: SQLite files in a temp folder")
    args = parser.parse_args()

    demo = DemoCrm(DemoConfig(accounts=args.deals // 50, contacts=args.deals // 10, deals=args.deals, seed=1))
    demo.store.warm_up()
    with tempfile.TemporaryDirectory() as folder, serve_demo_crm(demo) as crm_url:
        straight_db, resumed_db = (
            (args.db + "_a", args.db + "_b")
            if args.db
            else (
                f"sqlite:///{folder}/straight.db",
                f"sqlite:///{folder}/resumed.db",
            )
        )
        straight = run_through(demo, crm_url, straight_db, args, None)
        killed = run_through(demo, crm_url, resumed_db, args, straight.requests // 2)
        resumed = run_through(demo, crm_url, resumed_db, args, None)

    per_minute, per_hour = PLANS[args.plan]
    spent = killed.requests + resumed.requests
    hours = 3600 / args.scale
    print(
        f"first sync of {args.deals:,} deals, {args.deals // 10:,} contacts, {args.deals // 50:,} accounts; "
        f"{args.plan} plan budget ({per_minute}/min, {per_hour:,}/h) on a clock {args.scale:g}x fast; "
        f"checkpoint every {args.checkpoint} pages"
    )
    print(f"  uninterrupted:        {straight.requests:6,} requests, {straight.seconds / hours:5.2f} plan hours")
    print(
        f"  killed half way:      {killed.requests:6,} requests, {killed.seconds / hours:5.2f} plan hours\n"
        f"  resumed to the end:   {resumed.requests:6,} requests, {resumed.seconds / hours:5.2f} plan hours\n"
        f"  interrupted in total: {spent:6,} requests ({spent - straight.requests:+,}; one checkpoint is "
        f"{args.checkpoint} pages), {(killed.seconds + resumed.seconds) / hours:5.2f} plan hours"
    )
    print(
        "  note: the extra requests are the pages read after the last checkpoint, the pages in flight and the\n"
        "  view lists read again; each process starts with a fresh client-side budget, so against a real\n"
        "  account (whose budget is shared) the resumed run would also wait out what the killed one spent."
    )


if __name__ == "__main__":
    main()
