"""Local HTTP front: plays API Gateway's HTTP API (payload 2.0) in front of the web function.

It matches requests against the API's routes (``web_function.app.ROUTES``, the same table
visual_tourism/web.py creates on AWS), builds a payload-2.0 event per request the way API
Gateway does (lower-case headers, repeated query values comma-joined, binary bodies
base64'd, a fresh requestId and timeEpoch), calls the function synchronously and turns its
answer back into HTTP. What API Gateway answers by itself is answered here the same way:
``{"message":"Not Found"}`` for no route, ``{"message":"Too Many Requests"}`` (429) beyond the
stage's rate and burst, ``{"message":"Request Entity Too Large"}`` beyond 10 MB, and
``{"message":"Internal Server Error"}`` when the function fails.

A threaded server: browsers keep several keep-alive connections open at once.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

Invoke = Callable[[dict[str, Any]], Any]
MAX_BODY = 10 * 1024 * 1024  # HTTP API's payload limit
_TEXT_TYPES = re.compile(r"^(text/|application/(json|xml|x-www-form-urlencoded|javascript))")


def compile_routes(routes: Iterable[str]) -> list[tuple[str, str, re.Pattern[str]]]:
    """``"GET /results/{id}"`` -> (route key, method, regex with a named group per parameter)."""
    table = []
    for route in routes:
        method, path = route.split(" ", 1)
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
        table.append((route, method, re.compile(f"^{pattern}$")))
    return table


class TokenBucket:
    """Stage throttling: ``rate`` requests a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = float(burst), clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


def payload_v2(
    *, method: str, target: str, headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes, route_key: str, path_parameters: Mapping[str, str] | None,
    source_ip: str = "127.0.0.1", domain: str = "localhost", api_id: str = "local",
) -> dict[str, Any]:
    """The event API Gateway sends a Lambda integration with payload format 2.0."""
    parts = urlsplit(target)
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in pairs:
        lower = name.lower()
        if lower == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        merged[lower] = f"{merged[lower]},{value}" if lower in merged else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": merged,
        "requestContext": {
            "accountId": "anonymous", "apiId": api_id, "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {"method": method, "path": parts.path, "protocol": "HTTP/1.1",
                     "sourceIp": source_ip, "userAgent": merged.get("user-agent", "")},
            "requestId": base64.b32encode(secrets.token_bytes(10)).decode().rstrip("="),
            "routeKey": route_key, "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        if _TEXT_TYPES.match(merged.get("content-type", "")):
            event["body"] = body.decode("utf-8", errors="replace")
        else:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    return event


def to_http(answer: Any) -> tuple[int, dict[str, str], list[str], bytes]:
    """The function's answer as (status, headers, Set-Cookie values, body), as API Gateway
    reads payload-2.0 answers (a dict without statusCode is a 200 JSON body)."""
    if not isinstance(answer, dict) or "statusCode" not in answer:
        return 200, {"content-type": "application/json"}, [], json.dumps(answer).encode()
    body = answer.get("body") or ""
    raw = base64.b64decode(body) if answer.get("isBase64Encoded") else str(body).encode()
    headers = {str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
    return int(answer["statusCode"]), headers, list(answer.get("cookies") or []), raw


class WebFront:
    """``with WebFront(invoke, routes) as front:`` serves on ``front.url`` until closed."""

    def __init__(self, invoke: Invoke, routes: Iterable[str], host: str = "127.0.0.1",
                 port: int = 0, rate: float = 20.0, burst: int = 40,
                 route_limits: Mapping[str, tuple[float, int]] | None = None,
                 public_host: str | None = None) -> None:
        self.invoke = invoke
        self.table = compile_routes(routes)
        self.throttle = TokenBucket(rate, burst)
        self.route_throttles = {route: TokenBucket(r, b)
                                for route, (r, b) in (route_limits or {}).items()}
        self.requests: Counter[str] = Counter()  # route key -> requests (benchmarks read it)
        self._lock = threading.Lock()
        self.public_host = public_host
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.on_stop: list[Callable[[], None]] = []  # e.g. forget the recorded address

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{self.public_host or host}:{port}/"

    def link(self, code: str) -> str:
        """The page, ready to use: the code rides in the fragment, which no server sees."""
        return f"{self.url}#code={code}"

    def start(self) -> WebFront:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="web-front")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for callback in self.on_stop:
            callback()

    def __enter__(self) -> WebFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for route, route_method, regex in self.table:
            found = regex.match(path)
            if found and route_method == method:
                return route, found.groupdict()
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "visual-tourism-local-api"

            def log_message(self, fmt: str, *args: Any) -> None:  # never the code header
                log.debug("%s %s", self.command, urlsplit(self.path).path)

            def _send(self, status: int, headers: Mapping[str, str], body: bytes,
                      cookies: Iterable[str] = ()) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                for cookie in cookies:
                    self.send_header("set-cookie", cookie)
                self.send_header("content-length", str(len(body)))
                self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _message(self, status: int, message: str) -> None:
                self._send(status, {"content-type": "application/json"},
                           json.dumps({"message": message}).encode())

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY:
                    self.close_connection = True
                    self._message(413, "Request Entity Too Large")
                    return
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                found = front.match(self.command, path)
                if found is None:
                    self._message(404, "Not Found")
                    return
                route, params = found
                route_bucket = front.route_throttles.get(route)
                if not front.throttle.take() or (route_bucket and not route_bucket.take()):
                    self._message(429, "Too Many Requests")
                    return
                with front._lock:
                    front.requests[route] += 1
                event = payload_v2(
                    method=self.command, target=self.path, headers=self.headers.items(),
                    body=body, route_key=route, path_parameters=params,
                    source_ip=self.client_address[0],
                    domain=self.headers.get("host", "localhost"),
                )
                try:
                    status, headers, cookies, raw = to_http(front.invoke(event))
                except Exception:  # noqa: BLE001 - API Gateway answers 500 for a failed function
                    log.exception("web function failed on %s", route)
                    self._message(500, "Internal Server Error")
                    return
                self._send(status, headers, raw, cookies)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

        return Handler


def function_env(cfg: Any, aws: Any, local_env: Mapping[str, str],
                 **overrides: str) -> dict[str, str]:
    """The deployed web function's environment plus the local endpoints (and ``overrides``,
    e.g. ``UPLOAD_EXPIRES_SECONDS`` or ``MAX_PHOTO_BYTES``, for a front with other limits)."""
    from .. import packaging, web

    function = aws.lambda_.get_function(FunctionName=web.function_name(cfg))
    conf = function["Configuration"]
    if conf["CodeSha256"] != packaging.code_sha256(packaging.build_zip("web")):
        log.warning("The deployed web function differs from this checkout: run 'up' again.")
    return {**conf.get("Environment", {}).get("Variables", {}), **local_env, **overrides}


def as_its_role(cfg: Any, aws: Any, env: Mapping[str, str],
               credentials: Callable[[str], Mapping[str, str]] | None,
               handle: Callable[[Mapping[str, Any], Mapping[str, str]], Any] | None = None,
               ) -> Invoke:
    """The web function called as Lambda calls it: with its execution role's temporary
    credentials (``credentials``: function ARN -> AWS_* variables, local.credentials), so that
    with IAM enforcement on it can do locally only what its role allows on AWS. None: with
    ``env``'s own credentials (a stack without a local Lambda service)."""
    from web_function import app

    from .. import web

    call = handle or app.handle
    if credentials is None:
        return lambda event: call(event, env)
    arn = aws.lambda_.get_function_configuration(
        FunctionName=web.function_name(cfg))["FunctionArn"]
    # Per request: the credentials are cached, and renewed before they expire.
    return lambda event: call(event, {**env, **credentials(arn)})


def front_for_stack(cfg: Any, aws: Any, local_env: Mapping[str, str], host: str = "127.0.0.1",
                    port: int = 0, public_host: str | None = None,
                    credentials: Callable[[str], Mapping[str, str]] | None = None) -> WebFront:
    """A front for the web function that `up` deployed into the local stack: its routes,
    its environment, its role's credentials and the stage's throttling, calling the same
    code in this process."""
    from web_function import app

    from .. import web

    env = function_env(cfg, aws, local_env)
    limits = {route: (s["ThrottlingRateLimit"], s["ThrottlingBurstLimit"])
              for route, s in web.route_throttling(cfg).items()}
    return WebFront(as_its_role(cfg, aws, env, credentials), app.ROUTES, host=host,
                    port=port, rate=cfg.web_rate_limit, burst=cfg.web_burst_limit,
                    route_limits=limits, public_host=public_host)


def serve_local(cfg: Any, local: Any, port: int = 0) -> tuple[WebFront, str]:
    """Start the front for a local stack on which `up` ran; returns it and the page's link.
    Call it with the stack's variables in the environment (``environment(local.env)``)."""
    from .. import web
    from ..aws import Aws
    from ..stack import bucket_name
    from ..state import State

    aws = Aws(cfg.region)
    role = getattr(local, "credentials", None)  # the local Lambda service's, as for any function
    front = front_for_stack(cfg, aws, local.env, port=port,
                            credentials=role.for_function if role is not None else None).start()
    # Here the API's origin is this front's: the bucket's CORS rule names it, as on AWS.
    web.ensure_cors(aws, bucket_name(cfg, aws), web.origin_of(front.url))
    state = State(cfg.state_path)  # where the notebooks find the page (never the code)
    state.record("web", **{**state.steps.get("web", {}), "local_url": front.url})
    front.on_stop.append(lambda: _forget_local_url(cfg))
    code = web.get_code(aws, cfg)
    if code is None:
        front.stop()
        raise RuntimeError("no access code in the local stack: did 'up' run?")
    return front, front.link(code)


def _forget_local_url(cfg: Any) -> None:
    """The page is no longer served: `status` and `visual-tourism web` must not offer it."""
    from ..state import State

    state = State(cfg.state_path)
    web_step = state.steps.get("web")
    if web_step and "local_url" in web_step:
        state.record("web", **{k: v for k, v in web_step.items() if k not in ("at", "local_url")})
