"""Process-wide logging: one line per event to stderr, JSON by default, with PHI masked as a backstop.

Log calls pass ids and lead references, never PHI. In case one does anyway, every handler carries
`RedactPHI`, which masks email addresses, phone numbers and Gravity Forms field dumps in the message, its
arguments, `extra` values, exception text and tracebacks before anything is written. Celery's worker and beat
(started by `admitflow worker|beat` after `configure_logging`) keep this configuration: a `setup_logging`
receiver tells Celery not to install its own handlers, so its loggers, `celery.app.trace` included, propagate
to ours. Celery: https://docs.celeryq.dev/en/stable/userguide/signals.html#setup-logging
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["auto", "json", "text"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers whose INFO lines are for the one command that asks for them (`admitflow migrate` turns Alembic's on).
QUIET_UNLESS_ASKED = ("alembic",)
# `extra` keys copied into JSON lines: references, never PHI.
REFERENCE_FIELDS = (
    "request_id", "lead_ref", "lead_id", "submission_id", "outbox_id", "site", "form_id", "entry_id", "task_id",
    "staff_id",
)

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# US numbers however written ((617) 555-0142, 617.555.0142, +1 617 555 0142, 16175550142) and E.164 ones.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+?1[\s.\-]?)?\(?[2-9]\d{2}\)?[\s.\-]?\d{3}[\s.\-]?\d{4}(?![\w])"
    r"|(?<![\w+])\+\d(?:[\s.\-()]?\d){7,14}(?![\w])"
)
# A Gravity Forms entry printed as a dict or JSON ('1.3': 'Jordan', "2": "x@example.org") or form-encoded
# (input_1_3=Jordan): field ids are digits, and their values are what the person typed.
_FIELD_DUMP = re.compile(
    r"""(?P<key>(?P<q>['"])\d+(?:\.\d+)?(?P=q)\s*:\s*)(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,}\]\s]+)"""
)
_FORM_ENCODED = re.compile(r"\b(input_\d+(?:[._]\d+)?=)[^&\s]*")


def redact(text: str) -> str:
    """`text` with email addresses, phone numbers and form field values masked."""
    text = _FIELD_DUMP.sub(lambda match: f"{match.group('key')}'[redacted]'", text)
    text = _FORM_ENCODED.sub(r"\1[redacted]", text)
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub("[phone]", text)


class RedactPHI(logging.Filter):
    """Renders each record's message, masks PHI in it, in `extra` values, the exception and the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_admitflow_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: keep the template, drop the arguments
            message = f"{record.msg} (log arguments dropped: they did not match the message)"
        record.msg, record.args = redact(str(message)), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        # The exception is now text; dropping it keeps a later handler from rendering it unmasked.
        record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, redact(value))
        record._admitflow_redacted = True
        return True


_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the references given in `extra`, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in REFERENCE_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False)


def _keep_admitflow_logging(**_: object) -> None:
    """Celery `setup_logging` receiver: its presence stops Celery replacing the handlers configured here."""


def protect_all_handlers() -> None:
    """Put the redaction filter on every handler any logger has (libraries sometimes add their own)."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(existing, RedactPHI) for existing in handler.filters):
                handler.addFilter(RedactPHI())


class QuietRoutineTasks(logging.Filter):
    """Drops the INFO lines Celery writes for each run of a routine task (received, succeeded, sent by beat): an
    idle worker would otherwise log a few lines for every beat tick. Warnings and errors about them still pass."""

    def __init__(self, task_names: frozenset[str]) -> None:
        super().__init__()
        self.task_names = task_names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        data = getattr(record, "data", None)
        if isinstance(data, dict):  # celery.worker.strategy and celery.app.trace pass the task in `extra`
            return data.get("name") not in self.task_names
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(arg, str) and arg in self.task_names for arg in args)  # celery.beat


def quiet_routine_tasks(task_names: frozenset[str]) -> None:
    """Keep routine tasks out of the worker's and beat's INFO lines (see `QuietRoutineTasks`)."""
    for name in ("celery.worker.strategy", "celery.app.trace", "celery.beat"):
        logging.getLogger(name).addFilter(QuietRoutineTasks(task_names))


def chosen_format(log_format: LogFormat, stream: TextIO) -> Literal["json", "text"]:
    """`auto` is text for a person at a terminal and JSON lines for everything else (a file, a log shipper)."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(level: str = "INFO", log_format: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Log to stderr (or `stream`) as JSON lines or human-readable text, always through the PHI filter."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    json_lines = chosen_format(log_format, stream) == "json"
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactPHI())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Python warnings (Celery's, libraries') become log lines too, so stderr stays one JSON object per line.
    logging.captureWarnings(True)
    # The twilio client logs request URLs and headers at INFO.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    for name in QUIET_UNLESS_ASKED:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [], True
    protect_all_handlers()
    from celery.signals import setup_logging

    setup_logging.connect(_keep_admitflow_logging, weak=False, dispatch_uid="admitflow-logging")
