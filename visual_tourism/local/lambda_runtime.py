"""Local Lambda service: runs the functions moto stores, the way Lambda runs them.

What it keeps of Lambda's execution model:

- **Execution environments.** Each function gets a pool of worker processes
  (``lambda_worker``). A worker imports the deployed zip once (the init phase) and then serves
  invocations one at a time, so module state survives between invocations. A new worker (a
  cold start) starts only when no idle one exists; idle workers are retired after
  ``idle_seconds``. Workers are keyed by the code's SHA-256 and a hash of the configuration
  (handler, timeout, memory, environment, role): after ``UpdateFunctionCode`` or
  ``UpdateFunctionConfiguration`` the next invocation gets a fresh worker and the old ones are
  retired once idle.
- **Timeouts.** An invocation past the function's timeout is killed with its worker (only
  that one); the next invocation starts a new one, as Lambda resets the sandbox.
- **Memory.** ``REPORT`` gives the worker's own peak resident memory during the invocation
  (see ``lambda_worker``). A worker whose peak goes over the function's memory size is
  killed, as Lambda's sandbox is: the invocation fails with ``Runtime.OutOfMemory`` ("Error:
  Runtime exited with error: signal: killed") and the next one gets a new worker. The
  watchdog reads the worker's high-water mark from ``/proc/<pid>/status`` every
  ``MEMORY_POLL_SECONDS`` while it works, and once more from its answer, so a spike between
  two looks still counts. (Not RLIMIT_AS: Python's virtual size is far above its resident
  size. Not a cgroup: creating one needs rights that a laptop's user does not have.)
- **Concurrency.** A function with reserved concurrency never runs more than that many
  invocations at once; the others share ``max_concurrency`` (the account's unreserved pool).
  Reserved concurrency 0 sends events straight to the on-failure destination.
- **The asynchronous queue** (S3 notifications, ``InvocationType=Event``). The upload does not
  wait. An event that finds no capacity is throttled and waits in the function's queue; a
  freed slot goes to the oldest waiting event. A waiting or retrying event older than the
  function's ``MaximumEventAgeInSeconds`` is given up. A failed invocation is retried
  ``MaximumRetryAttempts`` times (default 2) after ``retry_delays``. An event given up goes to
  the ``OnFailure`` destination (an S3 bucket here) as Lambda's invocation record.
- **Logs.** One file per function with ``INIT_START``, ``START``, ``END`` and ``REPORT`` lines
  like CloudWatch's (``Init Duration`` on cold starts only); each invocation's lines are
  written as one block.

Where it differs from AWS (on purpose, for test speed): Lambda backs throttled events off
from 1 s up to 5 min; here a throttled event takes the next free slot at once. Retry delays
are seconds, not Lambda's one and two minutes (``retry_delays``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from . import lambda_worker

log = logging.getLogger(__name__)

DEFAULT_MAX_EVENT_AGE = 21600  # Lambda's default: six hours
DEFAULT_RETRY_ATTEMPTS = 2  # Lambda's default for asynchronous invocations
# Where Lambda's S3 on-failure destination writes (fixed by AWS, not configurable).
DESTINATION_PREFIX = "aws/lambda/async/"
MEMORY_POLL_SECONDS = 0.02  # how often the watchdog looks at a working worker's memory
# What Lambda reports when a function goes over its memory size: the sandbox is killed.
OUT_OF_MEMORY = "Runtime.OutOfMemory"
KILLED = "Runtime exited with error: signal: killed"
_SIGNALS = {6: "aborted", 9: "killed", 11: "segmentation fault", 15: "terminated"}


def exit_description(returncode: int | None) -> str:
    """How Lambda words a runtime's end: ``exit status 3`` or ``signal: killed``."""
    if returncode is not None and returncode < 0:
        return f"signal: {_SIGNALS.get(-returncode, str(-returncode))}"
    return f"exit status {returncode}"


def out_of_memory_error(request_id: str) -> dict[str, Any]:
    return {"errorType": OUT_OF_MEMORY, "errorMessage": f"RequestId: {request_id} Error: {KILLED}"}


@dataclass(frozen=True)
class Invocation:
    function_name: str
    function_arn: str
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    code: bytes
    event: Any
    role: str = ""
    runtime: str = "python3.12"
    reserved_concurrency: int | None = None
    max_retry_attempts: int | None = None  # None: the runtime's ``retries``
    max_event_age: int = DEFAULT_MAX_EVENT_AGE
    on_failure: str | None = None  # destination ARN

    @cached_property
    def code_sha256(self) -> str:
        return hashlib.sha256(self.code).hexdigest()

    @cached_property
    def config_key(self) -> str:
        """Code and configuration: a worker serves only invocations with its own key."""
        settings = json.dumps([self.handler, self.timeout, self.memory, self.environment,
                               self.role, self.runtime], sort_keys=True)
        return self.code_sha256[:16] + "-" + hashlib.sha256(settings.encode()).hexdigest()[:16]


@dataclass
class AsyncEvent:
    """An event in the function's asynchronous queue."""

    invocation: Invocation
    future: Future[None]
    received: float = field(default_factory=time.monotonic)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0  # invocations run (first try and retries)
    ready_at: float = 0.0  # not before (a retry's delay)
    throttled: bool = False
    last_error: dict[str, Any] | None = None


class TooManyRequests(RuntimeError):
    """A synchronous invoke beyond the function's concurrency (Lambda's 429)."""


@dataclass
class Outcome:
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    status: str = "ok"  # ok, error, timeout, init_error


class Worker:
    """One execution environment: a process that imported the function's code once."""

    def __init__(self, invocation: Invocation, code_dir: Path, env: dict[str, str],
                 number: int, tmp_root: Path) -> None:
        self.function_name = invocation.function_name
        self.key = invocation.config_key
        self.memory_kib = invocation.memory * 1024  # Lambda's MB are MiB
        self.number = number
        self.created = self.last_used = time.monotonic()
        self.invocations = 0
        self.init_ms: float | None = None  # set once ready; reported on the first REPORT
        self.init_reported = False
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._phase_done = threading.Event()
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        # Each environment has a /tmp of its own, as on Lambda: kept between its invocations,
        # never shared with another worker, gone with the worker.
        self.tmp_dir = tmp_root / f"worker-{number}-{uuid.uuid4().hex[:8]}"
        self.tmp_dir.mkdir(parents=True)
        tmp = str(self.tmp_dir)
        read_fd, write_fd = os.pipe()
        env = {**env, "VT_LOCAL_CONTROL_FD": str(write_fd), "TMPDIR": tmp, "TMP": tmp,
               "TEMP": tmp}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", lambda_worker.__file__],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=env, cwd=code_dir, pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        self._control = os.fdopen(read_fd, "r")
        threading.Thread(target=self._read_log, daemon=True).start()
        threading.Thread(target=self._read_control, daemon=True).start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == lambda_worker.MARKER:
                self._phase_done.set()
                continue
            with self._lines_lock:
                self._lines.append(line)
        self._phase_done.set()

    def _read_control(self) -> None:
        for line in self._control:
            self._answers.put(json.loads(line))
        self._answers.put(None)  # the process is gone
        self._control.close()

    def take_lines(self, wait: float = 2.0) -> list[str]:
        """The log lines of the phase that just ended (waits briefly for its marker)."""
        self._phase_done.wait(wait)
        self._phase_done.clear()
        with self._lines_lock:
            lines, self._lines = self._lines, []
        return lines

    def peak_kib(self) -> int | None:
        """The worker's resident high-water mark since its invocation began (None: unknown,
        e.g. no /proc). The worker resets it at the start of each invocation."""
        return lambda_worker.status_kib("VmHWM", f"/proc/{self.process.pid}/status")

    def over_memory(self) -> bool:
        peak = self.peak_kib()
        return peak is not None and peak > self.memory_kib

    def _next_answer(self, timeout: float) -> dict[str, Any] | str:
        """The next answer, watching memory meanwhile: "timeout", "exited" or "oom"."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            try:
                answer = self._answers.get(timeout=min(left, MEMORY_POLL_SECONDS))
            except queue.Empty:
                if self.over_memory():
                    self.kill()
                    return "oom"
                continue
            return "exited" if answer is None else answer

    def wait_ready(self, timeout: float) -> dict[str, Any] | str:
        return self._next_answer(timeout)

    def invoke(self, request_id: str, event: Any, timeout: float) -> dict[str, Any] | str:
        """Send one event: the answer, or "timeout", "exited" (the process died) or "oom"
        (killed for going over the function's memory size)."""
        request = {"request_id": request_id, "deadline": time.time() + timeout, "event": event}
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return "exited"
        answer = self._next_answer(timeout)
        if isinstance(answer, dict) and (answer.get("max_memory_mb") or 0) * 1024 > (
                self.memory_kib):
            # Over the limit between two looks of the watchdog: Lambda would have killed it.
            self.kill()
            return "oom"
        return answer

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill is not refused
            log.warning("worker %s did not exit", self.process.pid)
        for stream in (self.process.stdin, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


# (bucket, key, body, function ARN): Lambda writes with the function's execution role.
Destination = Callable[[str, str, bytes, str], None]


class LambdaRuntime:
    def __init__(
        self,
        work_dir: Path,
        aws_environment: Mapping[str, str],
        max_concurrency: int = 4,
        retries: int = DEFAULT_RETRY_ATTEMPTS,
        retry_delays: tuple[float, ...] = (1.0, 2.0),
        idle_seconds: float = 300.0,
        max_worker_seconds: float = 1800.0,
        put_object: Destination | None = None,
        credentials: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.logs_dir = work_dir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.aws_environment = dict(aws_environment)
        # function ARN -> its execution role's temporary credentials (local.credentials)
        self.credentials = credentials
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.retry_delays = retry_delays
        self.idle_seconds = idle_seconds
        # Lambda recycles environments after some hours; here well within the life of the
        # role credentials a worker starts with (an hour), so none outlives them.
        self.max_worker_seconds = max_worker_seconds
        self.put_object = put_object  # how the S3 on-failure destination is written
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._queues: dict[str, deque[AsyncEvent]] = {}
        self._running: dict[str, int] = {}  # function -> invocations in flight
        self._reserved: dict[str, int | None] = {}  # function -> reserved concurrency
        self._idle: dict[str, list[Worker]] = {}  # function -> idle workers
        self._busy: set[Worker] = set()
        self._latest_key: dict[str, str] = {}  # function -> key of the newest invocation
        self._pending = 0  # events queued, running or waiting for a retry
        self._workers_started = 0
        # Counters, like CloudWatch's Lambda metrics.
        self.invocations = 0  # invocations run, retries included
        self.cold_starts = 0
        self.throttles = 0  # events that found no free concurrency at least once
        self.timeouts = 0
        self.out_of_memory = 0  # invocations killed for going over the memory size
        self.failures = 0  # events given up: sent to the destination, or dropped
        self.destination_records = 0
        self.peak_concurrency: dict[str, int] = {}
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="lambda-queue",
                                            daemon=True)
        self._dispatcher.start()

    # -- the hook moto calls ------------------------------------------------------------
    def invoke_from_moto(self, function: Any, event: Any) -> tuple[str, bool, str]:
        """Replaces moto's ``LambdaFunction._invoke_lambda``: queue and return at once."""
        self.submit(self._invocation(function, event))
        return "", False, ""

    @staticmethod
    def _invocation(function: Any, event: Any) -> Invocation:
        event_config = _event_invoke_config(function)
        on_failure = event_config.get("DestinationConfig", {}).get("OnFailure", {})
        reserved = getattr(function, "reserved_concurrency", None)
        return Invocation(
            function_name=function.function_name,
            function_arn=function.function_arn,
            handler=function.handler,
            timeout=int(function.timeout),
            memory=int(function.memory_size),
            environment=dict(function.environment_vars or {}),
            code=bytes(function.code_bytes),
            event=event if not isinstance(event, str) else json.loads(event),
            role=str(getattr(function, "role", "") or ""),
            runtime=str(getattr(function, "run_time", "") or "python3.12"),
            reserved_concurrency=None if reserved in (None, "") else int(reserved),
            max_retry_attempts=event_config.get("MaximumRetryAttempts"),
            max_event_age=int(event_config.get("MaximumEventAgeInSeconds",
                                               DEFAULT_MAX_EVENT_AGE)),
            on_failure=on_failure.get("Destination") or None,
        )

    def invoke_sync(self, invocation: Invocation) -> Outcome:
        """A synchronous invoke (RequestResponse): runs now on a warm worker or a cold start,
        within the function's concurrency like an event; at the limit Lambda refuses it
        (429 TooManyRequestsException) rather than queueing it."""
        name = invocation.function_name
        with self._changed:
            if self._closed:
                raise RuntimeError("the local Lambda runtime is stopped")
            self._reserved[name] = invocation.reserved_concurrency
            self._latest_key[name] = invocation.config_key
            limit, in_use = self._limit(name)
            if in_use() >= limit:
                self.throttles += 1
                raise TooManyRequests(f"Rate Exceeded. (function {name}: concurrency {limit})")
            self._running[name] = self._running.get(name, 0) + 1
        seen: list[Outcome] = []
        try:
            self._run_once(invocation, 0, None, seen)
        finally:
            with self._changed:
                self._running[name] -= 1
                self._changed.notify_all()
        return seen[0] if seen else Outcome(False, error={"errorMessage": "runtime stopped",
                                                           "errorType": "Runtime.Stopped"})

    def invoke_sync_from_moto(self, function: Any, event: Any) -> Outcome:
        """moto's RequestResponse invoke (see moto_patches.patch_lambda_invoke)."""
        return self.invoke_sync(self._invocation(function, event))

    def submit(self, invocation: Invocation) -> Future[None]:
        """Put an event in the function's asynchronous queue; done once it is settled."""
        future: Future[None] = Future()
        with self._changed:
            if self._closed:
                raise RuntimeError("the local Lambda runtime is stopped")
            name = invocation.function_name
            self._reserved[name] = invocation.reserved_concurrency
            self._latest_key[name] = invocation.config_key
            self._queues.setdefault(name, deque()).append(AsyncEvent(invocation, future))
            self._pending += 1
            self._changed.notify_all()
        return future

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued event (retries and destination records included) settled."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def stop(self) -> None:
        with self._changed:
            self._closed = True
            workers = [w for ws in self._idle.values() for w in ws] + list(self._busy)
            self._idle.clear()
            for events in self._queues.values():
                for event in events:
                    event.future.cancel()
                self._pending -= len(events)
            self._queues.clear()
            self._changed.notify_all()
        for worker in workers:
            worker.kill()
        self._dispatcher.join(timeout=5)

    def log_path(self, function_name: str) -> Path:
        return self.logs_dir / f"{function_name}.log"

    def workers(self, function_name: str) -> dict[str, int]:
        """How many workers of the function are idle and busy now."""
        with self._lock:
            return {
                "idle": len(self._idle.get(function_name, [])),
                "busy": sum(1 for w in self._busy if w.function_name == function_name),
            }

    # -- the asynchronous queue -------------------------------------------------------------
    def _limit(self, name: str) -> tuple[int, Callable[[], int]]:
        reserved = self._reserved.get(name)
        if reserved is not None:
            return reserved, lambda: self._running.get(name, 0)
        unreserved = [n for n, r in self._reserved.items() if r is None]
        return self.max_concurrency, lambda: sum(self._running.get(n, 0) for n in unreserved)

    def _dispatch(self) -> None:
        with self._changed:
            while not self._closed:
                wake = self._admit_due_events()
                self._retire_idle_workers()
                self._changed.wait(min(wake, 1.0))

    def _admit_due_events(self) -> float:
        """Start what may start; give up events past their age. Returns seconds to sleep."""
        now, wake = time.monotonic(), 1.0
        for name, events in self._queues.items():
            limit, in_use = self._limit(name)
            kept: deque[AsyncEvent] = deque()
            while events:
                event = events.popleft()
                age = now - event.received
                if limit == 0:  # reserved concurrency 0: straight to the destination
                    self._give_up(event, "ZeroReservedConcurrency")
                elif age > event.invocation.max_event_age:
                    self._give_up(event, "EventAgeExceeded")
                elif event.ready_at > now:
                    wake = min(wake, event.ready_at - now)
                    kept.append(event)
                elif in_use() < limit:
                    self._running[name] = self._running.get(name, 0) + 1
                    peak = max(self.peak_concurrency.get(name, 0), self._running[name])
                    self.peak_concurrency[name] = peak
                    threading.Thread(target=self._attempt, args=(event,), daemon=True,
                                     name=f"lambda-{name}").start()
                else:
                    if not event.throttled:
                        event.throttled = True
                        self.throttles += 1
                    kept.append(event)
                    wake = min(wake, event.invocation.max_event_age - age)
            self._queues[name] = kept
        return max(wake, 0.01)

    def _attempt(self, event: AsyncEvent) -> None:
        invocation = event.invocation
        name = invocation.function_name
        try:
            ok = self._run_once(invocation, event.attempts, event)
        except Exception:  # noqa: BLE001 - a bug here must not lose the event
            log.exception("local Lambda runtime failed to run %s", name)
            ok = False
        with self._changed:
            self._running[name] -= 1
            event.attempts += 1
            retries = invocation.max_retry_attempts
            retries = self.retries if retries is None else retries
            if ok or self._closed:
                self._settle(event)
            elif event.attempts <= retries:
                delay = self.retry_delays[min(event.attempts - 1, len(self.retry_delays) - 1)]
                event.ready_at = time.monotonic() + delay
                self._queues.setdefault(name, deque()).append(event)
            else:
                self._give_up(event, "RetriesExhausted")
            self._changed.notify_all()

    def _settle(self, event: AsyncEvent) -> None:
        self._pending -= 1
        event.future.set_result(None)
        self._changed.notify_all()

    def _give_up(self, event: AsyncEvent, condition: str) -> None:
        """Lambda discards the event, sending its invocation record to OnFailure if set."""
        self.failures += 1
        invocation = event.invocation
        if invocation.on_failure:
            # Written outside the lock: it is an HTTP call to the S3 stand-in.
            threading.Thread(target=self._send_to_destination, args=(event, condition),
                             daemon=True).start()
        else:
            log.warning("Dropped an event of %s (%s, no on-failure destination)",
                        invocation.function_name, condition)
            self._settle(event)

    def _send_to_destination(self, event: AsyncEvent, condition: str) -> None:
        invocation = event.invocation
        try:
            bucket, key, body = destination_record(event, condition)
            if self.put_object is None:
                raise RuntimeError("no S3 writer configured for on-failure destinations")
            self.put_object(bucket, key, body, invocation.function_arn)
            with self._lock:
                self.destination_records += 1
        except Exception:  # noqa: BLE001 - DestinationDeliveryFailures on AWS
            log.exception("Could not deliver a failed event of %s to %s",
                          invocation.function_name, invocation.on_failure)
        with self._changed:
            self._settle(event)

    # -- workers ------------------------------------------------------------------------------
    def _retire_idle_workers(self) -> None:
        now = time.monotonic()
        for name, idle in self._idle.items():
            keep = []
            for worker in idle:
                stale = (worker.key != self._latest_key.get(name)
                         or now - worker.created > self.max_worker_seconds)
                if stale or not worker.alive or now - worker.last_used > self.idle_seconds:
                    threading.Thread(target=worker.kill, daemon=True).start()
                else:
                    keep.append(worker)
            idle[:] = keep

    def _acquire(self, invocation: Invocation) -> Worker | None:
        """An idle worker with this code and configuration, else None (a cold start)."""
        with self._lock:
            idle = self._idle.setdefault(invocation.function_name, [])
            while idle:
                worker = idle.pop()  # most recently used first, as Lambda tends to
                young = time.monotonic() - worker.created <= self.max_worker_seconds
                if worker.key == invocation.config_key and worker.alive and young:
                    self._busy.add(worker)
                    return worker
                threading.Thread(target=worker.kill, daemon=True).start()
        return None

    def _release(self, worker: Worker, reusable: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            worker.last_used = time.monotonic()
            keep = (reusable and worker.alive and not self._closed
                    and worker.key == self._latest_key.get(worker.function_name))
            if keep:
                self._idle.setdefault(worker.function_name, []).append(worker)
        if not keep:
            worker.kill()

    def _code_dir(self, invocation: Invocation) -> Path:
        target = self.work_dir / "code" / invocation.code_sha256[:16]
        with self._lock:
            if not target.is_dir():
                tmp = target.with_suffix(".tmp")
                with zipfile.ZipFile(io.BytesIO(invocation.code)) as archive:
                    archive.extractall(tmp)
                tmp.rename(target)
        return target

    def worker_environment(self, invocation: Invocation, stream: str) -> dict[str, str]:
        """What a worker process sees: Lambda's reserved variables over the function's own."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **self.aws_environment,
            **invocation.environment,
            # After the function's own: on AWS these names are reserved for the role's session.
            **(self.credentials(invocation.function_arn) if self.credentials else {}),
            "_HANDLER": invocation.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{invocation.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": invocation.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(invocation.memory),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(invocation.timeout),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{invocation.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "VT_LOCAL_FUNCTION_ARN": invocation.function_arn,
            "PYTHONUNBUFFERED": "1",
        }

    def _start_worker(self, invocation: Invocation) -> tuple[Worker, list[str], Outcome | None]:
        """A cold start: a new worker and its init phase. Returns the init's log lines."""
        code_dir = self._code_dir(invocation)
        with self._lock:
            self._workers_started += 1
            number = self._workers_started
            self.cold_starts += 1
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        env = self.worker_environment(invocation, stream)
        env["LAMBDA_TASK_ROOT"] = str(code_dir)
        worker = Worker(invocation, code_dir, env, number, self.work_dir / "tmp")
        with self._lock:
            self._busy.add(worker)
        ready = worker.wait_ready(max(10.0, float(invocation.timeout)))
        lines = [f"INIT_START Runtime Version: {invocation.runtime.replace('python', 'python:')}"
                 f".local\tRuntime Version ARN: local"]
        lines += worker.take_lines() if isinstance(ready, dict) else worker.take_lines(wait=0.1)
        if not isinstance(ready, dict) or "ready" not in ready:
            if ready == "oom":
                error = {"errorType": OUT_OF_MEMORY, "errorMessage": f"Error: {KILLED}"}
                lines += [error["errorMessage"], OUT_OF_MEMORY]
            else:
                error = (ready if isinstance(ready, dict) else {}).get("init_error") or {
                    "errorMessage": "the runtime exited or timed out during init",
                    "errorType": "Runtime.ExitError"}
            return worker, lines, Outcome(False, error=error, status="init_error")
        worker.init_ms = float(ready["ready"])
        return worker, lines, None

    def _run_once(self, invocation: Invocation, attempt: int,
                  event: AsyncEvent | None = None, seen: list[Outcome] | None = None) -> bool:
        """One invocation on a warm worker, or on a new one. True when the handler returned.
        ``seen`` receives the Outcome (a synchronous invoke returns its result)."""
        request_id = event.request_id if event else str(uuid.uuid4())
        with self._lock:
            if self._closed:
                return True
            self.invocations += 1
        worker = self._acquire(invocation)
        lines: list[str] = []
        outcome: Outcome | None = None
        if worker is None:
            worker, lines, outcome = self._start_worker(invocation)
        started = time.monotonic()
        answer: dict[str, Any] = {}
        if outcome is None:
            got = worker.invoke(request_id, invocation.event, invocation.timeout)
            if got == "timeout":
                outcome = Outcome(False, status="timeout", error={
                    "errorMessage": f"Task timed out after {invocation.timeout:.2f} seconds",
                    "errorType": "Sandbox.Timedout"})
                worker.kill()  # only this environment; the others carry on
                with self._lock:
                    self.timeouts += 1
            elif got == "oom":
                outcome = Outcome(False, status="error", error=out_of_memory_error(request_id))
                answer = {"max_memory_mb": invocation.memory}  # Lambda: the size it stopped at
                with self._lock:
                    self.out_of_memory += 1
            elif got == "exited":
                worker.kill()
                outcome = Outcome(False, status="error", error={
                    "errorMessage": "Runtime exited with error: "
                                    f"{exit_description(worker.process.returncode)}",
                    "errorType": "Runtime.ExitError"})
            else:
                answer = got  # type: ignore[assignment]
                outcome = (Outcome(True, result=answer.get("result")) if answer["ok"] else
                           Outcome(False, error=answer.get("error"), status="error"))
        elapsed_ms = (time.monotonic() - started) * 1000
        body = worker.take_lines(wait=0.5 if outcome.status == "ok" else 0.1)
        if event is not None:
            event.last_error = None if outcome.ok else outcome.error
        self._write_log(invocation, worker, request_id, attempt, lines, body, outcome,
                        answer.get("duration_ms", elapsed_ms), answer.get("max_memory_mb"))
        self._release(worker, reusable=outcome.status in ("ok", "error"))
        if seen is not None:
            seen.append(outcome)
        return outcome.ok

    def _write_log(
        self, invocation: Invocation, worker: Worker, request_id: str, attempt: int,
        init_lines: list[str], lines: list[str], outcome: Outcome, duration_ms: float,
        max_memory_mb: int | None,
    ) -> None:
        block = list(init_lines)
        block.append(f"START RequestId: {request_id} Version: $LATEST")
        block += lines
        if outcome.status == "timeout":
            block.append(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z "
                         f"{request_id} Task timed out after {invocation.timeout:.2f} seconds")
        elif outcome.status == "error" and (outcome.error or {}).get("errorType") == (
                OUT_OF_MEMORY):
            block += [outcome.error["errorMessage"], OUT_OF_MEMORY]  # as Lambda logs it
        block.append(f"END RequestId: {request_id}")
        report = (f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
                  f"Billed Duration: {int(duration_ms) + 1} ms\t"
                  f"Memory Size: {invocation.memory} MB\t"
                  f"Max Memory Used: {max_memory_mb or 0} MB")
        if worker.init_ms is not None and not worker.init_reported:
            worker.init_reported = True
            report += f"\tInit Duration: {worker.init_ms:.2f} ms"
        if outcome.status != "ok":
            report += f"\tStatus: {outcome.status}"
            if outcome.error:
                report += f"\tError Type: {outcome.error.get('errorType')}"
        if attempt:
            report += f"\tAttempt: {attempt + 1}"
        block.append(report)
        with self._lock, self.log_path(invocation.function_name).open("a") as handle:
            handle.write("\n".join(block) + "\n")


def _event_invoke_config(function: Any) -> dict[str, Any]:
    configs = getattr(function, "event_invoke_config", None) or []
    return dict(configs[-1].config) if configs else {}


def destination_record(event: AsyncEvent, condition: str) -> tuple[str, str, bytes]:
    """Lambda's invocation record for an event given up, and where an S3 destination keeps it.

    The record's shape and the key (``aws/lambda/async/<function>/YYYY/MM/DD/
    YYYY-MM-DDTHH.MM.SS-<uuid>``) follow AWS's "Capturing records of Lambda asynchronous
    invocations".
    """
    invocation = event.invocation
    arn = invocation.on_failure or ""
    if not arn.startswith("arn:") or ":s3:::" not in arn:
        raise ValueError(f"local mode delivers on-failure records to S3 buckets only: {arn}")
    bucket = arn.split(":::", 1)[1]
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": f"{invocation.function_arn}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": event.attempts,
        },
        "requestPayload": invocation.event,
    }
    if event.last_error is not None:
        record["responseContext"] = {
            "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
        record["responsePayload"] = event.last_error
    key = (f"{DESTINATION_PREFIX}{invocation.function_name}/{now:%Y/%m/%d}/"
           f"{now:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}")
    return bucket, key, json.dumps(record).encode()
