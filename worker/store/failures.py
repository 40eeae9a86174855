"""What a database failure means to the operator who reads it: one line, the URL without its password, the fix.

psycopg's and SQLite's messages describe the connection (refused, unknown role or database, bad password), never
rows; they are still passed through the log redaction, as everything shown is.
"""

from __future__ import annotations

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from config.logging import redact

# Fragments of the driver's message, and what the operator does about each.
_FIXES = (
    ("relation", "does not exist", "run `admitflow migrate`"),
    ("role", "does not exist", "create the role (`createuser -P admitflow`) or fix the user in DATABASE_URL"),
    ("database", "does not exist", "create it (`createdb -O admitflow admitflow`) or fix the name in DATABASE_URL"),
    ("password authentication failed", "", "fix the password in DATABASE_URL"),
    ("no password supplied", "", "put the role's password in DATABASE_URL"),
    ("connection refused", "", "check the host and port in DATABASE_URL and that PostgreSQL is running"),
    ("resolve host", "", "check the host name in DATABASE_URL"),
    ("name or service not known", "", "check the host name in DATABASE_URL"),
    ("timeout", "", "check the host and port in DATABASE_URL and that the network lets this machine reach it"),
    ("unable to open database file", "", "check that the directory of the SQLite file exists and is writable"),
)


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def database_problem(exc: SQLAlchemyError, url: str) -> str:
    """One line saying what went wrong with the database at `url` and what to do."""
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return ("DATABASE_URL is not a database URL admitflow can use: write it as "
                "postgresql+psycopg://user:password@host:5432/name (or leave it unset for the embedded SQLite file)")
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    reason = next((line for line in lines if "FATAL" in line), lines[0] if lines else type(exc).__name__)
    reason = reason.split("FATAL:", 1)[-1].strip()
    reason = reason.removeprefix("connection failed:").strip()
    if reason.startswith("connection to server at") and "failed:" in reason:
        reason = reason.split("failed:", 1)[1].strip()
    lowered = reason.lower()
    fix = next((fix for first, second, fix in _FIXES if first in lowered and second in lowered), "check DATABASE_URL")
    return f"the database at {safe_url(url)} cannot be used ({redact(reason)}): {fix}"
