"""The least a safe webhook receiver can do, to measure `admitflow web` against in the same run.

    python bench/reference_receiver.py --port 8001 --database-url URL --redis-url URL

FastAPI on uvicorn (uvloop, httptools), as `admitflow web` runs: check the secret header, commit one `INSERT` of the
raw body into PostgreSQL, `LPUSH` its id to Redis, answer 202. No parsing, no validation, no encryption.
"""

from __future__ import annotations

import argparse
import hmac

import redis
import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import create_engine, text

SECRET_HEADER = "X-Admitflow-Secret"  # noqa: S105 (a header name)


def create_app(database_url: str, redis_url: str, secret: str) -> FastAPI:
    engine = create_engine(database_url, pool_size=40, max_overflow=0, pool_pre_ping=False)
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE IF NOT EXISTS reference_entries (id bigserial PRIMARY KEY, body bytea NOT NULL)")
        )
    queue = redis.Redis.from_url(redis_url)
    insert = text("INSERT INTO reference_entries (body) VALUES (:body) RETURNING id")
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"accepting_webhooks": True}

    def commit(body: bytes) -> int:
        with engine.begin() as connection:
            entry_id = int(connection.execute(insert, {"body": body}).scalar_one())
        queue.lpush("reference", entry_id)
        return entry_id

    @app.post("/hooks/gravityforms")
    async def receive(request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, ""), secret):
            return JSONResponse({"error": "secret"}, status_code=401)
        entry_id = await run_in_threadpool(commit, await request.body())
        return JSONResponse({"id": entry_id}, status_code=202)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.database_url, args.redis_url, args.secret), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
