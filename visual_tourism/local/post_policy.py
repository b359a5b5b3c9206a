"""S3's POST Object policy check, for local mode (moto stores any POST; S3 does not).

What S3 checks, and answers when a check fails (S3 API reference: "POST Object", "Creating a
POST policy", "Error responses"):

- no policy on a private bucket: 403 AccessDenied;
- a bad signature (AWS4-HMAC-SHA256 over the base64 policy): 403 SignatureDoesNotMatch;
  an unknown access key: 403 InvalidAccessKeyId;
- ``expiration`` passed: 403 AccessDenied "Invalid according to Policy: Policy expired.";
- a condition not met (exact match, ``eq``, ``starts-with``; field names without case):
  403 AccessDenied "Invalid according to Policy: Policy Condition failed: [...]";
- a form field no condition names (except ``policy``, ``x-amz-signature``, ``file`` and
  ``x-ignore-*``): 403 AccessDenied "Invalid according to Policy: Extra input fields: ...";
- a file outside ``content-length-range``: 400 EntityTooLarge (with ProposedSize and
  MaxSizeAllowed) or 400 EntityTooSmall (ProposedSize, MinSizeAllowed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

EXEMPT = {"policy", "x-amz-signature", "file"}


class PolicyViolation(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def xml(self) -> str:
        parts = [f"<Code>{self.code}</Code>", f"<Message>{escape(self.message)}</Message>"]
        parts += [f"<{k}>{escape(str(v))}</{k}>" for k, v in self.extra.items()]
        parts.append(f"<RequestId>{secrets.token_hex(8).upper()}</RequestId>")
        return '<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + "".join(parts) + "</Error>"


def _denied(reason: str) -> PolicyViolation:
    return PolicyViolation(403, "AccessDenied", f"Invalid according to Policy: {reason}")


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _check_signature(fields: Mapping[str, str], policy_b64: str,
                     secrets_by_key: Mapping[str, str]) -> None:
    if fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
        raise PolicyViolation(400, "InvalidArgument",
                              "Only AWS4-HMAC-SHA256 signed POST forms are supported here.")
    try:
        access_key, date, region, service, _ = fields["x-amz-credential"].split("/")
    except (KeyError, ValueError):
        raise PolicyViolation(400, "InvalidArgument", "x-amz-credential is malformed") from None
    secret = secrets_by_key.get(access_key)
    if secret is None:
        raise PolicyViolation(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided "
                              "does not exist in our records.", AWSAccessKeyId=access_key)
    wanted = hmac.new(_signing_key(secret, date, region, service), policy_b64.encode(),
                      hashlib.sha256).hexdigest()
    if not hmac.compare_digest(wanted, fields.get("x-amz-signature", "")):
        raise PolicyViolation(403, "SignatureDoesNotMatch", "The request signature we "
                              "calculated does not match the signature you provided. Check "
                              "your key and signing method.")


def check(form: Mapping[str, str], size: int, bucket: str,
          secrets_by_key: Mapping[str, str], now: datetime | None = None) -> None:
    """Raise PolicyViolation unless S3 would store this POST (``size``: the file's bytes)."""
    fields = {k.lower(): v for k, v in form.items()}
    policy_b64 = fields.get("policy")
    if not policy_b64:
        raise PolicyViolation(403, "AccessDenied", "Access Denied")
    _check_signature(fields, policy_b64, secrets_by_key)
    try:
        policy = json.loads(base64.b64decode(policy_b64))
        expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
        conditions = policy["conditions"]
    except (ValueError, KeyError, TypeError):
        raise PolicyViolation(400, "InvalidPolicyDocument",
                              "Invalid Policy: Invalid JSON.") from None
    if (now or datetime.now(UTC)) >= expires:
        raise _denied("Policy expired.")
    values = {**fields, "bucket": bucket}
    named: set[str] = set()
    for condition in conditions:
        if isinstance(condition, dict):
            for name, expected in condition.items():
                named.add(name.lower())
                if values.get(name.lower()) != expected:
                    raise _denied("Policy Condition failed: "
                                  f'["eq", "${name}", {json.dumps(expected)}]')
            continue
        op = str(condition[0]).lower()
        if op == "content-length-range":
            low, high = int(condition[1]), int(condition[2])
            if size > high:
                raise PolicyViolation(400, "EntityTooLarge", "Your proposed upload exceeds the "
                                      "maximum allowed size", ProposedSize=size,
                                      MaxSizeAllowed=high)
            if size < low:
                raise PolicyViolation(400, "EntityTooSmall", "Your proposed upload is smaller "
                                      "than the minimum allowed size", ProposedSize=size,
                                      MinSizeAllowed=low)
            continue
        name = str(condition[1]).lstrip("$").lower()
        named.add(name)
        have, want = values.get(name, ""), str(condition[2])
        ok = have == want if op == "eq" else op == "starts-with" and have.startswith(want)
        if not ok:
            raise _denied(f"Policy Condition failed: {json.dumps(condition)}")
    extra = sorted(n for n in fields if n not in named and n not in EXEMPT
                   and not n.startswith("x-ignore-"))
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}")
