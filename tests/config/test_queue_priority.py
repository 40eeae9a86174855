"""A worker takes new work (processing, staff texts) before CRM work, whatever waits in the CRM's queue: a slow
CRM's backlog never stands between a submission and its staff text (docs/benchmarks.md, a slow CRM)."""

from __future__ import annotations

import pytest
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from config.celery_app import CRM_QUEUE, QUEUES_BY_PRIORITY, WORK_QUEUE, app


@pytest.mark.services
def test_the_work_queue_is_served_before_a_crm_backlog(redis_url: str) -> None:
    queues = {name: Queue(f"test-{name}", Exchange(f"test-{name}", "direct"), routing_key=f"test-{name}")
              for name in QUEUES_BY_PRIORITY}
    taken: list[str] = []

    def on_message(body: str, message: Message) -> None:
        taken.append(body)
        if body == "new 1":  # more people submit while the CRM's backlog waits
            producer.publish("new 2", exchange=queues[WORK_QUEUE].exchange, routing_key=queues[WORK_QUEUE].routing_key)
        message.ack()

    with Connection(redis_url, transport_options=app.conf.broker_transport_options) as connection:
        channel = connection.channel()
        for queue in queues.values():
            queue(channel).declare()
            queue(channel).purge()
        producer = Producer(channel)
        for n in range(5):  # a CRM backlog, sent first
            producer.publish(f"crm {n}", exchange=queues[CRM_QUEUE].exchange, routing_key=queues[CRM_QUEUE].routing_key)
        producer.publish("new 1", exchange=queues[WORK_QUEUE].exchange, routing_key=queues[WORK_QUEUE].routing_key)
        try:
            with Consumer(channel, list(queues.values()), callbacks=[on_message], prefetch_count=1):
                while len(taken) < 7:
                    connection.drain_events(timeout=5)
        finally:
            for queue in queues.values():
                queue(channel).delete()

    assert taken == ["new 1", "new 2", *(f"crm {n}" for n in range(5))]
