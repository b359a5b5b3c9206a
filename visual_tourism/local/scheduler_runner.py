"""Local EventBridge Scheduler: runs one-time schedules' universal targets when they are due.

moto stores schedules but never runs their targets. This runner polls the stored schedules,
and for an ``at(...)`` schedule whose time has come makes the target's SDK call
(``arn:aws:scheduler:::aws-sdk:<service>:<action>``, parameters from ``Input``) against the
local stack, then deletes the schedule when ``ActionAfterCompletion`` is ``DELETE``, as
Scheduler does. ``run_due(now=...)`` lets a test (or `local` commands) move the clock forward.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

_UNIVERSAL = re.compile(r"^arn:aws:scheduler:::aws-sdk:([a-z0-9]+):([A-Za-z0-9]+)$")
# SDK service names in universal targets -> boto3 client names (where they differ).
_CLIENTS = {"applicationautoscaling": "application-autoscaling", "sagemaker": "sagemaker"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class SchedulerRunner:
    def __init__(self, aws_env: dict[str, str], poll: float = 0.5) -> None:
        self.aws_env = aws_env
        self.poll = poll
        self.fired: list[dict[str, Any]] = []  # name, group, target, error
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _client(self, name: str) -> Any:
        env = self.aws_env
        return boto3.client(
            name, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def start(self) -> SchedulerRunner:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="local-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            # A daemon thread: a poll still in flight (its first one loads moto's Scheduler
            # backend, seconds on a busy machine) must not hold up `local serve`'s exit.
            self._thread.join(timeout=2)
        self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self.poll):
            try:
                self.run_due()
            except Exception:  # keep the clock running whatever one schedule does
                if self._stopping.is_set():  # the stack is going away under this poll
                    return
                log.exception("local scheduler: unexpected failure")

    def run_due(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Run every schedule due at ``now`` (default: the real time); return what ran."""
        now = now or datetime.now(UTC)
        scheduler = self._client("scheduler")
        ran = []
        for summary in scheduler.list_schedules()["Schedules"]:
            found = scheduler.get_schedule(Name=summary["Name"], GroupName=summary["GroupName"])
            expression = found["ScheduleExpression"]
            if found.get("State") == "DISABLED" or not expression.startswith("at("):
                continue
            when = datetime.strptime(expression[3:-1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
            if when > now:
                continue
            ran.append(self._fire(found))
            if found.get("ActionAfterCompletion") == "DELETE":
                scheduler.delete_schedule(Name=found["Name"], GroupName=found["GroupName"])
        return ran

    def _fire(self, schedule: dict[str, Any]) -> dict[str, Any]:
        target = schedule["Target"]
        record: dict[str, Any] = {"name": schedule["Name"], "group": schedule["GroupName"],
                                  "target": target["Arn"], "error": None}
        match = _UNIVERSAL.match(target["Arn"])
        try:
            if not match or match.group(1) not in _CLIENTS:
                raise ValueError(f"local mode runs no target {target['Arn']}")
            client = self._client(_CLIENTS[match.group(1)])
            getattr(client, _snake(match.group(2)))(**json.loads(target.get("Input") or "{}"))
        except (ClientError, ValueError, TypeError) as exc:
            record["error"] = str(exc)
            log.warning("Schedule %s: target failed: %s", schedule["Name"], exc)
        else:
            log.info("Schedule %s ran %s", schedule["Name"], target["Arn"])
        self.fired.append(record)
        return record
