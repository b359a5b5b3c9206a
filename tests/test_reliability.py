"""Reliability: bad inputs and injected faults, through local mode's real trigger path.

Photos are uploaded to a stack deployed on LocalStack: the bucket notification fires, the
local Lambda service runs the deployed zip in its own process (with Lambda's two asynchronous
retries) and the handler asks the local model server. Faults are injected into the model
server (errors, throttling, answers past the timeout, dropped connections) and into the S3
writes of results. Every photo must end with exactly one result record, and no photo may cost
more model calls than the retry policy allows. What was tried is reported at the end of the
run, in the terminal summary's "reliability" section.

(`down` after a failed `up` is covered by
tests/test_stack.py::test_down_after_up_failed_at_any_step_leaves_nothing.)
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

import pytest
from PIL import Image

from photo_handler import upload as photo_upload
from visual_tourism import stack
from visual_tourism.aws import Aws
from visual_tourism.config import Config, load_config
from visual_tourism.local import moto_patches
from visual_tourism.local.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "images").glob("*.jpeg"))

# The fault run's handler settings. The handler waits MODEL_TIMEOUT_SECONDS + 5 s for one
# answer: long enough that only an injected slow answer runs past it, however busy the
# machine (a loaded machine answering late would make ordinary photos look like faults).
MAX_ATTEMPTS = 3
MODEL_TIMEOUT_SECONDS = 15
SLOW_ANSWER_SECONDS = 21  # later than that: the handler gives up on the attempt
# Sized to what the run proves (every kind of fault, on photos arriving together, loses
# nothing); the large figures (hundreds of photos) are benchmarks/burst.py's.
STORM_PHOTOS = 40
FAULT_RATE = 0.3  # share of model requests that get a fault
FAULT_KINDS = ["fail 424", "fail 500", "fail 503", "fail 429", "drop", "slow"]
MAX_SLOW_ANSWERS = 2  # each holds a Lambda slot for 20 s
WRITE_FAULTS = {3: 4, 1: 4}  # failed PutObjects in a row -> how many photos get them


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("reliability")) as running:
        yield running


@pytest.fixture
def deployed(local: LocalStack, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> Iterator[tuple[Config, Aws]]:
    """A fresh stack per test (own prefix), removed afterwards."""
    for key, value in local.env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(prefix="r" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"))
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    yield cfg, aws
    local.runtime.wait_idle(60)
    stack.down(cfg, aws, delete_bucket=True)


def photo_key_of(body: bytes, bucket: str) -> str:
    """The S3 key of the photo a model request asks about (the request's last image URL)."""
    request = json.loads(body)
    if "inputs" in request:  # tgi style: markdown images in the prompt
        url = re.findall(r"!\[\]\(([^)\s]+)\)", request["inputs"])[-1]
    else:  # messages style
        url = request["messages"][-1]["content"][-1]["image_url"]["url"]
    return unquote(urlsplit(url).path).removeprefix(f"/{bucket}/")


def count_model_calls(local: LocalStack, monkeypatch: pytest.MonkeyPatch,
                      bucket: str) -> Counter[str]:
    """Requests that reached the model server's Runtime path, per photo key (faulted or not)."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    real = local.model_server.handle_post

    def handle_post(path: str, headers: Any, body: bytes) -> Any:
        if path.startswith("/endpoints/"):
            with lock:
                calls[photo_key_of(body, bucket)] += 1
        return real(path, headers, body)

    monkeypatch.setattr(local.model_server, "handle_post", handle_post)
    return calls


def handler_log(local: LocalStack, cfg: Config, key: str) -> str:
    """The function's log lines that name ``key``: what a failed check needs to be read."""
    assert local.runtime is not None
    path = local.runtime.log_path(cfg.function_name)
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    name = key.partition("/")[2]  # in the photo's key and in its result's
    return f"{key}:\n" + "\n".join(line for line in lines if name in line)


def set_function_env(cfg: Config, aws: Aws, **extra: str) -> None:
    fn = aws.lambda_.get_function_configuration(FunctionName=cfg.function_name)
    variables = {**fn["Environment"]["Variables"], **extra}
    aws.lambda_.update_function_configuration(
        FunctionName=cfg.function_name, Environment={"Variables": variables}
    )


@dataclass
class Stored:
    record: dict[str, Any]
    metadata: dict[str, str]
    etag: str


def results(cfg: Config, aws: Aws) -> dict[str, Stored]:
    """Every object under output/ (but the folder marker), parsed."""
    bucket = cfg.bucket_name(aws.account_id)
    found = {}
    pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                             Prefix=cfg.output_prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            if obj["Key"] == cfg.output_prefix:
                continue
            got = aws.s3.get_object(Bucket=bucket, Key=obj["Key"])
            found[obj["Key"]] = Stored(json.loads(got["Body"].read()), got["Metadata"],
                                       got["ETag"])
    return found


def upload(aws: Aws, bucket: str, files: dict[str, bytes]) -> dict[str, str]:
    """Upload all at once from 10 threads (boto3's connection pool); return each ETag."""
    def put(key: str) -> str:
        return aws.s3.put_object(Bucket=bucket, Key=key, Body=files[key])["ETag"].strip('"')

    with ThreadPoolExecutor(10) as pool:
        return dict(zip(files, pool.map(put, files), strict=True))


def report(tally: dict[str, Any], line: str) -> None:
    tally["lines"].append(line)
    print(line)


# -- the bad input corpus (every file made here) ----------------------------------------------


def picture(size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A colourful gradient: compresses well, decodes in any format."""
    ramp = Image.linear_gradient("L").resize(size)
    return Image.merge("RGB", [ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                               ramp.rotate(180)])


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def exif_rotated_jpeg() -> bytes:
    """Stored 640x480; EXIF orientation 6 says: show it turned a quarter, 480x640."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(picture(), "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [picture((200, 150)).rotate(angle).convert("P") for angle in (0, 90, 180, 270)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                  loop=0)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR claiming any size; no pixels follow."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr
            + struct.pack(">I", zlib.crc32(ihdr)) + b"\x00\x00\x00\x00IDAT")


def iso_media(*brands: bytes) -> bytes:
    """The start of an ISO media file (HEIC, AVIF, MP4): an ftyp box naming its brands."""
    major, compatible = brands[0], b"".join(brands)
    box = b"ftyp" + major + b"\x00\x00\x00\x00" + compatible
    return struct.pack(">I", 4 + len(box)) + box + bytes(200)


def truncated_header_jpeg() -> bytes:
    data = encode(picture(), "JPEG")
    return data[: data.index(b"\xff\xc0")]  # cut before the frame header


def truncated_data_jpeg() -> bytes:
    data = PHOTOS[0].read_bytes()
    return data[: len(data) * 2 // 3]  # the header is whole, the picture is cut


@dataclass(frozen=True)
class Case:
    name: str  # after input/
    data: Callable[[], bytes]
    outcome: str  # "ok" or the error code
    words: str = ""  # in the answer (ok) or in the error message
    model_calls: int = 0
    final: bool = True  # the same bytes always give the same outcome


ok, jpeg = "ok", lambda: encode(picture(), "JPEG")
CORPUS = [
    Case("cut header.jpg", truncated_header_jpeg, "truncated_image", "complete photo"),
    Case("cut picture.jpg", truncated_data_jpeg, "model_rejected_input", "truncated",
         model_calls=1, final=False),
    Case("empty.jpg", lambda: b"", "empty_file", "empty"),
    Case("notes.jpg", lambda: b"Buy coins for the Trevi fountain.\n" * 40, "not_an_image",
         "photo"),
    Case("IMG_0042.HEIC", lambda: iso_media(b"heic", b"mif1"), "unsupported_format", "HEIC"),
    Case("IMG_0043.jpg", lambda: iso_media(b"heic", b"mif1"), "unsupported_format", "HEIC"),
    Case("photo.avif", lambda: iso_media(b"avif", b"mif1"), "unsupported_format", "AVIF"),
    Case("clip.jpg", lambda: iso_media(b"isom", b"iso2", b"mp41"), "not_an_image", "video"),
    Case("dot.png", lambda: encode(picture((1, 1)), "PNG"), "image_too_small", "1x1"),
    Case("gigapixel.png", lambda: png_claiming(100_000, 100_000), "image_too_large",
         "megapixel"),
    Case("cmyk.jpg", lambda: encode(picture().convert("CMYK"), "JPEG"), ok, "640x480 pixels",
         1),
    Case("rotated.jpg", exif_rotated_jpeg, ok, "portrait photo of 480x640 pixels", 1),
    Case("animated.gif", animated_gif, ok, "200x150 pixels", 1),
    Case("lossy.webp", lambda: encode(picture((400, 300)), "WEBP", quality=80), ok,
         "400x300 pixels", 1),
    Case("lossless.webp", lambda: encode(picture((300, 200)), "WEBP", lossless=True), ok,
         "300x200 pixels", 1),
    Case("old.bmp", lambda: encode(picture((120, 90)), "BMP"), ok, "120x90 pixels", 1),
    Case("really a png.jpg", lambda: encode(picture((320, 240)), "PNG"), ok, "320x240 pixels",
         1),
    Case("12 megapixels.jpg", lambda: encode(picture((4000, 3000)), "JPEG", quality=90), ok,
         "4000x3000 pixels", 1),
    Case("my holiday photo.jpg", jpeg, ok, "640x480 pixels", 1),
    Case("1+1=2.jpg", jpeg, ok, "640x480 pixels", 1),
    Case("100% Roma.jpg", jpeg, ok, "640x480 pixels", 1),
    Case("café 東京 Tōkyō.jpeg", jpeg, ok, "640x480 pixels", 1),
    Case("trip.2024.v2.final.JPG", jpeg, ok, "640x480 pixels", 1),
    Case("sub dir/IMG 0001 (copy) #2.jpeg", jpeg, ok, "640x480 pixels", 1),
]


def test_bad_input_corpus_gets_one_clear_record_each(
    deployed: tuple[Config, Aws], local: LocalStack, monkeypatch: pytest.MonkeyPatch,
    reliability_tally: dict[str, Any],
) -> None:
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    calls = count_model_calls(local, monkeypatch, bucket)
    files = {cfg.input_prefix + case.name: case.data() for case in CORPUS}
    assert len(files) == len(CORPUS)
    etags = upload(aws, bucket, files)
    assert local.runtime.wait_idle(180)

    found = results(cfg, aws)
    wanted = {stack.result_key(cfg, key): case for key, case in zip(files, CORPUS, strict=True)}
    lost = sorted(set(wanted) - set(found))
    reliability_tally["bad_inputs"] += len(CORPUS)
    reliability_tally["lost"] += len(lost)
    outcomes = Counter(case.outcome for case in CORPUS)
    report(reliability_tally, f"bad inputs: {len(CORPUS)} files ({outcomes['ok']} answered, "
           f"{len(CORPUS) - outcomes['ok']} error records), {len(lost)} lost")
    assert set(found) == set(wanted), "exactly one result per upload, nothing else"

    for out_key, case in wanted.items():
        key = cfg.input_prefix + case.name
        stored = found[out_key]
        record = stored.record
        assert record["input"]["key"] == key
        assert record["input"]["etag"] == etags[key]
        assert record["input"]["size"] == len(files[key])
        wanted_meta = {"input-etag": etags[key], "final": str(case.final).lower()}
        if files[key]:  # which upload it answers (an empty object's range read tells none)
            wanted_meta["upload"] = photo_upload.fingerprint(
                photo_upload.upload_of(aws.s3.head_object(Bucket=bucket, Key=key)))
        if "preset" in record:  # what answered it, so that another preset asks again
            preset = record["preset"]
            wanted_meta["choice"] = f"{preset['name']}@{preset['version']}:{preset['language']}"
        assert stored.metadata == wanted_meta
        if case.outcome == ok:
            assert record["status"] == "ok", (case.name, record.get("error"))
            assert case.words in record["answer"], (case.name, record["answer"])
        else:
            assert record["status"] == "error" and "answer" not in record, case.name
            assert record["error"]["code"] == case.outcome, (case.name, record["error"])
            assert case.words in record["error"]["message"], (case.name, record["error"])
        assert calls[key] == case.model_calls, case.name
    assert found[stack.result_key(cfg, "input/rotated.jpg")].record["image"] == {
        "format": "jpeg", "width": 640, "height": 480}  # as stored; the model saw it upright
    assert sum(calls.values()) == sum(case.model_calls for case in CORPUS)


# -- faults while photos are uploaded at once ---------------------------------------------------


class ModelChaos:
    """Before a share of the model requests, queue one fault for that very request.

    Wraps ``faults.take`` (called once per Runtime request) so that a fault queued here is
    the one this request takes, and counts what each request really got. The first faults
    are one of each kind (in a seeded order), so every kind is exercised however few photos
    the run has; which requests get a fault is seeded too.
    """

    def __init__(self, faults: Any, seed: int) -> None:
        self.faults, self.rng, self.on = faults, random.Random(seed), True
        self.real_take = faults.take
        self.injected: Counter[str] = Counter()
        self.taken: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.first = self.rng.sample(FAULT_KINDS, len(FAULT_KINDS))

    def take(self) -> Any:
        with self.lock:
            if self.on and (self.first or self.rng.random() < FAULT_RATE):
                kinds = [k for k in FAULT_KINDS
                         if k != "slow" or self.injected["slow"] < MAX_SLOW_ANSWERS]
                kind = self.first.pop(0) if self.first else self.rng.choice(kinds)
                if kind == "drop":
                    self.faults.drop(1)
                elif kind == "slow":
                    self.faults.delay(SLOW_ANSWER_SECONDS, n=1)
                else:
                    self.faults.fail(1, status=int(kind.split()[1]))
                self.injected[kind] += 1
            plan = self.real_take()
            if plan.delay:
                self.taken["slow"] += 1
            if plan.drop:
                self.taken["drop"] += 1
            elif plan.fail:
                self.taken[f"fail {plan.fail}"] += 1
            return plan


class WriteFaults:
    """S3 500 InternalError for the first PutObjects of chosen result keys."""

    def __init__(self, plan: dict[str, int]) -> None:
        self.left, self.injected = dict(plan), Counter[str]()
        self.lock = threading.Lock()

    def before(self, bucket: str, key: str) -> None:
        with self.lock:
            if self.left.get(key, 0) > 0:
                self.left[key] -= 1
                self.injected[key] += 1
                raise moto_patches.S3WriteFault()


def event_keys(event: dict[str, Any]) -> list[str]:
    return [unquote_plus(r["s3"]["object"]["key"]) for r in event.get("Records", [])]


@pytest.mark.timeout(420)
def test_faults_while_photos_arrive_together_lose_nothing(
    deployed: tuple[Config, Aws], local: LocalStack, monkeypatch: pytest.MonkeyPatch,
    reliability_tally: dict[str, Any],
) -> None:
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    runtime = local.runtime
    assert runtime is not None
    set_function_env(cfg, aws, MAX_ATTEMPTS=str(MAX_ATTEMPTS), RETRY_BASE_SECONDS="0.05",
                     MODEL_TIMEOUT_SECONDS=str(MODEL_TIMEOUT_SECONDS))
    monkeypatch.setattr(runtime, "retry_delays", (0.2, 0.4))  # Lambda's own are ~1 min
    failures_before, server_calls_before = runtime.failures, len(local.model_server.calls)
    rng = random.Random(7)

    keys = [f"input/storm/{n:03d} {PHOTOS[n % len(PHOTOS)].name}" for n in range(STORM_PHOTOS)]
    out = {key: stack.result_key(cfg, key) for key in keys}
    chosen = iter(rng.sample(keys, sum(WRITE_FAULTS.values())))
    write_plan = {out[next(chosen)]: times for times, count in WRITE_FAULTS.items()
                  for _ in range(count)}
    writes = WriteFaults(write_plan)
    chaos = ModelChaos(local.model_server.faults, seed=11)
    calls = count_model_calls(local, monkeypatch, bucket)
    runs: Counter[str] = Counter()  # Lambda invocations (first tries and retries) per photo
    deliveries: list[dict[str, Any]] = []  # every event the function was sent
    real_run_once, real_submit = runtime._run_once, runtime.submit

    def run_once(invocation: Any, attempt: int, *more: Any) -> bool:
        ok = real_run_once(invocation, attempt, *more)
        for key in event_keys(invocation.event):
            runs[key] += 1
        return ok

    def submit(invocation: Any) -> Any:
        deliveries.append(invocation.event)
        return real_submit(invocation)

    monkeypatch.setattr(runtime, "_run_once", run_once)
    monkeypatch.setattr(runtime, "submit", submit)
    monkeypatch.setattr(local.model_server.faults, "take", chaos.take)
    moto_patches.hook_put_object(before=writes.before)
    try:
        etags = upload(aws, bucket, {
            key: PHOTOS[n % len(PHOTOS)].read_bytes() for n, key in enumerate(keys)})
        assert runtime.wait_idle(300)
    finally:
        moto_patches.unhook_put_object()
        chaos.on = False

    found = results(cfg, aws)
    lost = [key for key in keys if out[key] not in found]
    model_faults, write_faults = sum(chaos.taken.values()), sum(writes.injected.values())
    answered = sum(1 for key in keys if out[key] in found
                   and found[out[key]].record["status"] == "ok")
    reliability_tally["photos"] += STORM_PHOTOS
    reliability_tally["faults"] += model_faults + write_faults
    reliability_tally["lost"] += len(lost)
    faults_seen = ", ".join(f"{k} x{v}" for k, v in sorted(chaos.taken.items()))
    report(reliability_tally,
           f"fault run: {STORM_PHOTOS} photos at once; model faults {model_faults} "
           f"({faults_seen}); failed S3 result writes {write_faults}; "
           f"{sum(calls.values())} model calls, {sum(runs.values())} Lambda invocations; "
           f"{answered} answered, {STORM_PHOTOS - answered - len(lost)} error records, "
           f"{len(lost)} lost")

    # Exactly one result record per photo, for this upload, and nothing else.
    assert lost == []
    assert set(found) == set(out.values())
    assert runtime.failures == failures_before  # no event dropped after Lambda's retries
    transient = set()
    for key in keys:
        stored = found[out[key]]
        assert stored.record["input"]["key"] == key
        assert stored.metadata["input-etag"] == etags[key]
        if stored.record["status"] == "ok":
            assert stored.metadata["final"] == "true"
        else:  # every attempt hit a fault: a clear record that a later delivery retries
            assert stored.record["error"]["code"] in ("model_unavailable", "model_timeout")
            assert stored.record["error"]["message"]
            assert stored.metadata["final"] == "false"
            transient.add(key)
    assert answered >= STORM_PHOTOS * 0.8

    # The faults really happened, every kind of them.
    assert chaos.taken == chaos.injected
    assert set(chaos.taken) == set(FAULT_KINDS)
    assert all(left == 0 for left in writes.left.values())
    assert write_faults == sum(times * count for times, count in WRITE_FAULTS.items())

    # No inference beyond the retry policy: MAX_ATTEMPTS per invocation, and at most
    # 1 + 2 invocations (Lambda's asynchronous retries) per upload.
    # Every request the server logged is attributed to a photo (once the slow ones the
    # handler gave up on have ended: Lambda can be idle while the server still holds them).
    assert local.model_server.wait_quiet(SLOW_ANSWER_SECONDS + 5)
    assert sum(calls.values()) == len(local.model_server.calls) - server_calls_before
    # Only a failed result write fails an invocation: three failed PutObjects in a row
    # exhaust boto3's retries and Lambda runs the event again; one is absorbed by boto3.
    rerun = {key for key in keys if write_plan.get(out[key], 0) >= 3}
    for key in keys:
        assert runs[key] <= 1 + runtime.retries, key
        assert runs[key] == (2 if key in rerun else 1), (key, runs[key])
        assert calls[key] <= MAX_ATTEMPTS * runs[key], (key, calls[key], runs[key])

    check_redeliveries_change_nothing(cfg, aws, local, keys, etags, transient, calls,
                                      deliveries, reliability_tally)


def check_redeliveries_change_nothing(
    cfg: Config, aws: Aws, local: LocalStack, keys: list[str], etags: dict[str, str],
    transient: set[str], calls: Counter[str], deliveries: list[dict[str, Any]],
    tally: dict[str, Any],
) -> None:
    """Newer uploads of some photos, then every event again, twice, newest first."""
    bucket = cfg.bucket_name(aws.account_id)
    runtime = local.runtime
    assert runtime is not None
    renewed = [key for key in keys if key not in transient][:5]
    for number, key in enumerate(renewed):  # different bytes: a new ETag, a new answer
        etags[key] = aws.s3.put_object(
            Bucket=bucket, Key=key, Body=encode(picture((300 + number, 200)), "JPEG")
        )["ETag"].strip('"')
    assert runtime.wait_idle(120)
    before = results(cfg, aws)
    for key in renewed:
        stored = before[stack.result_key(cfg, key)]
        assert stored.record["status"] == "ok" and stored.metadata["input-etag"] == etags[key]
    calls_before = Counter(calls)

    # Older events after newer ones, each event delivered twice, in batches of 25 records.
    records = [r for event in reversed(deliveries) for r in event["Records"]]
    batches = [records[i:i + 25] for i in range(0, len(records), 25)]
    for _ in range(2):
        for batch in batches:
            aws.lambda_.invoke(FunctionName=cfg.function_name, InvocationType="Event",
                               Payload=json.dumps({"Records": batch}).encode())
        assert runtime.wait_idle(120)

    after = results(cfg, aws)
    new_calls = sum(calls.values()) - sum(calls_before.values())
    report(tally, f"redelivered {2 * len(records)} event records (older after newer, "
           f"twice) after {len(renewed)} re-uploads: {new_calls} model calls, for the "
           f"{len(transient)} error records")
    assert set(after) == set(before)
    for key in keys:
        result_key = stack.result_key(cfg, key)
        if key in transient:  # not final: the redelivery tries again, once, and answers
            assert calls[key] == calls_before[key] + 1, key
            assert after[result_key].record["status"] == "ok"
            assert after[result_key].metadata["final"] == "true"
        else:  # untouched: not rewritten, no model call
            assert calls[key] == calls_before[key], handler_log(local, cfg, key)
            assert after[result_key].etag == before[result_key].etag, key
        assert after[result_key].metadata["input-etag"] == etags[key]


# -- bursts: one throttling instance, the function's concurrency capped -------------------------

# Enough photos for every path a burst takes (events throttled and queued, 429s retried, warm
# workers reused); hundreds of photos and their timings are benchmarks/burst.py's.
BURST_PHOTOS = 40


def distinct_photo(number: int) -> bytes:
    """A small JPEG whose size is its own: the stand-in's answer names that size."""
    return encode(picture((100 + number, 80)), "JPEG", quality=70)


@pytest.mark.timeout(300)
def test_a_burst_on_one_throttling_instance_loses_nothing(
    local: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    reliability_tally: dict[str, Any],
) -> None:
    for key, value in local.env.items():
        monkeypatch.setenv(key, value)
    # Reserved concurrency 1 instance x 3 requests = 3, while the instance really takes 2 at
    # once: the third request at a time gets TGI's 429 and the handler tries it again. The
    # first two requests are held in flight until a third is refused, so that happens on any
    # machine; retries back off exponentially (12 attempts, far more than the burst lasts), so
    # a photo refused again and again still gets its turn once the others are answered.
    cfg = load_config(prefix="b" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"),
                      min_instances=1, max_instances=1, requests_per_instance=3)
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    server, runtime = local.model_server, local.runtime
    assert runtime is not None
    try:
        set_function_env(cfg, aws, MAX_ATTEMPTS="12", RETRY_BASE_SECONDS="0.05",
                         MODEL_TIMEOUT_SECONDS="30")
        hold = server.faults.hold(n=2)
        refuse = server._overloaded

        def overloaded(*args: Any) -> Any:
            hold.release()
            return refuse(*args)

        monkeypatch.setattr(server, "_overloaded", overloaded)
        monkeypatch.setattr(server, "capacity", 2)
        monkeypatch.setattr(server, "service_seconds", 0.05)
        monkeypatch.setattr(server, "overloads", 0)
        monkeypatch.setattr(server, "peak_in_flight", 0)
        bucket = cfg.bucket_name(aws.account_id)
        calls = count_model_calls(local, monkeypatch, bucket)
        cold, throttles, failures = runtime.cold_starts, runtime.throttles, runtime.failures
        files = {f"{cfg.input_prefix}burst/{n:03d}.jpg": distinct_photo(n)
                 for n in range(BURST_PHOTOS)}
        etags = upload(aws, bucket, files)
        assert runtime.wait_idle(240)
        found = results(cfg, aws)
    finally:
        runtime.wait_idle(60)
        stack.down(cfg, aws, delete_bucket=True)

    lost = [key for key in files if stack.result_key(cfg, key) not in found]
    answered = sum(1 for r in found.values() if r.record["status"] == "ok")
    reliability_tally["photos"] += BURST_PHOTOS
    reliability_tally["faults"] += server.overloads
    reliability_tally["lost"] += len(lost)
    report(reliability_tally,
           f"burst: {BURST_PHOTOS} photos at once, reserved concurrency "
           f"{cfg.reserved_concurrency}, one instance taking 2 at a time: "
           f"{runtime.throttles - throttles} events throttled (waited), {server.overloads} "
           f"model 429s retried, {runtime.cold_starts - cold} cold starts, "
           f"{answered} answered, {len(lost)} lost")
    assert lost == [] and len(found) == BURST_PHOTOS
    assert answered == BURST_PHOTOS
    for n, key in enumerate(files):
        stored = found[stack.result_key(cfg, key)]
        assert stored.record["input"]["key"] == key
        assert stored.metadata["input-etag"] == etags[key]
        # Warm workers served photo after photo: each answer is about its own photo only.
        assert re.findall(r"(\d+)x(\d+) pixels", stored.record["answer"]) == [
            (str(100 + n), "80")], (key, stored.record["answer"])
    assert runtime.peak_concurrency[cfg.function_name] == cfg.reserved_concurrency == 3
    assert runtime.cold_starts - cold == 3, "three environments served the whole burst"
    assert runtime.throttles - throttles > 0
    assert runtime.failures == failures
    assert server.peak_in_flight == 2 and server.overloads > 0
    assert sum(calls.values()) == BURST_PHOTOS + server.overloads


# -- an outage, then replay ---------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_an_outage_then_replay_loses_nothing(
    deployed: tuple[Config, Aws], local: LocalStack, monkeypatch: pytest.MonkeyPatch,
    reliability_tally: dict[str, Any], capsys: pytest.CaptureFixture[str],
) -> None:
    """The model server is down; some results cannot even be written (S3 faults), so Lambda
    gives those events up to the on-failure destination. Once all is back, `replay --errors`
    answers every photo, and a second replay finds nothing to do."""
    from visual_tourism import delivery
    from visual_tourism.cli import main

    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    runtime, server = local.runtime, local.model_server
    assert runtime is not None
    # A server that is down refuses at once; once back, a busy machine's answers must not
    # run past the read timeout (MODEL_TIMEOUT_SECONDS + 5 s) and look like a new outage.
    set_function_env(cfg, aws, MAX_ATTEMPTS="2", RETRY_BASE_SECONDS="0.05",
                     MODEL_TIMEOUT_SECONDS="15")
    monkeypatch.setattr(runtime, "retry_delays", (0.1, 0.2))  # Lambda's are 1 and 2 minutes
    calls = count_model_calls(local, monkeypatch, bucket)
    photos = {f"{cfg.input_prefix}outage/{n:02d}.jpg": distinct_photo(n) for n in range(12)}
    unwritable = {stack.result_key(cfg, key) for key in list(photos)[:3]}

    def s3_fault(_bucket: str, key: str) -> None:
        if key in unwritable:
            raise moto_patches.S3WriteFault()

    server.stop()
    moto_patches.hook_put_object(before=s3_fault)
    try:
        etags = upload(aws, bucket, photos)
        assert runtime.wait_idle(120)
    finally:
        moto_patches.unhook_put_object()
        server.start()

    during = results(cfg, aws)
    for key in photos:
        out = stack.result_key(cfg, key)
        if out in unwritable:
            assert out not in during
        else:  # a clear, non-final error record: nothing is lost even mid-outage
            assert during[out].record["error"]["code"] == "model_unavailable"
            assert during[out].metadata["final"] == "false"
    failed = list(delivery.failed_record_keys(aws, cfg, bucket))
    assert len(failed) == len(unwritable)
    record = json.loads(aws.s3.get_object(Bucket=bucket, Key=failed[0])["Body"].read())
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1 + cfg.retry_attempts
    assert record["responsePayload"]["errorType"] == "ResultWriteError"
    assert stack.result_key(cfg, unquote_plus(
        record["requestPayload"]["Records"][0]["s3"]["object"]["key"])) in unwritable
    calls_before = sum(calls.values())

    assert main(["replay", "--errors", "--prefix", cfg.prefix]) == 0
    said = capsys.readouterr().out
    assert "re-drove 12 event(s): 3 failed event(s) from the on-failure destination, 9 " \
           "photo(s) with a transient error result" in said, said
    assert runtime.wait_idle(120)
    after = results(cfg, aws)
    lost = [key for key in photos if stack.result_key(cfg, key) not in after]
    for n, key in enumerate(photos):
        stored = after[stack.result_key(cfg, key)]
        assert stored.record["status"] == "ok" and stored.metadata["final"] == "true", key
        assert stored.metadata["input-etag"] == etags[key]
        assert f"{100 + n}x80 pixels" in stored.record["answer"]
    assert sum(calls.values()) - calls_before == len(photos)  # one model call per photo
    assert list(delivery.failed_record_keys(aws, cfg, bucket)) == []

    assert main(["replay", "--errors", "--prefix", cfg.prefix]) == 0  # idempotent
    assert "re-drove 0 event(s)" in capsys.readouterr().out
    assert runtime.wait_idle(30) and sum(calls.values()) - calls_before == len(photos)
    reliability_tally["photos"] += len(photos)
    reliability_tally["faults"] += len(photos) + len(unwritable)
    reliability_tally["lost"] += len(lost)
    report(reliability_tally,
           f"outage: {len(photos)} photos while the model server was down ({len(unwritable)} "
           f"results unwritable too): {len(photos) - len(unwritable)} error records, "
           f"{len(failed)} events in the on-failure destination; after 'replay --errors' "
           f"{len(photos)} answered, {len(lost)} lost")
