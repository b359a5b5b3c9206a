"""The function's one logger, and its one JSON line per photo.

Every module logs to the logger named after the handler, ``lambda_code``, so that one name
filters the function's lines in CloudWatch (and in tests), whichever module wrote them.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

LOGGER = "lambda_code"
log = logging.getLogger(LOGGER)


def summary(line: dict[str, Any]) -> dict[str, Any]:
    """Log ``line`` (what became of one photo) as one JSON line, and return it."""
    log.info(json.dumps(line, ensure_ascii=False))
    return line


def configure_logging() -> None:
    # Lambda's runtime installs a root handler at WARNING unless the function sets a log level
    # (AWS_LAMBDA_LOG_LEVEL). Raise only the function's logger to INFO so its one line per
    # photo shows without botocore's INFO chatter. Outside Lambda logging is left to the
    # importer.
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and not os.environ.get("AWS_LAMBDA_LOG_LEVEL"):
        log.setLevel(logging.INFO)
