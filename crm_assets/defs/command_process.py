"""The life of a run that a `crm-assets` command executes itself: stopped by Ctrl-C or SIGTERM at once, and
marked failed by a later command when its command was killed.

Runs are executed in a worker thread. In the main thread Dagster holds interrupts back between steps and
turns one during a step with a retry policy into a retry 30 s later, so the run would go on. Loads are
transactional and scans resume from their last checkpoint: the command can end at once.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from functools import cache
from pathlib import Path
from typing import NoReturn

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run

from crm_assets.contracts import COMMAND_PROCESS_TAG

AFTER_AN_INTERRUPT = (
    "Nothing half-written stays: loads are transactional, and running the same command again resumes the CRM "
    "scan from its last checkpoint (an update finishes the records it had not written)."
)
_IN_PROGRESS = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@cache
def terminal_stderr() -> int:
    """A handle on the command's stderr, taken before any run: while a run executes, Dagster's log capture
    points fd 2 at the run's log file, where the message of a Ctrl-C would never be seen."""
    return os.dup(sys.stderr.fileno())


def exit_interrupted(message: str) -> NoReturn:
    """Say what was interrupted and how to continue, on the terminal, and end the process (exit code 130)
    without waiting for a run's worker thread, which may be waiting on the CRM."""
    _ignore_further_interrupts()
    try:
        sys.stdout.flush()
        os.write(terminal_stderr(), f"\n{message}. {AFTER_AN_INTERRUPT}\n".encode())
    finally:
        os._exit(130)


def _ignore_further_interrupts() -> None:
    """A second Ctrl-C must not cut the ending short."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)


def execute_until_interrupted(
    job: InMemoryJob, run: dg.DagsterRun, instance: dg.DagsterInstance
) -> dg.JobExecutionResult:
    """Execute the run in a worker thread; on Ctrl-C or SIGTERM mark it canceled and exit."""
    outcome: dict[str, dg.JobExecutionResult | BaseException] = {}

    def execute() -> None:
        # Ctrl-C is the main thread's to handle. The helpers Dagster starts from here to mirror the run's
        # output (tail, watch_orphans) inherit the mask, so a terminal's Ctrl-C to the whole process group
        # leaves them quiet; they end with the command (watch_orphans stops tail with SIGTERM, not blocked).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            outcome["result"] = execute_run(job, run, instance, raise_on_error=False)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=execute, name=f"run-{run.run_id[:8]}", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(timeout=0.5)  # a timed join lets the signal's KeyboardInterrupt through
    except KeyboardInterrupt:
        _ignore_further_interrupts()
        _end(instance, run, canceled=True, message="Interrupted (Ctrl-C or SIGTERM) by the command that ran it")
        exit_interrupted(f"interrupted: run {run.run_id} of {run.job_name} canceled")
    if isinstance(error := outcome.get("error"), BaseException):
        raise error
    result = outcome["result"]
    assert isinstance(result, dg.JobExecutionResult)
    return result


def command_process_tag(run_id: str) -> str:
    """The COMMAND_PROCESS_TAG value of a run this process executes: which process, on which machine, for
    which run (a re-execution from the UI or a retry copies its parent's tags: they name another run)."""
    return ":".join((_this_machine(), str(os.getpid()), _started(os.getpid()) or "", run_id))


def fail_runs_of_ended_commands(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs a command on this machine executed and that are still in progress though that
    command is gone (killed, or the machine restarted); the ids of the runs marked."""
    marked = []
    for run in instance.get_runs(dg.RunsFilter(statuses=_IN_PROGRESS)):
        machine, pid, started, run_id = (*run.tags.get(COMMAND_PROCESS_TAG, "").split(":", 3), "", "", "", "")[:4]
        if machine != _this_machine() or run_id != run.run_id or not pid.isdigit():
            continue  # not ours to judge: another machine (or container), or a run that copied the tag
        now = _started(int(pid))
        if now is None or (started and now != started):  # gone, or its pid reused by a later process
            message = f"The command that executed this run (process {pid}) ended before the run did, e.g. killed"
            _end(instance, run, canceled=False, message=message)
            marked.append(run.run_id)
    return marked


def _end(instance: dg.DagsterInstance, run: dg.DagsterRun, *, canceled: bool, message: str) -> None:
    """Record the run's end and give back the pool slots its steps held (a pool such as crm_api)."""
    (instance.report_run_canceled if canceled else instance.report_run_failed)(run, message=message)
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


@cache
def _this_machine() -> str:
    """This boot of this machine, and this container on it: its pid namespace (Linux), else the host name."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname().replace(":", "_")


def _started(pid: int) -> str | None:
    """When the process started (clock ticks since boot, Linux; "" where that is unknown), None when it is gone.

    A pid alone would take a later process that reuses it for the command that ran the run."""
    if not Path("/proc/self/stat").exists():
        return "" if _is_running(pid) else None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may hold spaces


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
