"""One execution environment of the local Lambda service: a long-lived process per worker.

Started by ``local.lambda_runtime`` with the deployed zip extracted in ``LAMBDA_TASK_ROOT``
and the function's environment. Like Lambda's Python runtime it imports the handler's module
once (the init phase, timed), then serves invocations one at a time, so module state (boto3
clients, caches) lives as long as the worker.

Protocol, one JSON object per line: requests on stdin (``request_id``, ``deadline`` as epoch
seconds, ``event``); answers on the file descriptor passed as ``VT_LOCAL_CONTROL_FD``: first
``{"ready": init_ms}`` or ``{"init_error": ...}``, then one ``{"ok": ..., ...}`` per request.
The handler's own stdout and stderr both go to stderr (Lambda sends both to CloudWatch); after
each phase a marker line there tells the runtime that the phase's log lines are complete.
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
from typing import Any

MARKER = "\x1evt-local-done"


class Context:
    """The attributes of Lambda's context object that handlers use."""

    def __init__(self, request_id: str, deadline: float) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = request_id
        self.invoked_function_arn = os.environ.get("VT_LOCAL_FUNCTION_ARN", "")
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


class _RequestIdFilter(logging.Filter):
    """Lambda's log format carries the current request id; set per invocation."""

    request_id = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


def _error_payload(exc: BaseException) -> dict[str, Any]:
    return {
        "errorMessage": str(exc), "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _done() -> None:
    sys.stderr.write(MARKER + "\n")
    sys.stderr.flush()


# Memory, as Lambda's REPORT line gives it: this environment's own peak resident memory during
# one invocation. Read from the kernel's high-water mark (VmHWM in /proc/self/status), reset
# before each invocation by writing 5 to /proc/self/clear_refs (Linux >= 4.0). Not
# ru_maxrss: on Linux it survives exec, so a worker started by a 400 MB `local serve` would
# report 400+ MB whatever it used itself. Not a sampled VmRSS either: the kernel updates the
# high-water mark on every page it maps, so a spike between two samples still counts, and the
# runtime's watchdog (lambda_runtime.Worker) reads the same figure from outside to enforce the
# function's memory size.
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def reset_peak_memory() -> bool:
    """Start a new peak from the current resident size; False where the kernel cannot."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def status_kib(field: str, path: str = _STATUS) -> int | None:
    """A ``kB`` field of a /proc/<pid>/status file (VmHWM, VmRSS), or None."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _max_memory_mb() -> int | None:
    peak = status_kib("VmHWM")
    return None if peak is None else -(-peak // 1024)  # MB as Lambda counts them, rounded up


def main() -> int:
    control = os.fdopen(int(os.environ["VT_LOCAL_CONTROL_FD"]), "w", buffering=1)
    os.dup2(2, 1)  # print() goes to the log, never into the control channel
    sys.stdout = sys.stderr

    def answer(message: dict[str, Any]) -> None:
        _done()  # log lines first: the runtime collects them before it reads the answer
        control.write(json.dumps(message, default=str) + "\n")

    # Lambda's runtime puts the task root first and installs a root log handler at WARNING
    # (unless the function sets AWS_LAMBDA_LOG_LEVEL), with the request id in every line.
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
    request_filter = _RequestIdFilter()
    handler_ = logging.StreamHandler(sys.stderr)
    handler_.addFilter(request_filter)
    handler_.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S"))
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.addHandler(handler_)
    root.setLevel(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "WARNING"))

    started = time.monotonic()
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # noqa: BLE001 - Runtime.ImportModuleError on Lambda
        print(f"[ERROR] Runtime.ImportModuleError: {exc}", file=sys.stderr)
        answer({"init_error": _error_payload(exc)})
        return 1
    answer({"ready": (time.monotonic() - started) * 1000})

    for line in sys.stdin:
        request = json.loads(line)
        request_filter.request_id = request["request_id"]
        reset_peak_memory()  # this invocation's peak, not the init's or an earlier one's
        started = time.monotonic()
        try:
            result = handler(request["event"], Context(request["request_id"],
                                                       request["deadline"]))
            json.dumps(result, default=str)
            message: dict[str, Any] = {"ok": True, "result": result}
        except Exception as exc:  # noqa: BLE001 - reported to the runtime like Lambda does
            payload = _error_payload(exc)
            print(f"[ERROR] {payload['errorType']}: {payload['errorMessage']}\n"
                  + "".join(traceback.format_exception(exc)).rstrip(), file=sys.stderr)
            message = {"ok": False, "error": payload}
        message["duration_ms"] = (time.monotonic() - started) * 1000
        message["max_memory_mb"] = _max_memory_mb()
        answer(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
