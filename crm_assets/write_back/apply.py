"""Applying a plan: re-read each record, re-plan if it changed, PUT the one field, then warehouse and audit.

Freshsales has no conditional PUT, so the check for a concurrent edit is a fresh GET right before the
write: a record whose updated_at (or field) moved since the plan was read is planned again from what
the CRM holds now, and skipped if it no longer matches or already has the new value. A PUT that fails
may still have reached the CRM (its answer lost to a timeout or a dropped connection, a 5xx after the
write), so the record is read back and what the CRM holds decides applied or failed, not the error.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import replace

from sqlalchemy.engine import Engine

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmError, CrmOutcomeUnknownError
from crm_assets.timestamps import parse_instant
from crm_assets.write_back.fields import Record, field_body, field_text, typed_field
from crm_assets.write_back.model import Action, ChangeOutcome, PlannedChange, Status, UpdatePlan, ValidatedUpdate
from crm_assets.write_back.plan import created_date, plan_record
from crm_assets.write_back.store import (
    record_audit_only,
    record_outcome,
    rows_behind,
    write_back_lock,
    write_planned_audit,
)

# After a timeout, a dropped connection or a gateway's answer, a PUT read back unapplied may still be applied.
STILL_UNDER_WAY = "the CRM may still apply it: run the same config again later (records already set are skipped)"


def planned_outcomes(plan: UpdatePlan) -> list[ChangeOutcome]:
    """The outcome of a dry run: every change as planned, nothing written."""
    return [
        ChangeOutcome(
            c.crm_id,
            Status.SKIPPED if c.action == Action.SKIP else Status.PLANNED,
            c.old_text,
            c.new_text,
            created_date=created_date(c.created_at),
        )
        for c in plan.changes
    ]


def _skipped(change: PlannedChange, fresh: PlannedChange | None, note: str | None, replanned: bool) -> ChangeOutcome:
    return ChangeOutcome(
        change.crm_id,
        Status.SKIPPED,
        (fresh or change).old_text,
        change.new_text,
        error=note,
        in_sync=fresh is not None,
        created_date=created_date(change.created_at),
        replanned=replanned,
    )


def _settled(
    update: ValidatedUpdate,
    change: PlannedChange,
    fresh: PlannedChange,
    replanned: bool,
    record: Record,
    holds_prefix: str,
) -> ChangeOutcome:
    """The outcome of a PUT from the record the CRM holds after it: applied only when it holds the new value,
    else failed with `holds_prefix` and the value it holds as the error."""
    outcome = ChangeOutcome(
        change.crm_id,
        Status.APPLIED,
        fresh.old_text,
        change.new_text,
        in_sync=True,
        updated_at=parse_instant(record.get("updated_at")),
        created_date=created_date(change.created_at),
        replanned=replanned,
        crm_record=record,
    )
    if typed_field(record, update.target) != update.new_value:
        holds = field_text(record, update.target)
        return replace(outcome, status=Status.FAILED, in_sync=False, error=f"{holds_prefix} {holds!r}")
    return outcome


def _read_back(
    client: FreshsalesClient,
    update: ValidatedUpdate,
    change: PlannedChange,
    fresh: PlannedChange,
    replanned: bool,
    put_error: CrmError,
    log: logging.Logger,
    *,
    may_resend: bool,
) -> ChangeOutcome | None:
    """A failed PUT may still have been applied (an answer lost to a timeout or a dropped connection, a 5xx
    after the write): what the CRM holds now decides, not the error. None, when `may_resend`, if the record is
    as the fresh read left it (same updated_at and value): the PUT was not applied, and can be sent again.
    """
    domain = update.domain
    try:
        record = client.get_record(domain.entity, domain.singular, change.crm_id)
    except CrmError as exc:
        log.error(f"{domain.singular} {change.crm_id}: the PUT failed ({put_error}) and reading it back too: {exc}")
        error = (
            f"{put_error}; reading the record back failed too ({exc}), so whether the CRM took the new value "
            "is unknown: run the same config again"
        )
        return ChangeOutcome(change.crm_id, Status.FAILED, fresh.old_text, change.new_text, error=error)
    outcome = _settled(update, change, fresh, replanned, record, f"{put_error}; read back afterwards, the record holds")
    held = plan_record(update, record)
    untouched = held is not None and (held.updated_at, held.old_text) == (fresh.updated_at, fresh.old_text)
    if outcome.status == Status.APPLIED:
        log.warning(f"{domain.singular} {change.crm_id}: the PUT failed ({put_error}) but the CRM holds the new value")
        return outcome
    if untouched and may_resend:
        log.warning(f"{domain.singular} {change.crm_id}: the PUT failed ({put_error}); read back, it was not applied")
        return None
    if isinstance(put_error, CrmOutcomeUnknownError) and not put_error.ended_at_crm:
        outcome = replace(outcome, error=f"{outcome.error}; {STILL_UNDER_WAY}")
    log.error(f"{domain.singular} {change.crm_id}: not updated: {outcome.error}")
    return outcome


def _write(
    client: FreshsalesClient,
    update: ValidatedUpdate,
    change: PlannedChange,
    fresh: PlannedChange,
    replanned: bool,
    log: logging.Logger,
) -> ChangeOutcome:
    """PUT the field. A PUT whose answer was lost is read back (after the client's backoff, so that a write
    still under way lands first); it is sent again, at most max_retries times, only when the request ended at
    the CRM (CrmOutcomeUnknownError.ended_at_crm) and the record is untouched: a blind retry could apply it twice."""
    domain = update.domain
    body = field_body(update.target, update.new_wire_value)
    attempt = 0
    while True:
        attempt += 1
        try:
            saved: Record = client.update_record(domain.entity, domain.singular, change.crm_id, body)
        except CrmError as exc:
            if isinstance(exc, CrmOutcomeUnknownError):
                client.back_off(attempt)
            may_resend = isinstance(exc, CrmOutcomeUnknownError) and exc.ended_at_crm and attempt <= client.max_retries
            outcome = _read_back(client, update, change, fresh, replanned, exc, log, may_resend=may_resend)
            if outcome is not None:
                return outcome
            continue
        return _settled(update, change, fresh, replanned, saved, "the CRM accepted the PUT but holds")


def apply_change(
    client: FreshsalesClient, update: ValidatedUpdate, change: PlannedChange, log: logging.Logger
) -> ChangeOutcome:
    """One record: fresh read, re-plan when it moved, PUT; what the CRM then holds decides applied or failed."""
    domain = update.domain
    try:
        record = client.get_record(domain.entity, domain.singular, change.crm_id)
    except CrmError as exc:  # nothing was sent
        log.error(f"{domain.singular} {change.crm_id}: not updated: {exc}")
        return ChangeOutcome(change.crm_id, Status.FAILED, change.old_text, change.new_text, error=str(exc))
    fresh = plan_record(update, record)
    replanned = fresh is None or (fresh.updated_at, fresh.old_text) != (change.updated_at, change.old_text)
    if fresh is None:
        note = f"no longer has {update.key_column.name} = {update.request.value!r} in the CRM: left alone"
        log.warning(f"{domain.singular} {change.crm_id} changed since it was read and {note}")
        return _skipped(change, None, note, replanned=True)
    if replanned:
        log.warning(
            f"{domain.singular} {change.crm_id} changed in the CRM since it was read "
            f"(updated_at {change.updated_at} -> {fresh.updated_at}); re-planned: "
            f"{update.target.name} {fresh.old_text!r} -> {fresh.new_text!r}"
        )
    if fresh.action == Action.SKIP:
        return _skipped(change, fresh, None, replanned)
    return _write(client, update, change, fresh, replanned, log)


def apply_changes(
    client: FreshsalesClient,
    engine: Engine,
    plan: UpdatePlan,
    run_id: str,
    log: logging.Logger,
    max_workers: int,
) -> list[ChangeOutcome]:
    """Apply every planned change, at most `max_workers` PUTs in flight; audit and warehouse as each ends.

    Holds the domain's write-back lock throughout, so that the outcomes reach the warehouse in the order
    the CRM took the PUTs: another write-back of the domain waits, then re-reads each record it writes
    and finds what this one left.
    """
    update = plan.update
    with write_back_lock(engine, update.domain, log):
        write_planned_audit(engine, plan, run_id)
        settled, to_check = _settled_and_to_check(engine, plan)
        outcomes = [_record(engine, update, run_id, _skipped(c, c, None, False)) for c in settled]
        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            futures = [pool.submit(apply_change, client, update, change, log) for change in to_check]
            outcomes += _record_as_they_end(engine, update, run_id, futures, log)
        return sorted(outcomes, key=lambda o: o.crm_id)


def _settled_and_to_check(engine: Engine, plan: UpdatePlan) -> tuple[list[PlannedChange], list[PlannedChange]]:
    """(changes planned as already set that the warehouse holds too, changes to read again and maybe write).

    Planned as already set, yet not so in the warehouse: another write-back may have changed the record
    since the plan read it, so it is read again, like the records to update.
    """
    behind = rows_behind(engine, plan.update, [c.crm_id for c in plan.skipped])
    settled = [c for c in plan.skipped if c.crm_id not in behind]
    return settled, [*plan.to_apply, *(c for c in plan.skipped if c.crm_id in behind)]


def _record_as_they_end(
    engine: Engine, update: ValidatedUpdate, run_id: str, futures: list[Future[ChangeOutcome]], log: logging.Logger
) -> list[ChangeOutcome]:
    """Warehouse and audit for each change as its CRM write ends.

    When that fails (or the run is stopped), no further PUT starts, but the ones already sent finish
    regardless: each of them, and the one that failed, still gets an audit row saying what the CRM did.
    """
    outcomes: list[ChangeOutcome] = []
    unrecorded = set(futures)
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            unrecorded.discard(future)
            outcome = future.result()
            try:
                outcomes.append(_record(engine, update, run_id, outcome))
            except Exception as exc:
                _audit_only(engine, update, run_id, outcome, exc, log)
                raise
            if done % 50 == 0 or done == len(futures):
                log.info(f"{done} of {len(futures)} record(s) written back")
    except BaseException as exc:
        for future in unrecorded:
            future.cancel()  # no more CRM writes once the warehouse or audit cannot follow
        _record_in_flight(engine, update, run_id, unrecorded, exc, log)
        raise
    return outcomes


def _record_in_flight(
    engine: Engine,
    update: ValidatedUpdate,
    run_id: str,
    futures: set[Future[ChangeOutcome]],
    stopped_by: BaseException,
    log: logging.Logger,
) -> None:
    """Warehouse and audit, or the audit alone, for the changes whose PUTs were sent before the run stopped."""
    sent = [future for future in futures if not future.cancelled()]
    for future in sent:
        try:
            outcome = future.result()
        except Exception as exc:  # unknown outcome: its audit row stays 'planned', as after a crash
            log.error(f"a write-back of {update.domain.name} ended in an error after the run stopped: {exc!r}")
            continue
        try:
            _record(engine, update, run_id, outcome)
        except Exception as exc:
            _audit_only(engine, update, run_id, outcome, exc, log)
    log.error(
        f"the write-back stopped ({stopped_by!r}): {len(sent)} record(s) already sent to the CRM were recorded "
        f"after it, as far as the warehouse allowed; {len(futures) - len(sent)} never sent stay 'planned'"
    )


def _audit_only(
    engine: Engine,
    update: ValidatedUpdate,
    run_id: str,
    outcome: ChangeOutcome,
    warehouse_error: Exception,
    log: logging.Logger,
) -> None:
    """The audit row of a change whose warehouse row could not follow: what the CRM did, and that."""
    note = f"the warehouse was not updated ({warehouse_error!r}): the next sync, or the same config run again, fixes it"
    try:
        record_audit_only(
            engine, update, run_id, replace(outcome, error="; ".join(filter(None, (outcome.error, note))))
        )
    except Exception as exc:
        log.error(f"{update.domain.singular} {outcome.crm_id} ({outcome.status}): its audit row failed too: {exc!r}")


def _record(engine: Engine, update: ValidatedUpdate, run_id: str, outcome: ChangeOutcome) -> ChangeOutcome:
    return replace(outcome, warehouse_changed=record_outcome(engine, update, run_id, outcome))
