"""The code location's console logger: what the steps say, one plain line each.

Dagster's default console logger also prints every framework event (step starts, outputs, skipped
steps, each failure with its stack trace); those stay in the run's event log in the UI. Commands print
a failed run's cause once, at the end (`defs/outcome.py`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import dagster as dg

# Framework events worth a console line: the run is waiting or trying again.
_SHOWN_EVENTS = {"STEP_UP_FOR_RETRY", "STEP_RESTARTED"}


class PlainStepFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
        source = meta.get("step_key") or meta.get("job_name") or "crm_assets"
        message = meta.get("orig_message") or record.getMessage()
        return f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {source}: {message}"


class StepMessagesOnly(logging.Filter):
    """The steps' own messages; a warning repeated by several steps of one run (the demo CRM note) once."""

    def __init__(self) -> None:
        super().__init__()
        self._warned: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is not None:
            return event.event_type_value in _SHOWN_EVENTS
        message = str(meta.get("orig_message", ""))
        # Dagster's note for each step skipped after a failure: the failure itself is what matters.
        if message.endswith("Not executing."):
            return False
        if record.levelno == logging.WARNING:
            key = (str(meta.get("run_id")), message)
            if key in self._warned:
                return False
            self._warned.add(key)
        return True


@dg.logger(
    config_schema={
        "log_level": dg.Field(str, default_value="INFO", is_required=False, description="DEBUG .. CRITICAL"),
        "name": dg.Field(str, default_value="crm_assets", is_required=False),
    },
    description="One plain line per message a step logs (Dagster's own events stay in the run's event log).",
)
def plain_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger(init_context.logger_config["name"], level=init_context.logger_config["log_level"])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PlainStepFormatter())
    handler.addFilter(StepMessagesOnly())
    logger.addHandler(handler)
    return logger
