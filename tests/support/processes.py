"""Helpers for tests that run admitflow's own processes (web, worker, beat) on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def healthy(url: str) -> bool:
    """The web server can store a webhook (stacks without beat are never fully ready: its heartbeat is missing)."""
    try:
        return bool(requests.get(f"{url}/healthz", timeout=2).json().get("accepting_webhooks"))
    except (requests.ConnectionError, ValueError):
        return False
