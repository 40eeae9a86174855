from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from config.logging import configure_logging, redact

# Distinctive, fictional PHI: none of these may reach a log line.
CANARY_EMAIL = "canary.zebra@example.org"
CANARY_PHONES = ["(617) 555-0199", "617-555-0198", "617.555.0197", "+16175550196", "+1 617 555 0195", "6175550194"]
CANARY_NAME = "Quillonius"
ENTRY = {"id": "9", "form_id": "1", "1.3": CANARY_NAME, "2": CANARY_EMAIL, "3": CANARY_PHONES[0]}


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    yield stream
    configure_logging("INFO", "text")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_no_canary_phi_reaches_the_log_whichever_way_it_is_logged(output: io.StringIO) -> None:
    log = logging.getLogger("worker.canary")
    log.info("lead %s wrote from %s at %s", "R-7K2QX", CANARY_EMAIL, CANARY_PHONES[1])
    log.warning(f"submission 42 phone {CANARY_PHONES[2]} email {CANARY_EMAIL}")
    for phone in CANARY_PHONES:
        log.error("could not text %s", phone)
    log.info("entry dump %s", ENTRY)
    log.info("entry as JSON %s", json.dumps(ENTRY))
    log.info("form post input_1_3=%s&input_2=%s", CANARY_NAME, CANARY_EMAIL)
    log.info("with extra", extra={"lead_ref": "R-7K2QX", "contact": CANARY_EMAIL, "submission_id": 42})
    try:
        raise ValueError(f"HubSpot refused {CANARY_EMAIL} / {CANARY_PHONES[3]} in {ENTRY}")
    except ValueError:
        log.exception("CRM sync failed for lead %s", "R-7K2QX")
    logging.getLogger("celery.app.trace").error(
        "Task %(name)s[%(id)s] raised unexpected: %(exc)s",
        {"name": "admitflow.process", "id": "abc", "exc": f"IntegrityError({CANARY_PHONES[4]!r})"},
    )
    log.info("stack", stack_info=True, extra={"note": CANARY_PHONES[5]})

    text = output.getvalue()
    assert CANARY_EMAIL not in text
    assert CANARY_NAME not in text
    for phone in CANARY_PHONES:
        assert phone not in text
    assert "5550" not in text


def test_lead_references_and_ids_stay_readable(output: io.StringIO) -> None:
    logging.getLogger("worker.delivery.outbox").info(
        "lead %s outbox row %d delivered to CRM contact %s", "R-7K2QX", 1234, "901234567",
        extra={"lead_ref": "R-7K2QX", "submission_id": 42, "request_id": "req-1"},
    )

    (line,) = lines(output)
    assert line["message"] == "lead R-7K2QX outbox row 1234 delivered to CRM contact 901234567"
    assert (line["lead_ref"], line["submission_id"], line["request_id"]) == ("R-7K2QX", 42, "req-1")
    assert (line["level"], line["logger"]) == ("INFO", "worker.delivery.outbox")
    assert str(line["time"]).startswith("20")


def test_exceptions_are_one_json_line_with_a_masked_traceback(output: io.StringIO) -> None:
    try:
        raise RuntimeError(f"bad {CANARY_EMAIL}")
    except RuntimeError:
        logging.getLogger("worker.tasks").exception("task failed for submission %d", 7)

    (line,) = lines(output)
    assert "Traceback" in str(line["exception"]) and "[email]" in str(line["exception"])
    assert line["message"] == "task failed for submission 7"


def test_celery_keeps_admitflows_handlers_when_it_sets_up_logging(output: io.StringIO) -> None:
    from celery.app.log import Logging

    from config.celery_app import app

    handlers = list(logging.getLogger().handlers)
    try:
        Logging(app).setup_logging_subsystem(loglevel="INFO")
    finally:
        Logging._setup = False
    logging.getLogger("celery.worker").warning("worker up, contact %s", CANARY_EMAIL)

    assert logging.getLogger().handlers == handlers
    assert CANARY_EMAIL not in output.getvalue()
    assert "[email]" in output.getvalue()


def test_text_format_is_for_humans_and_still_masked() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream=stream)
    logging.getLogger("worker.web.app").info("from %s", CANARY_PHONES[0])

    assert " INFO worker.web.app: from [phone]" in stream.getvalue()
    assert not stream.getvalue().startswith("{")


@pytest.mark.parametrize("kept", ["R-7K2QX", "2026-11-27 05:13:18", "submission 123456", "HTTP 429", "v1.2.3"])
def test_redaction_leaves_references_dates_and_ids_alone(kept: str) -> None:
    assert redact(kept) == kept


def test_a_celery_task_failure_line_and_its_traceback_are_masked(output: io.StringIO) -> None:
    from celery import Celery

    app = Celery("canary", broker="memory://")

    @app.task(name="canary.fails")  # type: ignore[untyped-decorator]
    def fails() -> None:
        raise ValueError(f"HubSpot said {CANARY_EMAIL} is a duplicate of {CANARY_PHONES[0]}")

    fails.apply()

    failure = [line for line in lines(output) if line["logger"] == "celery.app.trace"]
    assert failure and "canary.fails" in str(failure[0]["message"])
    assert "[email]" in output.getvalue() and "Traceback" in output.getvalue()
    assert CANARY_EMAIL not in output.getvalue() and CANARY_PHONES[0] not in output.getvalue()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_are_text_on_a_terminal_and_json_lines_otherwise_unless_chosen() -> None:
    from config.logging import chosen_format

    assert chosen_format("auto", Terminal()) == "text"
    assert chosen_format("auto", io.StringIO()) == "json"
    assert chosen_format("json", Terminal()) == "json"
    assert chosen_format("text", io.StringIO()) == "text"


def test_routine_task_runs_are_not_logged_but_other_tasks_and_warnings_are() -> None:
    from config.logging import QuietRoutineTasks

    quiet = QuietRoutineTasks(frozenset({"admitflow.heartbeat"}))

    def record(level: int, message: str, args: tuple[object, ...] = (), data: object = None) -> logging.LogRecord:
        made = logging.makeLogRecord({"levelno": level, "msg": message, "args": args})
        if data is not None:
            made.data = data
        return made

    assert not quiet.filter(record(logging.INFO, "Task %(name)s received", data={"name": "admitflow.heartbeat"}))
    assert not quiet.filter(record(logging.INFO, "Sending due task %s (%s)", ("heartbeat", "admitflow.heartbeat")))
    assert quiet.filter(record(logging.INFO, "Task %(name)s received", data={"name": "admitflow.process_submission"}))
    assert quiet.filter(record(logging.ERROR, "Task %(name)s raised", data={"name": "admitflow.heartbeat"}))


def test_alembic_says_nothing_unless_migrating(output: io.StringIO) -> None:
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")

    assert output.getvalue() == ""
