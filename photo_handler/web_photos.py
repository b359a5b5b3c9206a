"""Photos from the web page: one photo per upload form, and the gallery's small copy."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from . import clients
from .errors import BadImage
from .settings import Settings
from .upload import read_pinned, same_etag

WEB_FOLDER = "web/"  # under INPUT_PREFIX: the web page's uploads (visual_tourism/web.py)
THUMBNAIL_SIDE = 480  # the gallery's copies: at most this many pixels on the long side
THUMBNAIL_CACHE = "private, max-age=86400, immutable"  # one copy per key, never rewritten


def _claimed_by(s3: Any, bucket: str, key: str) -> str | None:
    """The input ETag the small copy at ``key`` was made from (None: no copy yet)."""
    try:
        return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("input-etag", "")
    except ClientError as exc:
        if clients.error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def claim_web_photo(s3: Any, settings: Settings, bucket: str, key: str, etag: str | None,
                    size: int) -> str | None:
    """For a photo from the web page: make its small copy (the claim of its upload form), or
    refuse a later photo posted with the same form. Returns the copy's key (None: not a web
    photo, or the page is off).

    An upload form signs one key, and S3 lets a form be posted again and again for its
    lifetime. The copy is written only if none exists (a conditional write), with the ETag of
    the photo it was made from: the first photo through a form claims it; a later one finds
    another ETag there and raises BadImage("upload_form_used") before any model call, so it
    ends with a final record saying so (and an invocation still answering the first photo,
    replaced meanwhile, ends as superseded). A redelivery of the first photo's event finds its
    own ETag and goes on. The copy is a JPEG of at most THUMBNAIL_SIDE pixels, upright, made
    from the pixels alone: no EXIF (GPS position, camera serial, owner), XMP, ICC or comment.
    """
    web = settings.input_prefix + WEB_FOLDER
    if not settings.thumbnail_prefix or not key.startswith(web):
        return None
    copy_key = settings.thumbnail_prefix + key[len(settings.input_prefix):] + ".jpg"
    claimed = _claimed_by(s3, bucket, copy_key)
    if claimed is None:
        from . import resize  # Pillow: in the zip when the page is on

        data = read_pinned(s3, bucket, key, etag, size)
        small = resize.thumbnail(data, THUMBNAIL_SIDE, settings.max_image_pixels)
        args = {"Bucket": bucket, "Key": copy_key, "Body": small, "ContentType": "image/jpeg",
                "CacheControl": THUMBNAIL_CACHE, "Metadata": {"input-etag": etag or ""}}
        if not clients.accepts(s3, "PutObject", "IfNoneMatch"):
            # An SDK without conditional writes: checked by the HEAD above, a small race left.
            s3.put_object(**args)
            return copy_key
        try:
            s3.put_object(**args, IfNoneMatch="*")
            return copy_key
        except ClientError as exc:
            if clients.error_code(exc) not in ("PreconditionFailed",
                                               "ConditionalRequestConflict", "412"):
                raise
        claimed = _claimed_by(s3, bucket, copy_key)  # another upload's, written meanwhile
    if claimed is not None and not same_etag(claimed, etag):
        raise BadImage(
            "upload_form_used",
            "This upload form was already used for another photo, and each form takes one "
            "photo: this one was not sent to the model. Take or pick the photo again on the "
            "page (it asks for a new form for every photo).",
        )
    return copy_key

