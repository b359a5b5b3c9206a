"""The AWS requests a block of code makes, recorded and shown as boto3 code to copy.

    with calls.record(aws) as recording:
        stack.create_bucket(cfg, aws)
    print(recording.snippet())          # s3 = boto3.client("s3", ...); s3.create_bucket(...)

Every client of the package is made through ``Aws`` (visual_tourism/aws.py), from its boto3
session, so one handler on botocore's ``provide-client-params`` event (fired once per API
call, with the parameters the caller passed, before validation or retries) sees every request:
on the session for clients made inside the block, and on each client ``Aws`` already holds.
``after-call`` adds the error code of a call that failed (a "not found" that leads to a create).

What is recorded is masked before anyone sees it: secrets (SSM SecureString values, secret and
session keys, passwords, signed URLs' query strings) at once, blobs as their size (``"<zip,
N bytes>"``, ``"<N bytes>"``), and when the block ends the caller's account ID becomes
``{account}`` in f-strings (the snippet looks it up first) while any other 12-digit number is
masked to its last four digits. The notebooks show a recording under each cell
(visual_tourism/notebook/cells.py); ``visual-tourism up --show-calls`` prints one.
"""

from __future__ import annotations

import datetime
import html
import itertools
import json
import keyword
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore import xform_name

from .aws import Aws

READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Head")
WIDTH = 88  # characters per snippet line, as the package's code
_ids = itertools.count()

# Parameter names whose values are secrets wherever they appear (compared in lower case).
_SECRET_KEYS = frozenset({
    "secretstring", "secretbinary", "secretaccesskey", "sessiontoken", "password",
    "privatekey", "clientsecret", "authtoken",
})
# Environment variable names (a Lambda function's, a container's) that hold secrets.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE", re.I)
_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_SIGNED_QUERY = re.compile(r"(?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|"
                           r"Signature|AWSAccessKeyId)=", re.I)
_TWELVE_DIGITS = re.compile(r"(?<!\d)\d{12}(?!\d)")
_MASKED_DIGITS = re.compile(r"(?<!\d)(\d{8})(\d{4})(?!\d)")


# -- what a recorded value can be, beyond plain Python data -----------------------------------


@dataclass(frozen=True)
class Placeholder:
    """A value not shown: a secret or a blob. Rendered as a string literal, e.g. "<secret>"."""

    text: str


@dataclass(frozen=True)
class WithAccount:
    """A string holding the caller's account ID: rendered as an f-string with ``{account}``."""

    parts: tuple[str, ...]  # the text split on the account ID

    def __str__(self) -> str:
        return "{account}".join(self.parts)


@dataclass(frozen=True)
class JsonDocument:
    """A string parameter that is a JSON document (an IAM policy): rendered ``json.dumps(...)``."""

    value: Any


@dataclass
class Call:
    """One API call: ``service`` as boto3.client takes it, ``operation`` as AWS names it."""

    service: str
    operation: str
    params: dict[str, Any]
    region: str | None = None
    error: str | None = None  # the error code, when the call failed
    times: int = 1  # consecutive identical read-only calls (a waiter polling) count as one

    @property
    def method(self) -> str:
        """The boto3 method: ``CreateBucket`` -> ``create_bucket``."""
        return xform_name(self.operation)

    @property
    def read_only(self) -> bool:
        return self.operation.startswith(READ_ONLY_PREFIXES)


# -- masking ---------------------------------------------------------------------------------


def _blob(key: str, value: Any) -> Placeholder | bytes:
    size = len(value) if isinstance(value, bytes | bytearray | memoryview) else None
    if size is None:
        return Placeholder("<file>")
    if size == 0:
        return b""  # a folder marker: nothing to hide, and copyable as it is
    return Placeholder(f"<zip, {size:,} bytes>" if key == "ZipFile" else f"<{size:,} bytes>")


def _scrub_text(text: str) -> str:
    """A signed URL without its query (the signature is a credential), access keys hidden."""
    if "://" in text and "?" in text and _SIGNED_QUERY.search(text):
        parts = urlsplit(text)
        text = f"{parts.scheme}://{parts.netloc}{parts.path}?<signed query removed>"
    return _ACCESS_KEY.sub("<access key>", text)


def scrub(value: Any, key: str = "", secret_values: bool = False) -> Any:
    """A copy of request parameters with secrets and blobs replaced by placeholders.

    ``secret_values``: every ``Value`` below is a secret (an SSM SecureString's).
    """
    if isinstance(value, Mapping):
        return {k: _scrub_item(str(k), v, secret_values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, key, secret_values) for v in value]
    if isinstance(value, bytes | bytearray | memoryview) or hasattr(value, "read"):
        return _blob(key, value)
    if isinstance(value, str):
        return _scrub_text(value)
    return value


def _scrub_item(key: str, value: Any, secret_values: bool) -> Any:
    if key.lower() in _SECRET_KEYS or (secret_values and key == "Value"):
        return Placeholder("<secret>")
    if key == "Variables" and isinstance(value, Mapping):  # environment variables
        return {name: Placeholder("<secret>") if _SECRET_NAME.search(str(name))
                else scrub(inner, str(name)) for name, inner in value.items()}
    return scrub(value, key, secret_values)


def _mask_digits(text: str) -> str:
    return _MASKED_DIGITS.sub(lambda m: "*" * 8 + m.group(2), text)


def mask_accounts(value: Any, account: str | None) -> Any:
    """The caller's account ID as ``{account}``, any other 12-digit number masked, JSON
    documents parsed so that they read (and mask) as data."""
    if isinstance(value, Mapping):
        return {k: mask_accounts(v, account) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_accounts(v, account) for v in value]
    if isinstance(value, JsonDocument):
        return JsonDocument(mask_accounts(value.value, account))
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped[:1] in ("{", "[") and len(stripped) > 1:
        try:
            return JsonDocument(mask_accounts(json.loads(stripped), account))
        except ValueError:
            pass
    if account and account in value:
        parts = tuple(_mask_digits(p) for p in value.split(account))
        return WithAccount(parts)
    return _mask_digits(value)


# -- recording -------------------------------------------------------------------------------


class Recording:
    """The calls made inside ``record(...)``, in order; masked once the block has ended."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws
        self.calls: list[Call] = []
        self.account: str | None = None
        self.finished = False
        self._lock = threading.Lock()
        self._id = f"visual-tourism-calls-{next(_ids)}"

    # botocore handlers: they must return None (a value would replace the parameters).
    def _on_params(self, params: Mapping[str, Any], model: Any, context: dict[str, Any],
                   **_: Any) -> None:
        service = model.service_model.service_name
        secret = service == "ssm" and params.get("Type") == "SecureString"
        call = Call(service, model.name, scrub(params, secret_values=secret),
                    region=context.get("client_region"))
        with self._lock:
            if self.finished:
                return
            self.calls.append(call)
            context[self._id] = call

    def _on_result(self, parsed: Mapping[str, Any] | None = None,
                   context: dict[str, Any] | None = None, **_: Any) -> None:
        call = (context or {}).get(self._id)
        error = (parsed or {}).get("Error") if isinstance(parsed, Mapping) else None
        if call is not None and error:
            call.error = str(error.get("Code") or "error")

    def _clients(self) -> list[Any]:
        return list(getattr(self.aws, "_clients", {}).values())

    def start(self) -> Recording:
        for emitter in [self.aws.session.events, *(c.meta.events for c in self._clients())]:
            emitter.register("provide-client-params.*.*", self._on_params, unique_id=self._id)
            emitter.register("after-call.*.*", self._on_result, unique_id=self._id + "-after")
        return self

    def stop(self) -> Recording:
        """Stop recording, then mask account IDs in what was recorded (idempotent)."""
        if self.finished:
            return self
        for emitter in [self.aws.session.events, *(c.meta.events for c in self._clients())]:
            emitter.unregister("provide-client-params.*.*", unique_id=self._id)
            emitter.unregister("after-call.*.*", unique_id=self._id + "-after")
        with self._lock:
            self.finished = True
        self.account = self._account() if any(
            _TWELVE_DIGITS.search(json.dumps(c.params, default=str)) for c in self.calls) else None
        for call in self.calls:
            call.params = mask_accounts(call.params, self.account)
        self.calls = _collapse(self.calls)
        return self

    def _account(self) -> str | None:
        identity = self.aws.__dict__.get("identity")  # cached by Aws: no new request
        if identity is None:
            try:
                identity = self.aws.identity
            except Exception:  # no credentials: every 12-digit number stays masked
                return None
        return identity.get("Account")

    # -- what is shown -------------------------------------------------------------------

    @property
    def changes(self) -> list[Call]:
        return [c for c in self.calls if not c.read_only]

    @property
    def reads(self) -> list[Call]:
        return [c for c in self.calls if c.read_only]

    def snippet(self, reads: bool = False) -> str:
        """The calls as boto3 code: the changes only, or (``reads``) every call in order with
        the read-only checks marked."""
        return render([c for c in self.calls if reads or not c.read_only])

    def summary(self) -> str:
        changes, reads = len(self.changes), sum(c.times for c in self.reads)
        return (f"{changes} change{'s' if changes != 1 else ''}, {reads} read-only "
                f"check{'s' if reads != 1 else ''}")

    def text(self) -> str:
        head = f"AWS calls made here ({self.summary()}), as boto3 code:"
        body = self.snippet() if self.changes else "# no change: read-only checks only"
        tail = ""
        if self.reads:
            names = sorted({c.method for c in self.reads})
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            tail = f"\n# plus read-only checks, not shown: {shown}"
        return f"{head}\n\n{body}{tail}"

    def html(self, open_: bool = False) -> str:
        """Collapsed ``<details>``: the changes to copy, and every call in order inside."""
        pre = ('<pre style="margin:0.4em 0;padding:0.6em;background:var(--jp-layout-color2,'
               '#f5f5f5);white-space:pre;overflow-x:auto;line-height:1.35">')
        parts = [f'<details{" open" if open_ else ""} class="vt-calls">'
                 f"<summary>AWS calls made by this cell: {html.escape(self.summary())} "
                 "(boto3 code to copy)</summary>"]
        if self.changes:
            parts.append(f"{pre}{html.escape(self.snippet())}</pre>")
        if self.reads:
            parts.append(f'<details style="margin-left:1em"><summary>all {len(self.calls)} '
                         "calls in order, read-only checks marked</summary>"
                         f"{pre}{html.escape(self.snippet(reads=True))}</pre></details>")
        parts.append("</details>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())


def _collapse(calls: list[Call]) -> list[Call]:
    """Consecutive identical read-only calls (a waiter's polling) become one, counted."""
    out: list[Call] = []
    for call in calls:
        last = out[-1] if out else None
        if (last is not None and call.read_only and last.read_only
                and (last.service, last.operation, last.params, last.error)
                == (call.service, call.operation, call.params, call.error)):
            last.times += 1
        else:
            out.append(call)
    return out


@contextmanager
def record(aws: Aws) -> Iterator[Recording]:
    """Record every AWS request made through ``aws`` inside the block."""
    recording = Recording(aws).start()
    try:
        yield recording
    finally:
        recording.stop()


# -- rendering as Python -----------------------------------------------------------------------


_CLIENT_NAMES = {"application-autoscaling": "autoscaling", "lambda": "lambda_"}


def client_variable(service: str) -> str:
    name = _CLIENT_NAMES.get(service, service.replace("-", "_"))
    return name + "_" if keyword.iskeyword(name) else name


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a Python string literal


def _inline(value: Any) -> str:
    if isinstance(value, WithAccount):
        if value.parts == ("", ""):
            return "account"
        escaped = [p.replace("{", "{{").replace("}", "}}") for p in value.parts]
        return "f" + _literal("{account}".join(escaped))
    if isinstance(value, Placeholder):
        return _literal(value.text)
    if isinstance(value, JsonDocument):
        return f"json.dumps({_inline(value.value)})"
    if isinstance(value, str):
        return _literal(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_inline(str(k))}: {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, bytes | bool | int | float) or value is None:
        return repr(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return repr(value)  # datetime.datetime(...): the snippet imports datetime
    return _literal(str(value))


def _format(value: Any, indent: int, room: int) -> str:
    """``value`` as Python, on one line if it fits in ``room`` characters, else one item a
    line (continuation lines indented ``indent + 4``, the closing bracket at ``indent``)."""
    one = _inline(value)
    if len(one) <= room:
        return one
    pad, end = " " * (indent + 4), " " * indent
    if isinstance(value, JsonDocument):
        return f"json.dumps({_format(value.value, indent, room - 12)})"
    if isinstance(value, Mapping) and value:
        items = [f"{pad}{_inline(str(k))}: "
                 f"{_format(v, indent + 4, WIDTH - indent - 8 - len(str(k)))},"
                 for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{end}}}"
    if isinstance(value, list | tuple) and value:
        items = [f"{pad}{_format(v, indent + 4, WIDTH - indent - 5)}," for v in value]
        return "[\n" + "\n".join(items) + f"\n{end}]"
    return one


def _comment(call: Call) -> str:
    """A line above the call: read-only (how often), and the error it answered."""
    notes = []
    if call.read_only:
        notes.append("read-only" + (f", {call.times} times (polled)" if call.times > 1 else ""))
    if call.error:
        notes.append(f"failed: {call.error}")
    return f"# {'; '.join(notes)}\n" if notes else ""


def render_call(call: Call) -> str:
    target = f"{client_variable(call.service)}.{call.method}"
    args = [f"{k}={_inline(v)}" for k, v in call.params.items()]
    one = f"{target}({', '.join(args)})"
    if len(one) <= WIDTH:
        return _comment(call) + one
    lines = [f"{target}("]
    for key, value in call.params.items():
        lines.append(f"    {key}={_format(value, 4, WIDTH - 6 - len(key))},")
    return _comment(call) + "\n".join(lines) + "\n)"


def _uses(calls: list[Call], kind: type) -> bool:
    def walk(value: Any) -> bool:
        if isinstance(value, kind):
            return True
        if isinstance(value, JsonDocument):
            return walk(value.value)
        if isinstance(value, Mapping):
            return any(walk(v) for v in value.values())
        if isinstance(value, list | tuple):
            return any(walk(v) for v in value)
        return False

    return any(walk(c.params) for c in calls)


def render(calls: list[Call]) -> str:
    """Calls as a script: imports, the account lookup if needed, each client before its first
    call, then the calls in order."""
    if not calls:
        return "# no AWS calls"
    head = ["import boto3"]
    if _uses(calls, JsonDocument):
        head.insert(0, "import json")
    if _uses(calls, datetime.date):
        head.insert(0, "import datetime")
    body: list[str] = []
    if _uses(calls, WithAccount):
        body.append('account = boto3.client("sts").get_caller_identity()["Account"]')
    made: set[str] = set()
    for call in calls:
        variable = client_variable(call.service)
        if variable not in made:
            made.add(variable)
            region = f", region_name={_literal(call.region)}" if call.region else ""
            body.append(f"{variable} = boto3.client({_literal(call.service)}{region})")
        body.append(render_call(call))
    return "\n".join(head) + "\n\n" + "\n".join(body) + "\n"
