"""The local Lambda service behaves like Lambda's execution model (warm environments).

Each test here would fail on a runtime that starts a process per invocation: module state
survives between invocations of one worker, a configuration change reaches the next
invocation, a timeout kills only that worker, the concurrency limit holds, and events that
still fail go to the on-failure destination as Lambda's invocation record.
The handlers are small zips made here; they report through files in a folder the event names.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from visual_tourism.local.lambda_runtime import Invocation, LambdaRuntime

HANDLER = '''
import json, os, time, pathlib
CALLS = 0                      # module state: lives as long as the execution environment
BOOTED = time.time()
print("init of", os.environ["AWS_LAMBDA_FUNCTION_NAME"])

def handler(event, context):
    global CALLS
    CALLS += 1
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("fail"):
        raise RuntimeError("asked to fail: " + event["fail"])
    out = pathlib.Path(event["out"])
    out.write_text(json.dumps({
        "pid": os.getpid(), "calls": CALLS, "greeting": os.environ.get("GREETING"),
        "request_id": context.aws_request_id, "id": event.get("id"),
        "remaining_ms": context.get_remaining_time_in_millis(),
    }))
    print("handled", event.get("id"))
    return {"ok": True}
'''


def make_zip(source: str = HANDLER) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("fn.py", (1980, 1, 1, 0, 0, 0)), source)
    return buffer.getvalue()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LambdaRuntime]:
    written: dict[str, bytes] = {}
    rt = LambdaRuntime(tmp_path / "rt", {}, max_concurrency=4, retry_delays=(0.05,),
                       put_object=lambda bucket, key, body, arn: written.__setitem__(
                           f"{bucket}/{key}", body))
    rt.written = written  # type: ignore[attr-defined]
    yield rt
    rt.stop()


def invocation(event: dict[str, Any], **changes: Any) -> Invocation:
    settings: dict[str, Any] = {
        "function_name": "fn", "function_arn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
        "handler": "fn.handler", "timeout": 30, "memory": 128,
        "environment": {"GREETING": "hello"}, "code": make_zip(), "event": event,
        **changes}
    return Invocation(**settings)


def run(rt: LambdaRuntime, tmp_path: Path, name: str, **changes: Any) -> dict[str, Any]:
    """One asynchronous invocation, waited for; what the handler wrote."""
    out = tmp_path / f"{name}.json"
    event = {"out": str(out), "id": name, **changes.pop("event", {})}
    rt.submit(invocation(event, **changes)).result(timeout=60)
    return json.loads(out.read_text()) if out.exists() else {}


def test_a_warm_worker_keeps_module_state_and_reports_init_once(runtime, tmp_path):
    first = run(runtime, tmp_path, "a")
    second = run(runtime, tmp_path, "b")
    assert second["pid"] == first["pid"], "the second invocation reused the environment"
    assert (first["calls"], second["calls"]) == (1, 2)
    assert first["request_id"] != second["request_id"]
    assert runtime.cold_starts == 1 and runtime.invocations == 2
    assert 0 < second["remaining_ms"] <= 30_000

    log = runtime.log_path("fn").read_text().splitlines()
    assert [line.split(" ")[0] for line in log if not line.startswith(("init", "handled"))] == [
        "INIT_START", "START", "END", "REPORT", "START", "END", "REPORT"]
    reports = [line for line in log if line.startswith("REPORT")]
    assert "Init Duration:" in reports[0] and "Init Duration:" not in reports[1]
    assert f"REPORT RequestId: {first['request_id']}\tDuration: " in reports[0]
    assert "Billed Duration:" in reports[0] and "Max Memory Used:" in reports[0]
    # The init's print comes after INIT_START, the handler's inside its START/END.
    assert log.index("init of fn") == 1
    start = log.index(f"START RequestId: {second['request_id']} Version: $LATEST")
    assert log[start + 1] == "handled b"


def test_a_configuration_or_code_change_reaches_the_next_invocation(runtime, tmp_path):
    first = run(runtime, tmp_path, "a")
    changed = run(runtime, tmp_path, "b", environment={"GREETING": "bonjour"})
    assert changed["greeting"] == "bonjour" and changed["pid"] != first["pid"]
    assert changed["calls"] == 1, "a new environment, not the old one with new variables"
    new_code = make_zip(HANDLER.replace('"greeting": os.environ.get("GREETING")',
                                        '"greeting": "v2"'))
    updated = run(runtime, tmp_path, "c", environment={"GREETING": "bonjour"}, code=new_code)
    assert updated["greeting"] == "v2" and updated["pid"] != changed["pid"]
    timeout_changed = run(runtime, tmp_path, "d", environment={"GREETING": "bonjour"},
                          code=new_code, timeout=31)
    assert timeout_changed["pid"] != updated["pid"]
    assert runtime.cold_starts == 4
    deadline = time.monotonic() + 60  # the superseded workers are retired, not kept
    while runtime.workers("fn")["idle"] > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.workers("fn") == {"idle": 1, "busy": 0}


def test_a_timeout_kills_only_that_worker(runtime, tmp_path):
    # Two warm workers: one runs into the timeout while the other keeps serving.
    slow_out = tmp_path / "slow.json"
    # The timeout is long enough for the quick invocations on a busy machine; the stuck one
    # sleeps far past it.
    stuck = runtime.submit(invocation({"out": str(slow_out), "sleep": 120}, timeout=5,
                                      max_retry_attempts=0))
    deadline = time.monotonic() + 60
    while not runtime.workers("fn")["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)  # until the stuck one holds its worker
    assert runtime.workers("fn")["busy"] == 1
    other = run(runtime, tmp_path, "other", timeout=5)
    again = run(runtime, tmp_path, "again", timeout=5)
    assert again["pid"] == other["pid"] and again["calls"] == other["calls"] + 1
    stuck.result(timeout=60)
    assert not slow_out.exists()
    assert runtime.timeouts == 1 and runtime.failures == 1
    log = runtime.log_path("fn").read_text()
    assert "Task timed out after 5.00 seconds" in log and "Status: timeout" in log
    after = run(runtime, tmp_path, "after", timeout=5)
    assert after["pid"] == other["pid"], "the surviving worker still serves"


def test_concurrency_is_capped_by_reserved_concurrency_and_nothing_is_lost(runtime, tmp_path):
    runs = [runtime.submit(invocation({"out": str(tmp_path / f"{n}.json"), "sleep": 0.3},
                                      reserved_concurrency=2)) for n in range(8)]
    for future in runs:
        future.result(timeout=60)
    assert all((tmp_path / f"{n}.json").exists() for n in range(8))
    assert runtime.peak_concurrency["fn"] == 2
    assert runtime.cold_starts == 2, "two environments served all eight events"
    assert runtime.throttles >= 5


def test_failed_events_are_retried_then_recorded_at_the_destination(runtime, tmp_path):
    bucket_arn = "arn:aws:s3:::my-bucket"
    event = {"out": str(tmp_path / "x.json"), "fail": "model down", "id": "photo-1"}
    runtime.submit(invocation(event, max_retry_attempts=1, on_failure=bucket_arn)).result(60)
    assert runtime.invocations == 2 and runtime.failures == 1
    (key, body), = runtime.written.items()
    assert key.startswith("my-bucket/aws/lambda/async/fn/")
    record = json.loads(body)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestContext"]["functionArn"].endswith("function:fn:$LATEST")
    assert record["requestPayload"] == event
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert "model down" in record["responsePayload"]["errorMessage"]


def test_reserved_concurrency_zero_and_old_events_go_to_the_destination(runtime, tmp_path):
    bucket_arn = "arn:aws:s3:::b"
    runtime.submit(invocation({"out": str(tmp_path / "z.json")}, reserved_concurrency=0,
                              on_failure=bucket_arn)).result(30)
    assert runtime.invocations == 0
    # An event that waits past its maximum age behind a busy worker is given up.
    busy = runtime.submit(invocation({"out": str(tmp_path / "busy.json"), "sleep": 1.5},
                                     reserved_concurrency=1, on_failure=bucket_arn))
    late = invocation({"out": str(tmp_path / "late.json")}, reserved_concurrency=1,
                      on_failure=bucket_arn, max_event_age=1)
    runtime.submit(late).result(30)
    busy.result(30)
    assert not (tmp_path / "late.json").exists()
    conditions = sorted(json.loads(b)["requestContext"]["condition"]
                        for b in runtime.written.values())
    assert conditions == ["EventAgeExceeded", "ZeroReservedConcurrency"]


@pytest.mark.parametrize("limit", ["idle_seconds", "max_worker_seconds"])
def test_idle_and_old_workers_are_retired(tmp_path, limit):
    rt = LambdaRuntime(tmp_path / "rt", {}, **{limit: 0.2})
    try:
        first = run(rt, tmp_path, "a")
        deadline = time.monotonic() + 60
        while rt.workers("fn")["idle"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rt.workers("fn")["idle"] == 0
        second = run(rt, tmp_path, "b")
        assert second["pid"] != first["pid"] and rt.cold_starts == 2
    finally:
        rt.stop()


def test_a_crashing_worker_is_replaced(runtime, tmp_path):
    crash = HANDLER.replace("    global CALLS", "    global CALLS\n"
                            "    if event.get('exit'): os._exit(3)")
    code = make_zip(crash)
    first = run(runtime, tmp_path, "a", code=code)
    runtime.submit(invocation({"out": "-", "exit": True}, code=code,
                              max_retry_attempts=0)).result(30)
    after = run(runtime, tmp_path, "b", code=code)
    assert after["pid"] != first["pid"] and after["calls"] == 1
    assert "Error Type: Runtime.ExitError" in runtime.log_path("fn").read_text()


def test_events_arrive_while_others_run(runtime, tmp_path):
    """Many submitters at once: every event runs exactly once, on at most 4 workers."""
    outs = [tmp_path / f"m{n}.json" for n in range(24)]
    threads = [threading.Thread(target=lambda o=o: runtime.submit(
        invocation({"out": str(o), "id": o.stem}))) for o in outs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert runtime.wait_idle(60)
    records = [json.loads(o.read_text()) for o in outs]
    assert sorted(r["id"] for r in records) == sorted(o.stem for o in outs)
    assert len({r["pid"] for r in records}) <= 4 and runtime.cold_starts <= 4
    assert runtime.invocations == 24


TMP_HANDLER = '''
import json, os, pathlib, tempfile

def handler(event, context):
    tmp = pathlib.Path(tempfile.gettempdir())
    note = tmp / "note.txt"
    seen = note.read_text() if note.exists() else None
    note.write_text(event["id"])
    pathlib.Path(event["out"]).write_text(json.dumps(
        {"pid": os.getpid(), "tmp": str(tmp), "seen": seen}))
    if event.get("sleep"):
        import time; time.sleep(event["sleep"])
    return {"ok": True}
'''


def test_each_environment_has_its_own_tmp_kept_between_invocations_and_removed_with_it(
        runtime, tmp_path):
    code = make_zip(TMP_HANDLER)
    first = run(runtime, tmp_path, "a", code=code)
    second = run(runtime, tmp_path, "b", code=code)
    assert second["pid"] == first["pid"] and second["tmp"] == first["tmp"]
    assert second["seen"] == "a", "/tmp survives between invocations of one environment"
    assert Path(first["tmp"]).is_relative_to(tmp_path / "rt")  # not the machine's /tmp

    # Two at once: two environments, each with its own /tmp.
    outs = [tmp_path / f"p{n}.json" for n in range(2)]
    futures = [runtime.submit(invocation({"out": str(out), "id": f"p{n}", "sleep": 0.5},
                                         code=code)) for n, out in enumerate(outs)]
    for future in futures:
        future.result(timeout=60)
    seen = [json.loads(out.read_text()) for out in outs]
    assert len({s["pid"] for s in seen}) == 2 and len({s["tmp"] for s in seen}) == 2

    runtime.stop()
    assert not any(Path(s["tmp"]).exists() for s in [first, *seen]), "gone with the worker"


MEMORY_HANDLER = '''
import json, os, pathlib, time
CALLS = 0

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

def handler(event, context):
    global CALLS
    CALLS += 1
    block = b"\\x01" * (event.get("allocate_mb", 0) * 1024 * 1024)  # touched: resident
    if event.get("sleep"):
        time.sleep(event["sleep"])
    del block
    pathlib.Path(event["out"]).write_text(json.dumps(
        {"pid": os.getpid(), "calls": CALLS, "peak_kib": peak_kib()}))
    return {"ok": True}
'''


def _reports(rt: LambdaRuntime) -> list[str]:
    return [line for line in rt.log_path("fn").read_text().splitlines()
            if line.startswith("REPORT")]


def _max_memory_used(report: str) -> int:
    return int(report.split("Max Memory Used: ")[1].split(" MB")[0])


def test_report_gives_the_workers_own_peak_memory_of_each_invocation(runtime, tmp_path):
    # The parent (this process) holds 300 MB. A child's ru_maxrss starts from its parent's
    # size, so a report read from it would say 300+ MB for a worker of a few tens of MB.
    ballast = b"\x01" * (300 * 1024 * 1024)
    code = make_zip(MEMORY_HANDLER)
    big = run(runtime, tmp_path, "big", code=code, memory=512, event={"allocate_mb": 80})
    small = run(runtime, tmp_path, "small", code=code, memory=512)
    assert small["pid"] == big["pid"], "one warm worker served both"
    first, second = (_max_memory_used(r) for r in _reports(runtime))
    # The worker's own peak (VmHWM as the handler saw it), not its parent's size.
    assert abs(first - big["peak_kib"] // 1024) <= 8, (first, big["peak_kib"])
    assert first >= 80 and first < 250
    # Each invocation's own peak: the 80 MB of the first are not carried into the second.
    assert second <= first - 60, (first, second)
    assert abs(second - small["peak_kib"] // 1024) <= 8
    del ballast


def test_a_worker_over_its_memory_size_fails_like_lambda_and_is_replaced(runtime, tmp_path):
    code = make_zip(MEMORY_HANDLER)
    first = run(runtime, tmp_path, "a", code=code, memory=128)
    out = tmp_path / "oom.json"
    # It allocates 200 MB in a 128 MB function, then would sleep: it is killed while it runs.
    outcome = runtime.invoke_sync(invocation({"out": str(out), "allocate_mb": 200,
                                              "sleep": 30}, code=code, memory=128))
    assert not outcome.ok and not out.exists(), "killed before the handler went on"
    assert outcome.error["errorType"] == "Runtime.OutOfMemory"
    assert outcome.error["errorMessage"].endswith(
        "Error: Runtime exited with error: signal: killed")
    log = runtime.log_path("fn").read_text()
    assert "Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory\nEND" in log
    report = _reports(runtime)[-1]
    assert "Status: error\tError Type: Runtime.OutOfMemory" in report
    assert _max_memory_used(report) == 128, "Lambda reports the memory size it stopped at"
    # The next invocation gets a fresh environment.
    after = run(runtime, tmp_path, "b", code=code, memory=128)
    assert after["pid"] != first["pid"] and after["calls"] == 1


def test_a_short_spike_over_the_memory_size_also_fails(runtime, tmp_path):
    """Allocated and freed between two looks of the watchdog: the peak still counts."""
    code = make_zip(MEMORY_HANDLER)
    event = {"out": str(tmp_path / "spike.json"), "allocate_mb": 200}
    outcome = runtime.invoke_sync(invocation(event, code=code, memory=128))
    assert not outcome.ok and outcome.error["errorType"] == "Runtime.OutOfMemory"
    # Asynchronous events that run out of memory are retried, then given up, like errors.
    runtime.submit(invocation(event, code=code, memory=128, max_retry_attempts=1)).result(60)
    assert runtime.failures == 1
    assert log_count(runtime, "Error Type: Runtime.OutOfMemory") == 3


def log_count(rt: LambdaRuntime, text: str) -> int:
    return rt.log_path("fn").read_text().count(text)


def test_an_init_over_the_memory_size_fails_like_lambda(runtime, tmp_path):
    """Module-level code (the init phase) counts too: the environment never becomes ready."""
    code = make_zip("BLOCK = b'\\x01' * (200 * 1024 * 1024)\n" + MEMORY_HANDLER)
    outcome = runtime.invoke_sync(invocation({"out": str(tmp_path / "x.json")}, code=code,
                                             memory=128))
    assert not outcome.ok and outcome.status == "init_error"
    assert outcome.error["errorType"] == "Runtime.OutOfMemory"
    log = runtime.log_path("fn").read_text()
    assert "Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory" in log
    assert runtime.workers("fn") == {"idle": 0, "busy": 0}
