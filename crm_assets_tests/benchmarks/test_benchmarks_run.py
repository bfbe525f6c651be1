"""Every benchmark still runs end to end, at a tiny size: a benchmark that breaks silently measures nothing.

The figures are not checked (they are for people, and timing tests are not kept here); only that each
script finishes and prints its summary line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "crm_assets_tests" / "benchmarks"

# script, arguments for a run of a few seconds, a line its summary prints
SMALL_RUNS = [
    ("bench_sync.py", ["--deals", "2000"], "re-sync after 1% changed"),
    ("bench_sync.py", ["--deals", "2000", "--db", "sqlite"], "re-sync after 1% changed"),
    ("bench_reports.py", ["--deals", "2000", "--accounts", "50", "--days", "70", "--sample", "1"], "summary"),
    ("bench_history.py", ["--deals", "2000", "--days", "20", "--rounds", "1"], "pipeline_daily backfill"),
    ("bench_cli_rerun.py", ["--deals", "2000"], "same records renamed again"),
]


@pytest.mark.postgres
@pytest.mark.parametrize(("script", "args", "summary"), SMALL_RUNS, ids=[f"{s}{' '.join(a)}" for s, a, _ in SMALL_RUNS])
def test_the_benchmark_runs_at_a_tiny_size(script: str, args: list[str], summary: str) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert summary in result.stdout, result.stdout[-4000:]
