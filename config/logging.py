"""Process-wide logging: one line per event, to stderr. Log calls pass ids and lead references, never PHI."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT, force=True)
    # The twilio client logs request URLs and headers at INFO.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
