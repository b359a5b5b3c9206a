"""Local Lambda service: runs functions that moto has stored when S3 notifies them.

What it keeps of Lambda's behaviour for an S3 (asynchronous) invocation: the upload does not
wait; each invocation runs the deployed zip in a separate process with the function's
environment variables, a context whose remaining time counts down from the function's
timeout, and is killed at the timeout; a failed invocation is retried twice with a delay; the
number of concurrent invocations is bounded (extra events queue, none are dropped); log lines
go to one file per function, with START/END/REPORT lines like CloudWatch's.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import lambda_worker

log = logging.getLogger(__name__)


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


class LambdaRuntime:
    def __init__(
        self,
        work_dir: Path,
        aws_environment: Mapping[str, str],
        max_concurrency: int = 4,
        retries: int = 2,
        retry_delays: tuple[float, ...] = (1.0, 2.0),
        credentials: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.logs_dir = work_dir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.aws_environment = dict(aws_environment)
        # function ARN -> its execution role's temporary credentials (local.credentials)
        self.credentials = credentials
        self.retries = retries
        self.retry_delays = retry_delays
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="lambda")
        self._lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        self._processes: set[subprocess.Popen[bytes]] = set()
        self.invocations = 0  # processes started, retries included
        self.failures = 0  # invocations that still failed after their retries
        self._closed = False

    # -- the hook moto calls ------------------------------------------------------------
    def invoke_from_moto(self, function: Any, event: Any) -> tuple[str, bool, str]:
        """Replaces moto's ``LambdaFunction._invoke_lambda``: queue and return at once."""
        invocation = Invocation(
            function_name=function.function_name,
            function_arn=function.function_arn,
            handler=function.handler,
            timeout=int(function.timeout),
            memory=int(function.memory_size),
            environment=dict(function.environment_vars or {}),
            code=bytes(function.code_bytes),
            event=event if not isinstance(event, str) else json.loads(event),
        )
        self.submit(invocation)
        return "", False, ""

    def submit(self, invocation: Invocation) -> Future[None]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the local Lambda runtime is stopped")
            future = self._pool.submit(self._run_with_retries, invocation)
            self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued invocation (and its retries) has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                return True
            pending[0].exception(timeout=max(0.0, deadline - time.monotonic()))
        return False

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            for process in list(self._processes):
                process.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def log_path(self, function_name: str) -> Path:
        return self.logs_dir / f"{function_name}.log"

    # -- one invocation -------------------------------------------------------------------
    def _run_with_retries(self, invocation: Invocation) -> None:
        for attempt in range(self.retries + 1):
            if self._closed:
                return
            if self._run_once(invocation, attempt):
                return
            if attempt < self.retries:
                delay = self.retry_delays[min(attempt, len(self.retry_delays) - 1)]
                time.sleep(delay)
        with self._lock:  # invocations run on several threads
            self.failures += 1

    def _code_dir(self, invocation: Invocation) -> Path:
        digest = hashlib.sha256(invocation.code).hexdigest()[:16]
        target = self.work_dir / "code" / digest
        with self._lock:
            if not target.is_dir():
                tmp = target.with_suffix(".tmp")
                with zipfile.ZipFile(io.BytesIO(invocation.code)) as archive:
                    archive.extractall(tmp)
                tmp.rename(target)
        return target

    def _run_once(self, invocation: Invocation, attempt: int) -> bool:
        request_id = str(uuid.uuid4())
        code_dir = self._code_dir(invocation)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **self.aws_environment,
            **invocation.environment,
            # Last, so they win: on AWS these names are reserved, the role's session sets them.
            **(self.credentials(invocation.function_arn) if self.credentials else {}),
            "LAMBDA_TASK_ROOT": str(code_dir),
            "_HANDLER": invocation.handler,
            "AWS_LAMBDA_FUNCTION_NAME": invocation.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(invocation.memory),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(invocation.timeout),
            "VT_LOCAL_REQUEST_ID": request_id,
            "VT_LOCAL_FUNCTION_ARN": invocation.function_arn,
            "VT_LOCAL_DEADLINE": str(time.time() + invocation.timeout),
            "PYTHONUNBUFFERED": "1",
        }
        start = time.monotonic()
        with self._lock:
            if self._closed:
                return True
            self.invocations += 1
            process = subprocess.Popen(
                [sys.executable, "-I", lambda_worker.__file__],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, cwd=code_dir,
            )
            self._processes.add(process)
        timed_out = False
        try:
            out, err = process.communicate(
                json.dumps(invocation.event).encode(), timeout=invocation.timeout
            )
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            timed_out = True
        finally:
            with self._lock:
                self._processes.discard(process)
        elapsed_ms = (time.monotonic() - start) * 1000
        ok = process.returncode == 0 and not timed_out
        self._write_log(invocation, request_id, attempt, err, out, elapsed_ms, ok, timed_out)
        return ok

    def _write_log(
        self, invocation: Invocation, request_id: str, attempt: int, err: bytes, out: bytes,
        elapsed_ms: float, ok: bool, timed_out: bool,
    ) -> None:
        lines = [f"START RequestId: {request_id} Version: $LATEST (attempt {attempt + 1})"]
        lines += err.decode(errors="replace").rstrip().splitlines()
        if timed_out:
            lines.append(f"Task timed out after {invocation.timeout:.2f} seconds")
        elif not ok:
            lines.append(f"Invocation failed (exit {out.decode(errors='replace')[:200]!r})")
        lines.append(f"END RequestId: {request_id}")
        lines.append(
            f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms\t"
            f"Memory Size: {invocation.memory} MB\tStatus: {'ok' if ok else 'error'}"
        )
        with self._lock, self.log_path(invocation.function_name).open("a") as handle:
            handle.write("\n".join(lines) + "\n")

