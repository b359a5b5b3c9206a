# ruff: noqa: F811 - the fixtures imported from test_handler are redefined as arguments
"""The handler under the SDK an older Lambda runtime bundles: boto3/botocore 1.34.145.

That botocore has no PutObject IfMatch/IfNoneMatch (1.35.69 / 1.35.2), so every conditional
result write used to fail with ParamValidationError and no photo got a record. The SDK is
installed once per session (pip --target, under pytest's tmp_path_factory) and the handler runs
in subprocesses with it first on PYTHONPATH, against moto's server and the local model server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_handler import (  # noqa: F401 - fixtures
    RecordingServer,
    bucket,
    event_for,
    fetched,
    image_bytes,
    photo_jpeg,
    result,
    s3,
    server,
)

ROOT = Path(__file__).resolve().parent.parent
OLD = "1.34.145"

_RUNNER = """
import json, sys
import botocore, lambda_code
assert botocore.__version__ == sys.argv[2], botocore.__version__
event = json.loads(open(sys.argv[1]).read())
print(json.dumps(lambda_code.lambda_handler(event, None)))
"""


@pytest.fixture(scope="session")
def old_sdk(tmp_path_factory: pytest.TempPathFactory) -> Any:
    target = tmp_path_factory.mktemp("boto3-1.34")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-warn-conflicts", "--target", str(target), f"boto3=={OLD}", f"botocore=={OLD}"],
        capture_output=True, text=True, timeout=180,
    )
    if done.returncode != 0:
        if any(w in done.stderr for w in ("Could not find a version", "connection", "Network",
                                          "Temporary failure", "No matching distribution")):
            pytest.skip(f"pip cannot reach the package index for boto3=={OLD}: "
                        f"{done.stderr.strip()[-300:]}")
        raise AssertionError(done.stderr)
    yield target
    import shutil

    shutil.rmtree(target, ignore_errors=True)


def run_old(sdk: Path, event: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"event-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(event))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(sdk), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", _RUNNER, str(path), OLD], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_old(sdk: Path, event: dict[str, Any], tmp_path: Path) -> subprocess.Popen:
    path = tmp_path / f"event-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(event))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(sdk), str(ROOT)])}
    return subprocess.Popen([sys.executable, "-c", _RUNNER, str(path), OLD], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("transport", ["url", "data-uri"])
def test_handler_on_botocore_1_34(
    old_sdk: Path, s3: Any, bucket: str, server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, transport: str,
    reliability_tally: dict[str, Any],
) -> None:
    monkeypatch.setenv("IMAGE_TRANSPORT", transport)
    # The first upload gets one ok record...
    s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=photo_jpeg())
    first = event_for(bucket, s3, "input/a.jpg")
    assert run_old(old_sdk, first, tmp_path)["records"][0]["status"] == "ok"
    body = result(s3, bucket, "output/a.jpg.json")
    assert body["status"] == "ok" and body["input"]["etag"] == first["Records"][0]["s3"][
        "object"]["eTag"]
    # ...a redelivery of the same event makes no second model call...
    assert run_old(old_sdk, first, tmp_path)["records"][0]["status"] == "duplicate"
    assert len(server.calls) == 1

    # ...and a newer upload's record is not overwritten by an older upload's slow answer.
    s3.put_object(Bucket=bucket, Key="input/b.jpg", Body=photo_jpeg())
    older = event_for(bucket, s3, "input/b.jpg")
    server.faults.delay(3.0, n=1)
    slow = start_old(old_sdk, older, tmp_path)
    until = time.monotonic() + 30
    while len(server.requests) < 2 and time.monotonic() < until:
        time.sleep(0.05)
    assert len(server.requests) == 2 and slow.poll() is None  # waiting for the model
    s3.put_object(Bucket=bucket, Key="input/b.jpg", Body=image_bytes("PNG", (90, 60)))
    newer = event_for(bucket, s3, "input/b.jpg")
    assert run_old(old_sdk, newer, tmp_path)["records"][0]["status"] == "ok"
    out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["records"][0]["status"] == "superseded"
    body = result(s3, bucket, "output/b.jpg.json")
    assert body["image"]["format"] == "png"
    assert body["input"]["etag"] == newer["Records"][0]["s3"]["object"]["eTag"]
    assert run_old(old_sdk, newer, tmp_path)["records"][0]["status"] == "duplicate"
    assert len(server.calls) == 3
    # Three uploads of two keys: one record per key, for its latest upload; nothing lost.
    reliability_tally["photos"] += 3
    reliability_tally["lines"].append(
        f"old SDK (botocore {OLD}, {transport}): 3 uploads of 2 keys, 2 records (the "
        f"replaced upload superseded), redeliveries without model calls, 0 lost")
