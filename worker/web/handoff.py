"""Handing stored webhooks to the broker from one thread of the web process, a page at a time, off the request path.

A request only puts the committed submission's id on a queue. This thread sends the ids waiting (a page of up to
`PAGE` after at most `LINGER` seconds) as one task, so a slow or restarting broker never holds a request's thread,
and the worker decides a burst in pages instead of one transaction an entry. An id lost here (the process killed
between the commit and the send) costs time, not the entry: the sweeper finds a submission nobody picked up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from worker.delivery.dispatch import Dispatcher

log = logging.getLogger(__name__)

PAGE = 50
LINGER = 0.2  # seconds the first id of a page waits for others: a fifth of the second a text to staff may take
_STOP = -1


class Handoff:
    def __init__(self, dispatcher: Dispatcher, *, page: int = PAGE, linger: float = LINGER) -> None:
        self.dispatcher, self.page, self.linger = dispatcher, page, linger
        self._waiting: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="admitflow-handoff", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stored(self, submission_id: int) -> None:
        """A submission is committed: send it on soon."""
        self._waiting.put(submission_id)

    def stop(self) -> None:
        """Send what is waiting, then end the thread."""
        if self._thread.is_alive():
            self._waiting.put(_STOP)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._waiting.get()
            if first == _STOP:
                return
            ids, deadline = [first], time.monotonic() + self.linger
            while len(ids) < self.page:
                try:
                    next_id = self._waiting.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if next_id == _STOP:
                    stopping = True
                    break
                ids.append(next_id)
            try:
                self.dispatcher.submissions_stored(ids)
            except Exception as exc:  # the sweeper sends them later; this thread must live on
                log.warning("could not hand %d stored submission(s) on (%s); the sweeper will pick them up",
                            len(ids), type(exc).__name__)
