"""Which runs a command marks failed when it starts: only those a killed command on this machine executed."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from crm_assets.contracts import COMMAND_PROCESS_TAG
from crm_assets.defs.command_process import command_process_tag, fail_runs_of_ended_commands


def _ended_process_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _started_run(instance: dg.DagsterInstance, tag: str | None = None, *, own: bool = True) -> dg.DagsterRun:
    run = create_run_for_test(instance, job_name="crm_sync", status=dg.DagsterRunStatus.STARTED)
    if tag is not None:
        instance.add_run_tags(run.run_id, {COMMAND_PROCESS_TAG: tag.format(run_id=run.run_id if own else "x")})
    return run


def _status(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRunStatus:
    found = instance.get_run_by_id(run.run_id)
    assert found is not None
    return found.status


def test_only_runs_of_a_command_gone_from_this_machine_are_marked_failed() -> None:
    with dg.instance_for_test() as instance:
        machine, pid, started, _ = command_process_tag("r").split(":")
        dead = _ended_process_pid()
        killed = _started_run(instance, f"{machine}:{dead}::{{run_id}}")
        pid_reused = _started_run(instance, f"{machine}:{pid}:{int(started) - 1}:{{run_id}}")  # same pid, older
        alive = _started_run(instance, f"{machine}:{pid}:{started}:{{run_id}}")
        elsewhere = _started_run(instance, f"another-machine:{dead}::{{run_id}}")
        copied = _started_run(instance, f"{machine}:{dead}::{{run_id}}", own=False)  # a re-execution's copy
        launched_otherwise = _started_run(instance)

        assert set(fail_runs_of_ended_commands(instance)) == {killed.run_id, pid_reused.run_id}
        assert _status(instance, killed) == _status(instance, pid_reused) == dg.DagsterRunStatus.FAILURE
        for untouched in (alive, elsewhere, copied, launched_otherwise):
            assert _status(instance, untouched) == dg.DagsterRunStatus.STARTED
