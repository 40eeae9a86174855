from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.conftest import need
from tests.fakes.speed import alerted_lead, claimed_lead
from worker.ops.status_page import hash_password, password_matches
from worker.store.db import utcnow
from worker.web.app import create_app

USERNAME, PASSWORD = "manager", "correct horse battery staple"
CHROMIUM = Path(os.environ.get("ADMITFLOW_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


@pytest.fixture
def status_settings(settings: Settings) -> Settings:
    # Few iterations: the hash format is what is under test, not its cost.
    hashed = hash_password(PASSWORD, b"fictional-salt16", iterations=1000)
    return settings.model_copy(update={"status_username": USERNAME, "status_password_hash": SecretStr(hashed)})


@pytest.fixture
def speed_rows(session: Session) -> None:
    now = utcnow()
    for day in range(1, 6):
        for n, minutes in enumerate((1, 3, 12)):
            claimed_lead(session, f"R-D{day}{n}00", now - timedelta(days=day, minutes=n), "Avery Example",
                         claim_after=timedelta(minutes=minutes * day), call_after=timedelta(minutes=minutes * day + 1))
    alerted_lead(session, "R-WAIT9", now - timedelta(minutes=6))
    session.commit()


def test_the_status_page_is_off_until_login_credentials_are_configured(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        response = client.get("/status", headers=basic("", ""))

    assert response.status_code == 503
    assert "STATUS_USERNAME" in response.text


def test_the_status_page_asks_for_a_login_and_refuses_a_wrong_one(status_settings: Settings) -> None:
    with TestClient(create_app(status_settings)) as client:
        anonymous = client.get("/status")
        wrong_password = client.get("/status", headers=basic(USERNAME, "guess"))
        wrong_user = client.get("/status", headers=basic("admin", PASSWORD))

    assert anonymous.status_code == wrong_password.status_code == wrong_user.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic ")


def test_the_status_page_shows_the_speed_report_with_lead_references_only(
    status_settings: Settings, speed_rows: None
) -> None:
    with TestClient(create_app(status_settings)) as client:
        response = client.get("/status", headers=basic(USERNAME, PASSWORD))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    assert '<svg id="claim-chart"' in page and '<svg id="call-chart"' in page
    assert page.count('class="point-p50"') == 5 * 2
    assert "R-WAIT9" in page
    assert "Unclaimed now: 1" in page
    assert "Avery Example" in page
    assert "Sample" not in page and "555-0142" not in page and "@example.org" not in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_a_plain_password_setting_also_works_but_the_hash_is_checked_first(settings: Settings) -> None:
    plain = settings.model_copy(update={"status_username": USERNAME, "status_password": SecretStr(PASSWORD)})
    hashed = plain.model_copy(update={"status_password_hash": SecretStr(hash_password("other", b"s" * 16, 1000))})

    assert password_matches(PASSWORD, plain)
    assert not password_matches(PASSWORD, hashed)
    assert password_matches("other", hashed)


def test_production_refuses_a_plain_password_and_keeps_the_page_off(settings: Settings) -> None:
    plain = settings.model_copy(update={"status_username": USERNAME, "status_password": SecretStr(PASSWORD),
                                        "environment": "production"})

    with TestClient(create_app(plain)) as client:
        response = client.get("/status", headers=basic(USERNAME, PASSWORD))

    assert response.status_code == 503
    assert not password_matches(PASSWORD, plain)


def test_a_malformed_password_hash_lets_nobody_in(settings: Settings) -> None:
    broken = settings.model_copy(update={"status_username": USERNAME, "status_password_hash": SecretStr("nonsense")})

    assert not password_matches("nonsense", broken)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def live_status_url(status_settings: Settings, speed_rows: None) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(status_settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the web server did not start within 10 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_manager_logs_in_and_sees_the_chart_render_in_a_real_browser(live_status_url: str, tmp_path: Path) -> None:
    need(None if CHROMIUM.exists() else f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("the playwright package is not installed (pip install -e '.[test]')")
        raise

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            anonymous = browser.new_context()
            assert anonymous.request.get(f"{live_status_url}/status").status == 401
            context = browser.new_context(http_credentials={"username": USERNAME, "password": PASSWORD})
            page = context.new_page()
            response = page.goto(f"{live_status_url}/status")
            assert response is not None and response.status == 200
            chart = page.locator("svg#claim-chart")
            chart.wait_for(state="visible")
            box = chart.bounding_box()
            assert box is not None and box["width"] > 600 and box["height"] > 200
            assert page.locator("svg#claim-chart polyline.series-p50").count() == 1
            assert page.locator("svg#claim-chart polyline.series-p90").count() == 1
            assert page.locator("svg#claim-chart circle.point-p90").count() == 5
            assert page.locator("svg#call-chart circle.point-p50").count() == 5
            assert page.locator("#unclaimed td", has_text="R-WAIT9").count() == 1
            assert "Leads today" in page.locator("#leads-today").inner_text()
            screenshot = Path(os.environ.get("ADMITFLOW_SCREENSHOT_DIR", tmp_path)) / "status-page.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000
        finally:
            browser.close()


def test_report_hash_password_prints_a_hash_the_status_page_accepts(settings: Settings) -> None:
    from click.testing import CliRunner

    from worker.cli import main

    result = CliRunner().invoke(main, ["report", "hash-password", "--password", PASSWORD], catch_exceptions=False)

    assert result.exit_code == 0
    name, _, hashed = result.stdout.strip().partition("=")
    assert name == "STATUS_PASSWORD_HASH" and "$" not in hashed and PASSWORD not in hashed
    configured = settings.model_copy(update={"status_username": USERNAME, "status_password_hash": SecretStr(hashed)})
    assert password_matches(PASSWORD, configured)
    assert not password_matches("guess", configured)
