"""Why a run failed, in one plain sentence: the step's dg.Failure description or the exception that caused it.

Dagster wraps a step's exception (`DagsterExecutionStepExecutionError: Error occurred while executing
op ...`); the cause a person can act on is the innermost error, which is what the CLI prints last.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.execution.plan.objects import StepFailureData
from dagster._utils.error import SerializableErrorInfo

_WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError", "DagsterResourceFunctionError")


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, StepFailureData]]:
    """(step key, failure data) of every failed step of the run, in order."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    failures: list[tuple[str, StepFailureData]] = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and isinstance(event.event_specific_data, StepFailureData):
            failures.append((event.step_key or "?", event.event_specific_data))
    return failures


def innermost(error: SerializableErrorInfo) -> SerializableErrorInfo:
    """The error under Dagster's wrappers (and under `raise ... from`)."""
    while error.cls_name in _WRAPPERS and error.cause is not None:
        error = error.cause
    return error


def plain_cause(data: StepFailureData) -> str:
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description.strip()
    if data.error is None:
        return "the step failed without saying why"
    error = innermost(data.error)
    text = error.message.strip()
    # "ValueError: x" or "pkg.errors.CrmAuthError: x" reads as x; the class name only when nothing else is said.
    head, _, rest = text.partition(": ")
    if error.cls_name and head.split(".")[-1] == error.cls_name and rest.strip():
        return rest.strip()
    return text


def failure_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first failed step and its cause, or the run's own failure message."""
    failures = step_failures(instance, run_id)
    if failures:
        step, data = failures[0]
        return f"step {step}: {plain_cause(data)}"
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    for record in records:
        message = record.event_log_entry.message or ""
        if message:
            return message.strip()
    return "the run failed before any step ran; open it in the Dagster UI for its logs"
