"""The image budget: every image sized so that the request fits the model container.

The limits are the container's, by its own accounting (CONTAINER_LIMITS:
serving_limits.ContainerLimits): text (estimated from above) + image tokens <=
MAX_INPUT_TOKENS and + max_new_tokens <= MAX_TOTAL_TOKENS. Each in-context example
(one, or up to three with a preset) gets at most limits.example_image_tokens, the photo
everything left (serving_limits.image_allowances), and each is sent at the largest size
within its allowance (serving_limits.fit_image).

The url transport: an image whose stored size fits its allowance is sent as a presigned URL
of the original (nothing decoded here, nothing more uploaded). One that does not fit is
resized here (resize.py: the bounded decoder) and sent inline as a data: URI, within the
container's payload limit, rather than as a resized copy under a private prefix:
that copy would cost a PUT per photo plus a DELETE (or a lifecycle rule, and a stale copy
that outlives the upload, ETag pinning lost), and the endpoint would download it again; the
inline copy is ~0.1-1 MB, well under TGI's 2 MB and SageMaker's 6 MB, adds no S3 call and
sends exactly the bytes whose ETag the record carries. Each sized example is kept in module
state, keyed by its ETag and the limits, so a warm function resizes it once (one
conditional GET per example and photo checks the example is unchanged).
Idefics (TGI 1.4.5) counts one token per image whatever its size: nothing changes there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import clients, request, serving_limits
from .errors import BadImage, Failure, describe, scrub
from .logs import log
from .request import Prompt, SentImage
from .settings import Settings
from .sniff import sniff_image
from .upload import read_pinned


@dataclass(frozen=True)
class _Example:
    etag: str
    width: int  # as stored
    height: int
    sent: SentImage | None  # None: send a presigned URL of the original


_examples: dict[tuple[Any, ...], _Example] = {}  # warm-container cache of the sized examples
_examples_seen: dict[tuple[str, str], float] = {}  # preset example photo -> checked until


def clear_cache() -> None:
    """Forget every example photo checked by this container (tests; presets.clear_cache
    forgets the presets read)."""
    _examples_seen.clear()


def _formula(settings: Settings) -> str:
    """How the container counts an image's tokens; "idefics" (1 per image) without limits."""
    limits = settings.container_limits
    return limits.image_formula if limits is not None else "idefics"


def _max_new_tokens(settings: Settings, prompt: Prompt | None = None) -> int:
    value = (prompt.generation if prompt else settings.generation).get("max_new_tokens")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    limits = settings.container_limits
    return limits.max_total_tokens - limits.max_input_tokens if limits else 0


def request_texts(settings: Settings, prompt: Prompt | None = None) -> tuple[list[str], int]:
    """(texts of the request, number of chat messages) by which the container counts text."""
    if prompt is not None and prompt.preset is not None:
        from . import presets_schema  # a preset comes only with PRESETS_TABLE

        return presets_schema.request_texts(prompt.item(), prompt.language,
                                            settings.request_style)
    grounding = prompt.grounding if prompt is not None else ""  # the nearby places
    if settings.request_style == "tgi":  # every ![](url) is an image, counted apart
        bare = request.build_request("tgi", settings.instruction, settings.example_answer, "",
                                     "", settings.generation, grounding)
        return [bare["inputs"]], 0
    last = f"{settings.instruction} {grounding}" if grounding else settings.instruction
    texts = [settings.instruction, settings.example_answer, last]
    return texts, len(texts)


def request_budget(settings: Settings, sizes: list[tuple[int, int]],
                   prompt: Prompt | None = None) -> serving_limits.Budget:
    """The request's tokens with images of these sizes, by the container's accounting."""
    limits = settings.container_limits
    assert limits is not None
    texts, messages = request_texts(settings, prompt)
    return serving_limits.request_budget(limits, texts, [(max(w, 1), max(h, 1)) for w, h in sizes],
                                         _max_new_tokens(settings, prompt), messages=messages)


def _over_budget(settings: Settings, detail: str, prompt: Prompt | None = None) -> Failure:
    limits = settings.container_limits
    assert limits is not None
    if prompt is not None and prompt.from_table:
        code, fix = "preset_invalid", (
            f"Shorten the instruction or the examples' answers of {prompt.label()}, use fewer "
            f"examples, or lower its max_new_tokens (visual-tourism presets set {prompt.name} "
            "...), then upload the photo again.")
    else:
        code, fix = "configuration_error", (
            "Shorten INSTRUCTION or EXAMPLE_ANSWER, or lower max_new_tokens, redeploy, then "
            "upload the photo again.")
    return Failure(
        code,
        f"The request cannot fit the model container's limits ({limits.engine} "
        f"{limits.container_version}: MAX_INPUT_TOKENS {limits.max_input_tokens}, "
        f"MAX_TOTAL_TOKENS {limits.max_total_tokens}, payload {limits.payload_limit_bytes:,} "
        f"bytes), so the model was not called: {detail}. {fix}",
    )


def image_allowances(settings: Settings, example_sizes: list[tuple[int, int]],
                     prompt: Prompt | None = None) -> tuple[list[int], int]:
    """(token allowance of each example, of the photo); Failure when the photo gets no room."""
    limits = settings.container_limits
    assert limits is not None
    text = request_budget(settings, [], prompt).text_tokens
    try:
        return serving_limits.image_allowances(
            limits, text, _max_new_tokens(settings, prompt), example_sizes)
    except serving_limits.GenerationError as exc:
        raise _over_budget(settings, str(exc), prompt) from None


def _payload_room(settings: Settings, prompt: Prompt) -> int:
    """Bytes the images' URLs may take in the body (under MAX_PAYLOAD_BYTES)."""
    bare = request.prompt_request(settings, prompt, [""] * len(prompt.examples), "")
    return settings.max_payload_bytes - len(json.dumps(bare).encode()) - 64


def _example_failure(settings: Settings, prompt: Prompt, index: int, detail: str) -> Failure:
    key = prompt.examples[index][0]
    if prompt.from_table:
        return Failure(
            "preset_invalid",
            f"The {prompt.label()} cannot be used, so the model was not called: "
            f"examples[{index}].photo: s3://{settings.bucket}/{key} cannot be used ({detail}): "
            f"upload that photo, or change the preset's examples (visual-tourism presets set "
            f"{prompt.name} ...), then upload the photo again.")
    return Failure(
        "configuration_error",
        f"The example image s3://{settings.bucket}/{key} cannot be used ({detail}): upload it "
        "again or fix EXAMPLE_KEY.",
    )


def _check_example_exists(settings: Settings, prompt: Prompt, index: int) -> None:
    """A preset's example photo that the endpoint will fetch by URL: one HEAD, remembered
    with the preset (PRESET_CACHE_SECONDS), so that a photo missing from example/ (a preset
    edited by hand) is an error record rather than a model call that cannot fetch it."""
    key = prompt.examples[index][0]
    seen = (settings.bucket, key)
    now = time.monotonic()
    if _examples_seen.get(seen, 0.0) > now:
        return
    try:
        clients.client("s3").head_object(Bucket=settings.bucket, Key=key)
    except ClientError as exc:
        if clients.error_code(exc) in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied"):
            raise _example_failure(settings, prompt, index, "no such photo") from None
        log.warning("Cannot check the example photo %s: %s", key, describe(exc))
        return  # the endpoint will tell
    except BotoCoreError as exc:
        log.warning("Cannot check the example photo %s: %s", key, describe(exc))
        return
    if len(_examples_seen) >= 64:
        _examples_seen.clear()
    _examples_seen[seen] = now + max(settings.preset_cache_seconds, 0.0)


def read_example(settings: Settings, key: str, etag: str | None) -> tuple[bytes, str] | None:
    """(the example photo ``key``, its ETag), in one GET of at most MAX_IMAGE_BYTES; None when
    ``etag`` (this container's sized copy) is still the photo's (S3's 304 to IfNoneMatch).
    BadImage when the photo is larger; S3's ClientError otherwise."""
    args: dict[str, Any] = {"Bucket": settings.bucket, "Key": key,
                            "Range": f"bytes=0-{settings.max_image_bytes - 1}"}
    if etag is not None:
        args["IfNoneMatch"] = f'"{etag}"'
    try:
        response = clients.client("s3").get_object(**args)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if etag is not None and (status == 304 or clients.error_code(exc) in (
                "304", "NotModified")):
            return None
        raise
    data = response["Body"].read(settings.max_image_bytes + 1)
    total = str(response.get("ContentRange") or "").rpartition("/")[2]
    if total.isdigit() and int(total) > len(data):
        raise BadImage("image_too_large", f"over {settings.max_image_bytes} bytes")
    return data, response["ETag"].strip('"')


def _example_image(settings: Settings, prompt: Prompt, index: int,
                   budget: int) -> tuple[SentImage, tuple[int, int]]:
    """(in-context example ``index`` as sent, its stored size, by which its tokens count)."""
    limits = settings.container_limits
    key = prompt.examples[index][0]
    if settings.image_transport == "url" and _formula(settings) == "idefics":
        # One token whatever its size: the original by URL (no S3 call for the function's
        # own example).
        if prompt.from_table and key != settings.example_key:
            _check_example_exists(settings, prompt, index)
        return SentImage(presign(settings.bucket, key, settings), 0, 0), (1, 1)
    cache_key = (settings.bucket, key, settings.image_transport,
                 limits.to_env() if limits else "", budget)
    cached = _examples.get(cache_key)
    try:
        read = read_example(settings, key, cached.etag if cached is not None else None)
        if read is None:  # unchanged since this container sized it (only a copy asks)
            example = cached
        else:
            data, etag = read
            fmt, width, height = sniff_image(data)
            target: tuple[int, int] | None = (width, height)
            if limits is not None:
                # Its share: at most limits.example_image_tokens (serving_limits.image_allowances)
                allowance = min(limits.example_image_tokens,
                                serving_limits.image_tokens(width, height, limits.image_formula))
                target = serving_limits.fit_image(width, height, allowance,
                                                  limits.image_formula)
                if target is None:
                    raise BadImage("image_too_large", f"{width}x{height} pixels cannot be made "
                                   f"to cost at most {allowance} tokens")
            sent = None
            if settings.image_transport == "data-uri" or target != (width, height):
                from . import resize  # data: URIs, Pillow

                sent = resize.inline(data, fmt, (width, height), target, budget, settings)
            example = _Example(etag, width, height, sent)
            if len(_examples) >= 24:
                _examples.clear()
            _examples[cache_key] = example
    except (ClientError, BadImage) as exc:
        raise _example_failure(settings, prompt, index, scrub(str(exc))) from None
    stored = (example.width, example.height)
    if example.sent is not None:
        return example.sent, stored
    return SentImage(presign(settings.bucket, key, settings), *stored), stored


def image_urls(
    settings: Settings, prompt: Prompt, bucket: str, key: str, head: bytes, size: int,
    fmt: str, etag: str | None = None, stored: tuple[int, int] | None = None,
) -> tuple[list[SentImage], SentImage]:
    """(the examples, the photo) as the request carries them, per IMAGE_TRANSPORT, each sized
    to its share of the container's token budget (see the module's docstring)."""
    stored = stored or sniff_image(head)[1:]
    room = _payload_room(settings, prompt)
    # Each example gets at most a (2n+1)th of the payload room (with one example a third):
    # the photo always keeps more than half.
    share = room // (2 * len(prompt.examples) + 1)
    examples, sizes = [], []
    for index in range(len(prompt.examples)):
        sent, example_size = _example_image(settings, prompt, index, share)
        examples.append(sent)
        sizes.append(example_size)
    target = stored
    limits = settings.container_limits
    if limits is not None:
        allowance = image_allowances(settings, sizes, prompt)[1]
        fitted = serving_limits.fit_image(*stored, allowance, limits.image_formula)
        if fitted is None:
            raise BadImage(
                "image_too_large",
                f"The photo's shape ({stored[0]}x{stored[1]} pixels) cannot be made small enough "
                f"for the model's image budget ({allowance} tokens) and still show anything: "
                "crop it closer to a square and upload again.",
            )
        target = fitted
    if settings.image_transport == "url" and target == stored:
        return examples, SentImage(presign(bucket, key, settings), *stored)
    photo = (head if size <= len(head)
             else read_pinned(clients.client("s3"), bucket, key, etag, size))
    used = sum(len(example.url) for example in examples)
    from . import resize  # data: URIs, Pillow

    return examples, resize.inline(photo, fmt, stored, target, room - used, settings)


def check_request(settings: Settings, prompt: Prompt, body: bytes,
                  images: list[SentImage]) -> None:
    """Failure, before the model is called, when the request would not fit the container."""
    limits = settings.container_limits
    if limits is None:
        return
    if len(body) > limits.payload_limit_bytes:
        raise _over_budget(settings, f"the request body is {len(body):,} bytes", prompt)
    budget = request_budget(settings, [(image.width, image.height) for image in images], prompt)
    if not budget.fits:
        raise _over_budget(settings, budget.explain(), prompt)


def presign(bucket: str, key: str, settings: Settings) -> str:
    # Computed locally (no AWS call); the endpoint fetches the photo with it, so the bucket
    # stays private.
    return clients.client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key},
        ExpiresIn=settings.url_expires_seconds,
    )
