"""What the benchmarks share: result rows, statistics, test photos, and the local AWS stand-in."""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visual_tourism.local.stack import environment

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
REGION = "us-east-1"
ENDPOINT = "visual-tourism-bench"
# moto accepts any credentials; nothing leaves loopback.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


@dataclass
class Row:
    """One line of the table: a measured figure against its target."""

    benchmark: str
    metric: str
    target: str  # "" when the figure is reported without a target
    measured: str
    met: bool | None  # None: no target
    value: float | None = None  # the number behind ``measured``, for the JSON
    unit: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the two nearest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine() -> dict[str, Any]:
    """What the figures were measured on; no host name or path."""
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


# -- photos ---------------------------------------------------------------------------------


# The benchmarks reuse the tests' generators (photos, the tiny model): tests/ is not a package.
sys.path.append(str(ROOT / "tests"))
from photos import twelve_megapixel_jpeg  # noqa: E402, F401 - re-exported


def photos() -> list[Path]:
    """The bundled photos except the in-context example."""
    return sorted(p for p in IMAGES.glob("*.jpeg") if p.name != "trevi.jpeg")


# -- a model that answers at once -------------------------------------------------------------


def instant_backend() -> Any:
    """A backend that answers in no time, so a benchmark measures everything but the model."""
    from visual_tourism.local.backends import Backend

    class Instant(Backend):
        name = "instant"
        description = "instant answer (benchmark, not a model)"
        thread_safe = True

        def generate(self, conversation: Any, params: Any) -> str:
            return " A fountain in Rome. A coin story. Eat nearby.<end_of_utterance>"

    return Instant()


# -- moto server + model server, for driving the handler in this process ----------------------


@dataclass
class HandlerRig:
    s3: Any
    bucket: str
    server: Any  # ModelServer
    moto_url: str


@contextmanager
def handler_rig(backend: Any, server_class: type | None = None,
                **handler_env: str) -> Iterator[HandlerRig]:
    """moto's S3 and a local model server on loopback, the handler's environment pointing at them.

    The handler runs in this process (``lambda_code.lambda_handler``), as the tests drive it.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    from photo_handler import clients
    from visual_tourism.local.model_server import ModelServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    # Images only from S3's presigned URLs, as in local mode (the server refuses other origins).
    server = (server_class or ModelServer)(backend=backend, fetch_origins=[moto_url]).start()
    try:
        bucket = f"vt-bench-{uuid.uuid4().hex[:10]}"
        variables = {
            "AWS_ENDPOINT_URL": moto_url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": server.url,
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, **FAKE_CREDENTIALS,
            "BUCKET_NAME": bucket, "ENDPOINT_NAME": ENDPOINT, **handler_env,
        }
        with environment(variables):
            s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
            s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key="example/trevi.jpeg",
                          Body=(IMAGES / "trevi.jpeg").read_bytes())
            clients._clients.clear()  # no client left over from another endpoint
            yield HandlerRig(s3, bucket, server, moto_url)
    finally:
        server.stop()
        moto.stop()


def s3_event(s3: Any, bucket: str, *keys: str) -> dict[str, Any]:
    """An ObjectCreated:Put event as S3 sends it (keys URL-encoded, size and eTag filled)."""
    from urllib.parse import quote_plus

    records = []
    for key in keys:
        head = s3.head_object(Bucket=bucket, Key=key)
        records.append({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
            "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket,
                                                        "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": quote_plus(key, safe="/"), "size": head["ContentLength"],
                              "eTag": head["ETag"].strip('"')}},
        })
    return {"Records": records}


def uploaded_events(rig: HandlerRig, pictures: Sequence[Path], prefix: str,
                    count: int) -> list[dict[str, Any]]:
    """``count`` + 2 photos uploaded under ``prefix`` (the first two runs make the boto3
    clients, so only the rest are measured) and their events."""
    keys = [f"{prefix}{i:03d} {pictures[i % len(pictures)].name}" for i in range(count + 2)]
    for number, key in enumerate(keys):
        rig.s3.put_object(Bucket=rig.bucket, Key=key,
                          Body=pictures[number % len(pictures)].read_bytes())
    return [s3_event(rig.s3, rig.bucket, key) for key in keys]


def timed_invocation(rig: HandlerRig, event: dict[str, Any],
                     operations: list[str]) -> dict[str, Any]:
    """One in-process handler run: its wall time, the model's share of it (the model
    server's own timing), the rest (the handler's overhead), the AWS calls it made and the
    record's status."""
    import lambda_code

    operations.clear()
    calls_before = len(rig.server.calls)
    started = time.perf_counter()
    summary = lambda_code.lambda_handler(event, Context())["records"][0]
    wall = time.perf_counter() - started
    model = sum(c["seconds"] for c in rig.server.calls[calls_before:])
    return {"wall": wall, "model": model, "overhead": wall - model,
            "operations": list(operations), "status": summary["status"]}


class Context:
    """Lambda's context for an in-process call: 300 s, the function's default timeout."""

    def __init__(self, seconds: float = 300.0) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class WriteClock:
    """When each object under ``prefix`` became visible in moto's S3 (monotonic seconds).

    Installed with ``moto_patches.hook_put_object``: the time is taken in the server thread
    right after the object is stored, the earliest moment any client could read it.
    """

    def __init__(self, prefix: str = "output/") -> None:
        self.prefix = prefix
        self.written: dict[str, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def after(self, bucket: str, key: str) -> None:
        if key.startswith(self.prefix):
            with self._lock:
                self.written[key] = time.monotonic()
                self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` distinct keys have been written."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.written) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True
