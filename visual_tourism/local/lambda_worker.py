"""Runs one Lambda invocation in a fresh process, as the Lambda Python runtime would.

Started by ``local.lambda_runtime`` with the deployed zip extracted in ``LAMBDA_TASK_ROOT``,
the function's environment variables, and the event on stdin. Prints the handler's return
value as JSON on stdout; exits 1 (traceback on stderr) when the handler raises.
Standard library only, so that only the deployed code and boto3 are on the path.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
import traceback


class Context:
    """The attributes of Lambda's context object that handlers use."""

    def __init__(self) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = os.environ["VT_LOCAL_REQUEST_ID"]
        self.invoked_function_arn = os.environ.get("VT_LOCAL_FUNCTION_ARN", "")
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = float(os.environ["VT_LOCAL_DEADLINE"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def main() -> int:
    # Lambda's runtime puts the task root first and installs a root log handler at WARNING
    # (unless the function sets AWS_LAMBDA_LOG_LEVEL).
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
    logging.basicConfig(
        level=os.environ.get("AWS_LAMBDA_LOG_LEVEL", "WARNING"), stream=sys.stderr,
        format="[%(levelname)s]\t%(asctime)s\t" + os.environ["VT_LOCAL_REQUEST_ID"]
        + "\t%(message)s",
    )
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    event = json.load(sys.stdin)
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        result = handler(event, Context())
    except Exception:  # noqa: BLE001 - reported to the runtime like Lambda does
        traceback.print_exc()
        return 1
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
