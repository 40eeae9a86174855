"""Submit → staff SMS latency through the real web app, Redis broker and Celery worker, Twilio faked on loopback.

    python bench/submit_to_sms.py [--entries 200] [--rate 10] [--workers 2] [--crm-latency SECONDS]
                                  [--twilio-latency SECONDS]

Posts one entry per new person at a fixed rate to `admitflow web`, and measures, per entry, the time from the
POST to the moment the loopback Twilio receives the staff text for it. CRM is log-only (no credentials), so the
path measured is intake → processing → outbox → SMS; with `--crm-latency`, the workers also sync every lead to a
loopback HubSpot that answers each creation that late, as a slow CRM does. Also reports the worker's CPU per
lead: the CPU time of the worker and its pool processes over the run, divided by the leads, beside the machine's
load average (a loaded machine stretches the latencies, not the CPU per lead).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quiet import watched
from bench.stack import (
    POSTGRES_URL,
    SECRET,
    cpu_seconds,
    entry,
    environment,
    free_port,
    fresh_database,
    percentile,
    running,
)
from tests.fakes.providers import FakeProviders

TWILIO_SID = "AC" + "0" * 30 + "42"


def sms_ref(body: str) -> str:
    """The lead reference (R-XXXXX) a staff text names."""
    match = re.search(r"R-[0-9A-Z]{5}", body)
    return match.group(0) if match else ""


def entries_by_ref() -> dict[str, tuple[int, float]]:
    """Each lead's reference → its entry number and when its submission was processed (time.time())."""
    engine = create_engine(POSTGRES_URL)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT leads.ref, submissions.entry_id, extract(epoch FROM submissions.processed_at)"
            " FROM leads JOIN submissions ON submissions.lead_id = leads.id"
        )).all()
    engine.dispose()
    return {ref: (int(entry_id), float(processed_at)) for ref, entry_id, processed_at in rows}


def work_settled(deadline: float) -> bool:
    """Wait until no outbox row is pending (the CRM syncs done too); False if some still were at `deadline`."""
    engine = create_engine(POSTGRES_URL)
    try:
        while True:
            with engine.connect() as connection:
                pending = connection.execute(text("SELECT count(*) FROM outbox WHERE state = 'pending'")).scalar_one()
            if pending == 0 or time.monotonic() > deadline:
                return pending == 0
            time.sleep(0.2)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="entries posted per second")
    parser.add_argument("--workers", "--concurrency", dest="workers", type=int, default=2,
                        help="worker (prefork pool) processes")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--crm-latency", type=float, default=None, metavar="SECONDS",
                        help="sync to a loopback HubSpot that takes this long to answer each contact and task it "
                             "creates (default: a log-only CRM)")
    parser.add_argument("--hubspot-batches", action="store_true",
                        help="with --crm-latency: HUBSPOT_CUSTOM_PROPERTIES=true, so HubSpot takes leads in batches")
    parser.add_argument("--twilio-latency", type=float, default=0.0, metavar="SECONDS",
                        help="seconds the loopback Twilio takes to answer each text it has taken (default 0)")
    args = parser.parse_args()
    fresh_database()
    with watched() as watch, FakeProviders() as twilio:
        env = environment()
        env.update(TWILIO_ACCOUNT_SID=TWILIO_SID, TWILIO_AUTH_TOKEN="bench-token",  # noqa: S106 (loopback fake)
                   TWILIO_FROM_NUMBER="+18555550100", TWILIO_API_BASE_URL=twilio.url, TWILIO_SMS_PER_SECOND="0")
        if args.crm_latency is not None:
            env.update(HUBSPOT_TOKEN="bench-token", HUBSPOT_BASE_URL=twilio.url)  # noqa: S106 (loopback fake)
            twilio.state.create_answer_delay = args.crm_latency
            if args.hubspot_batches:
                env.update(HUBSPOT_CUSTOM_PROPERTIES="true")
        twilio.state.sms_answer_delay = args.twilio_latency
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        posted: dict[int, float] = {}
        with running(["web", "--host", "127.0.0.1", "--port", str(port)], env, f"{base}/healthz"), \
                running(["worker", "--concurrency", str(args.workers)], env) as worker, \
                httpx.Client(timeout=10) as client:
            time.sleep(3)  # let the worker connect before the clock starts
            cpu_before = cpu_seconds(worker.pid)
            start = time.time()
            for n in range(args.entries):
                time.sleep(max(0.0, start + n / args.rate - time.time()))
                number = 10_000 + n
                posted[n] = time.time()
                response = client.post(f"{base}/hooks/gravityforms", content=json.dumps(entry(number)),
                                       headers={"X-Admitflow-Secret": SECRET, "Content-Type": "application/json"})
                response.raise_for_status()
            deadline = time.monotonic() + args.timeout
            while len(twilio.state.sms) < args.entries and time.monotonic() < deadline:
                time.sleep(0.2)
            settled = work_settled(deadline)  # the CRM syncs, which the texts do not wait for
            cpu_used = cpu_seconds(worker.pid) - cpu_before
        arrivals = {sms_ref(call.body["Body"]): call.at for call in twilio.state.calls
                    if call.path.endswith("/Messages.json")}
    entry_of = entries_by_ref()
    # (POST → processed, processed → text) per entry: which side of processing the slow texts waited on
    stages = [(entry_of[ref][1] - posted[entry_of[ref][0] - 10_000], at - entry_of[ref][1])
              for ref, at in arrivals.items() if ref in entry_of]
    latencies = [to_processed + to_text for to_processed, to_text in stages]
    crm = "log-only CRM" if args.crm_latency is None else f"HubSpot creating in {args.crm_latency:g} s"
    crm += ", in batches" if args.crm_latency is not None and args.hubspot_batches else ""
    crm += f", Twilio answering in {args.twilio_latency:g} s" if args.twilio_latency else ""
    print(f"{len(arrivals)} of {args.entries} staff texts arrived (posted at {args.rate:g}/s, "
          f"{args.workers} worker processes, {crm})")
    print(f"worker CPU {cpu_used * 1000 / args.entries:.1f} ms per lead ({cpu_used:.1f} s over {args.entries} leads"
          f"{', all delivered' if settled else ', some outbox rows still pending: a partial figure'})")
    if latencies:
        print(f"{'p50 s':>8} {'p90 s':>8} {'p99 s':>8} {'max s':>8}")
        print(f"{percentile(latencies, 0.5):>8.3f} {percentile(latencies, 0.9):>8.3f} "
              f"{percentile(latencies, 0.99):>8.3f} {max(latencies):>8.3f}")
        slowest = sorted(stages, key=sum)[-max(1, len(stages) // 100):]
        print(f"the slowest 1% ({len(slowest)}): {sum(s[0] for s in slowest) / len(slowest):.3f} s on average from "
              f"the POST to processed, {sum(s[1] for s in slowest) / len(slowest):.3f} s from processed to the text; "
              f"all: p50 {percentile([s[0] for s in stages], 0.5):.3f} s and "
              f"{percentile([s[1] for s in stages], 0.5):.3f} s")
    print(watch.verdict())


if __name__ == "__main__":
    main()
