"""The web front door: an HTTP API (API Gateway, payload 2.0) with its own Lambda function,
least-privilege role, stage throttling, the class access code (SSM SecureString) and the
bucket CORS rule that lets the page upload straight to S3.

``up`` runs ``deploy`` after the trigger (the page is only useful once photos get answers);
``down`` runs ``remove`` first. The access code is generated here, stored only in SSM, and
never written to the state file, the template or a log; ``link`` reads it to print the page's
address with the code in the URL fragment (browsers never send fragments to servers).
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from web_function import app as web_app

from . import iam, lambda_fn, logs, packaging
from .aws import Aws, error_code, ignore_not_found, is_not_found, tags_dict
from .config import STACK_TAG, THUMBNAIL_PREFIX, WEB_FOLDER, Config
from .errors import DeployError, NotDeployedError, NotOwnedError
from .state import State

log = logging.getLogger(__name__)

HANDLER = "web_function.app.lambda_handler"
POLICY_NAME = "visual-tourism-web"
PERMISSION_ID = "visual-tourism-apigateway-invoke"
CORS_RULE_ID = "visual-tourism-web-uploads"
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off a projector
LOCAL_FRONT_SERVER = "visual-tourism-local-api"  # the Server header of local/web_front.py


# -- names and documents (pure: infra/template.yaml is checked against them) ----------------
def api_name(cfg: Config) -> str:
    return f"{cfg.prefix}-web"


def function_name(cfg: Config) -> str:
    return f"{cfg.prefix}-web-api"


def role_name(cfg: Config) -> str:
    return f"{cfg.prefix}-web-role"


def code_parameter(cfg: Config) -> str:
    return f"/{cfg.prefix}/web/access-code"


def log_group(cfg: Config) -> str:
    return f"/aws/lambda/{function_name(cfg)}"


def presets_table(cfg: Config) -> str:
    """The presets table when the presets step recorded one (issue 11), else ''."""
    state = State(cfg.state_path)
    return state.get("presets", "table") or state.get("presets", "name") or ""


def web_policy(cfg: Config, *, account: str, bucket: str, partition: str = "aws",
               table: str = "") -> dict[str, Any]:
    """Upload forms for input/web/ only; reads of the results (output/web/) and of the
    handler's small copies (thumbnails/web/), never of the originals; the code."""
    objects = f"arn:{partition}:s3:::{bucket}"
    group = f"arn:{partition}:logs:{cfg.region}:{account}:log-group:{log_group(cfg)}"
    statements: list[dict[str, Any]] = [
        {"Sid": "OwnLogGroup", "Effect": "Allow", "Action": ["logs:CreateLogGroup"],
         "Resource": group},
        {"Sid": "OwnLogStreams", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{group}:*"},
        {
            # A presigned POST is signed with this role: it can only upload what the role may.
            "Sid": "SignUploadFormsForWebPhotos", "Effect": "Allow",
            "Action": ["s3:PutObject"], "Resource": f"{objects}/{cfg.input_prefix}{WEB_FOLDER}*",
        },
        {
            # The originals (input/web/) stay the handler's: they may carry the photo's
            # position and the camera's serial number. The gallery shows the small copies.
            "Sid": "ReadResultsAndSmallCopies", "Effect": "Allow", "Action": ["s3:GetObject"],
            "Resource": [f"{objects}/{cfg.output_prefix}{WEB_FOLDER}*",
                         f"{objects}/{THUMBNAIL_PREFIX}{WEB_FOLDER}*"]},
        {
            # The gallery's listing of results, and whether a photo was uploaded (a listing of
            # its key under input/web/). A GetObject carries no s3:prefix, so this does not
            # make a missing result 404: it is 403 for this role, and web_function.app reads
            # a 403 so.
            "Sid": "ListWebFolders", "Effect": "Allow", "Action": ["s3:ListBucket"],
            "Resource": objects,
            "Condition": {"StringLike": {"s3:prefix": [
                f"{cfg.input_prefix}{WEB_FOLDER}*", f"{cfg.output_prefix}{WEB_FOLDER}*"]}},
        },
        {"Sid": "ReadAccessCode", "Effect": "Allow", "Action": ["ssm:GetParameter"],
         "Resource": f"arn:{partition}:ssm:{cfg.region}:{account}:parameter"
                     f"{code_parameter(cfg)}"},
    ]
    if table:
        statements.append({
            "Sid": "ReadPresets", "Effect": "Allow", "Action": ["dynamodb:Scan"],
            "Resource": f"arn:{partition}:dynamodb:{cfg.region}:{account}:table/{table}",
        })
    return {"Version": "2012-10-17", "Statement": statements}


def function_environment(cfg: Config, bucket: str, table: str = "") -> dict[str, str]:
    return {
        "BUCKET_NAME": bucket,
        "CODE_PARAMETER": code_parameter(cfg),
        "INPUT_PREFIX": cfg.input_prefix,
        "OUTPUT_PREFIX": cfg.output_prefix,
        "WEB_FOLDER": WEB_FOLDER,
        "MAX_PHOTO_BYTES": str(cfg.web_max_photo_bytes),
        "THUMBNAIL_PREFIX": THUMBNAIL_PREFIX,
        "UPLOAD_EXPIRES_SECONDS": str(web_app.Settings.upload_expires_seconds),
        "PRESETS_TABLE": table,
    }


def function_settings(cfg: Config, role_arn: str, bucket: str, table: str = ""
                      ) -> dict[str, Any]:
    return {
        "Role": role_arn, "Handler": HANDLER, "Runtime": cfg.lambda_runtime,
        "Timeout": 10, "MemorySize": 256,
        "Environment": {"Variables": function_environment(cfg, bucket, table)},
        "Description": f"Visual Tourism ({cfg.prefix}): the web page and its API",
    }


UPLOAD_ROUTE = "POST /uploads"


def throttling(cfg: Config) -> dict[str, Any]:
    """The stage's limits for the whole API (extra requests get 429 before any Lambda runs)."""
    return {"ThrottlingBurstLimit": cfg.web_burst_limit,
            "ThrottlingRateLimit": float(cfg.web_rate_limit)}


def route_throttling(cfg: Config) -> dict[str, dict[str, Any]]:
    """Tighter limits for upload forms: each upload costs a model call."""
    return {UPLOAD_ROUTE: {"ThrottlingBurstLimit": cfg.web_upload_burst_limit,
                           "ThrottlingRateLimit": float(cfg.web_upload_rate_limit)}}


def cors_rule(origin: str) -> dict[str, Any]:
    """The page's origin may POST upload forms (and read the answer); nobody else."""
    return {"ID": CORS_RULE_ID, "AllowedOrigins": [origin], "AllowedMethods": ["POST"],
            "AllowedHeaders": ["*"], "MaxAgeSeconds": 3000}


def new_code() -> str:
    """12 characters from 31 (~59 bits), grouped in fours to read aloud."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return "-".join(raw[i:i + 4] for i in range(0, 12, 4))


# -- the access code ----------------------------------------------------------------------------
def ensure_code(aws: Aws, cfg: Config) -> bool:
    """Create the SecureString once; an existing code is kept. True if one was created."""
    ssm = aws.client("ssm")
    try:
        ssm.put_parameter(
            Name=code_parameter(cfg), Value=new_code(), Type="SecureString", Overwrite=False,
            Description=f"Visual Tourism ({cfg.prefix}): the class access code of the web page",
            Tags=[{"Key": STACK_TAG, "Value": cfg.prefix}],
        )
    except ClientError as exc:
        if error_code(exc) == "ParameterAlreadyExists":
            return False
        raise
    return True


def rotate_code(aws: Aws, cfg: Config) -> str:
    """A new code; the old one stops working within a minute (the function's cache)."""
    if get_code(aws, cfg) is None:
        raise NotDeployedError("There is no access code yet: run 'visual-tourism up' first.")
    code = new_code()
    aws.client("ssm").put_parameter(Name=code_parameter(cfg), Value=code,
                                    Type="SecureString", Overwrite=True)
    return code


def get_code(aws: Aws, cfg: Config) -> str | None:
    try:
        return aws.client("ssm").get_parameter(
            Name=code_parameter(cfg), WithDecryption=True)["Parameter"]["Value"]
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound" or is_not_found(exc):
            return None
        raise


# -- the function ------------------------------------------------------------------------------
def ensure_function(aws: Aws, cfg: Config, role_arn: str, bucket: str, zip_bytes: bytes,
                    table: str = "") -> str:
    """The web function with this zip (``packaging.build_zip("web")``) and its settings.
    Returns its ARN."""
    return lambda_fn.ensure_code_and_settings(
        aws, cfg, function_name(cfg), function_settings(cfg, role_arn, bucket, table), zip_bytes)


# -- the HTTP API --------------------------------------------------------------------------------
def find_api(aws: Aws, cfg: Config) -> dict[str, Any] | None:
    """Our API (by name and tag); an API of that name without our tag is refused."""
    client = aws.client("apigatewayv2")
    token: str | None = None
    while True:
        page = client.get_apis(**({"NextToken": token} if token else {}))
        for api in page.get("Items", []):
            if api.get("Name") != api_name(cfg):
                continue
            if tags_dict(api.get("Tags")).get(STACK_TAG) != cfg.prefix:
                raise NotOwnedError(f"An HTTP API named {api_name(cfg)} exists but was not "
                                    "created by visual-tourism. Choose another prefix.")
            return api
        token = page.get("NextToken")
        if not token:
            return None


def ensure_api(aws: Aws, cfg: Config, function_arn: str) -> dict[str, Any]:
    """API, Lambda integration (payload 2.0), one route per ``web_app.ROUTES``, the
    auto-deployed ``$default`` stage with throttling, and API Gateway's invoke permission."""
    client = aws.client("apigatewayv2")
    api = find_api(aws, cfg) or client.create_api(
        Name=api_name(cfg), ProtocolType="HTTP", Tags={STACK_TAG: cfg.prefix},
        Description=f"Visual Tourism ({cfg.prefix}): the web page and its API",
    )
    api_id = api["ApiId"]
    integrations = client.get_integrations(ApiId=api_id).get("Items", [])
    ours = next((i for i in integrations if i.get("IntegrationUri") == function_arn), None)
    if ours is None:
        ours = client.create_integration(
            ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=function_arn,
            PayloadFormatVersion="2.0", TimeoutInMillis=10000,
        )
    target = f"integrations/{ours['IntegrationId']}"
    routes = {r["RouteKey"]: r for r in client.get_routes(ApiId=api_id).get("Items", [])}
    for key in web_app.ROUTES:
        if key not in routes:
            client.create_route(ApiId=api_id, RouteKey=key, Target=target)
        elif routes[key].get("Target") != target:
            client.update_route(ApiId=api_id, RouteId=routes[key]["RouteId"], Target=target)
    for key, route in routes.items():
        if key not in web_app.ROUTES:
            client.delete_route(ApiId=api_id, RouteId=route["RouteId"])
    stages = {s["StageName"]: s for s in client.get_stages(ApiId=api_id).get("Items", [])}
    wanted = throttling(cfg)
    per_route = route_throttling(cfg)
    if "$default" not in stages:
        client.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True,
                            DefaultRouteSettings=wanted, RouteSettings=per_route,
                            Tags={STACK_TAG: cfg.prefix})
    else:
        have = stages["$default"].get("DefaultRouteSettings", {})
        have_routes = stages["$default"].get("RouteSettings", {})
        if {k: have.get(k) for k in wanted} != wanted or any(
                {k: have_routes.get(r, {}).get(k) for k in v} != v for r, v in per_route.items()):
            client.update_stage(ApiId=api_id, StageName="$default", DefaultRouteSettings=wanted,
                                RouteSettings=per_route)
    _ensure_invoke_permission(aws, cfg, api_id)
    return {"id": api_id, "url": api["ApiEndpoint"].rstrip("/") + "/"}


def _ensure_invoke_permission(aws: Aws, cfg: Config, api_id: str) -> None:
    source = f"arn:{aws.partition}:execute-api:{cfg.region}:{aws.account_id}:{api_id}/*/*"
    try:
        policy = json.loads(aws.lambda_.get_policy(FunctionName=function_name(cfg))["Policy"])
        statement = next((s for s in policy["Statement"] if s.get("Sid") == PERMISSION_ID), None)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        statement = None
    if statement and source in json.dumps(statement.get("Condition", {})):
        return
    if statement:
        aws.lambda_.remove_permission(FunctionName=function_name(cfg), StatementId=PERMISSION_ID)
    aws.lambda_.add_permission(
        FunctionName=function_name(cfg), StatementId=PERMISSION_ID,
        Action="lambda:InvokeFunction", Principal="apigateway.amazonaws.com", SourceArn=source,
    )


# -- bucket CORS (merged: other rules stay) -----------------------------------------------------
def _cors_rules(aws: Aws, bucket: str) -> list[dict[str, Any]]:
    try:
        return aws.s3.get_bucket_cors(Bucket=bucket).get("CORSRules", [])
    except ClientError as exc:
        if error_code(exc) == "NoSuchCORSConfiguration" or is_not_found(exc):
            return []
        raise


def ensure_cors(aws: Aws, bucket: str, origin: str) -> None:
    rules = _cors_rules(aws, bucket)
    want = cors_rule(origin)
    others = [r for r in rules if r.get("ID") != CORS_RULE_ID]
    if any(r.get("ID") == CORS_RULE_ID and r == want for r in rules):
        return
    aws.s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": others + [want]})


def remove_cors(aws: Aws, bucket: str) -> bool:
    try:
        rules = _cors_rules(aws, bucket)
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":
            return False
        raise
    kept = [r for r in rules if r.get("ID") != CORS_RULE_ID]
    if len(kept) == len(rules):
        return False
    if kept:
        aws.s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": kept})
    else:
        aws.s3.delete_bucket_cors(Bucket=bucket)
    return True


def origin_of(url: str) -> str:
    return "/".join(url.split("/")[:3])


# -- the step: deploy / remove / describe / link --------------------------------------------------
def deploy(aws: Aws, cfg: Config, bucket: str) -> dict[str, str]:
    """Create or update everything the page needs. Returns the API's id and URL."""
    table = presets_table(cfg)
    policy = web_policy(cfg, account=aws.account_id, bucket=bucket, partition=aws.partition,
                        table=table)
    role = iam.ensure_role(aws, cfg, role_name(cfg), "lambda.amazonaws.com", POLICY_NAME,
                           policy)
    created = ensure_code(aws, cfg)
    logs.ensure_log_group(aws, cfg, log_group(cfg))
    zip_bytes = packaging.build_zip("web")
    arn = ensure_function(aws, cfg, role, bucket, zip_bytes, table)
    api = ensure_api(aws, cfg, arn)
    # Locally the page's origin is the running `local serve` front's, not moto's address.
    served = served_url(cfg) if aws.is_local else None
    ensure_cors(aws, bucket, origin_of(served or api["url"]))
    # Never the code: only where it is kept.
    state = State(cfg.state_path)
    state.record("web", **{k: v for k, v in state.steps.get("web", {}).items()
                           if k == "local_url"}, api_id=api["id"], url=api["url"],
                                 function=function_name(cfg), code_parameter=code_parameter(cfg),
                                 code_sha256=packaging.code_sha256(zip_bytes))
    log.info("web API %s (new access code: %s)", api["url"], created)
    return api


def remove(aws: Aws, cfg: Config, bucket: str) -> list[str]:
    """Remove what ``deploy`` created (only what carries our tag). Returns what went."""
    removed: list[str] = []
    if remove_cors(aws, bucket):
        removed.append("bucket CORS rule for the web page")
    api = find_api(aws, cfg)
    if api is not None:
        aws.client("apigatewayv2").delete_api(ApiId=api["ApiId"])
        removed.append(f"HTTP API {api_name(cfg)}")
    current = lambda_fn.get_function(aws, function_name(cfg))
    if current is not None and lambda_fn.is_ours(aws, cfg, current) and ignore_not_found(
            lambda: aws.lambda_.delete_function(FunctionName=function_name(cfg)),
            f"Lambda {function_name(cfg)}"):
        removed.append(f"Lambda {function_name(cfg)}")
    if logs.delete_log_group(aws, cfg, log_group(cfg)):
        removed.append("web API log group")
    if iam.delete_role(aws, cfg, role_name(cfg)):
        removed.append(f"IAM role {role_name(cfg)}")
    if delete_code(aws, cfg):
        removed.append("access code parameter")
    State(cfg.state_path).forget("web")
    return removed


def delete_code(aws: Aws, cfg: Config) -> bool:
    ssm = aws.client("ssm")
    try:
        tags = ssm.list_tags_for_resource(ResourceType="Parameter",
                                          ResourceId=code_parameter(cfg))["TagList"]
    except ClientError as exc:
        if error_code(exc) in ("InvalidResourceId", "ParameterNotFound") or is_not_found(exc):
            return False
        raise
    if tags_dict(tags).get(STACK_TAG) != cfg.prefix:
        log.warning("Parameter %s was not created by visual-tourism: left alone",
                    code_parameter(cfg))
        return False
    try:
        ssm.delete_parameter(Name=code_parameter(cfg))
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return False
        raise DeployError(f"Could not delete {code_parameter(cfg)}: {exc}") from exc
    return True


LOCAL_SERVE = "visual-tourism local serve --web"
LINK_COMMAND = ("run 'visual-tourism web' (it prints the link with the access code and its "
                "QR code)")
NOT_SERVED = ("in local mode the page is served by '" + LOCAL_SERVE + "' on this machine, "
              "and it is not running: start it (it prints the link), then run this again "
              "with the variables it prints exported")


def served_url(cfg: Config, timeout: float = 1.0) -> str | None:
    """Where `local serve --web` serves the page (recorded in the state file by
    visual_tourism/local/web_front.py), if a local front answers there now; else None."""
    url = State(cfg.state_path).get("web", "local_url")
    if not url:
        return None
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                            timeout=timeout)
    try:
        connection.request("HEAD", "/")
        server = connection.getresponse().getheader("server") or ""
    except OSError:
        return None
    finally:
        connection.close()
    # Only our front: a stale record whose port something else took is "not running".
    return url if server.startswith(LOCAL_FRONT_SERVER) else None


def page_url(aws: Aws, cfg: Config) -> str | None:
    """The page's address: the API's on AWS; in local mode (boto3 pointed at loopback) the
    running `local serve` front's (moto's execute-api address answers nowhere). None: there
    is no page to open (not deployed, or locally, not being served)."""
    api = find_api(aws, cfg)
    if api is None:
        return None
    if aws.is_local:
        return served_url(cfg)
    return api["ApiEndpoint"].rstrip("/") + "/"


def describe(aws: Aws, cfg: Config) -> dict[str, Any]:
    if cfg.web_api != "on":
        return {"state": "off (setting web_api)"}
    api = find_api(aws, cfg)
    if api is None:
        return {"state": "absent"}
    url = page_url(aws, cfg)
    if url is None:  # local mode, `local serve --web` not running
        return {"state": "not served", "note": NOT_SERVED}
    # Never the link itself: it carries the access code, which appears only where it is
    # asked for (`visual-tourism web`, `local serve`, the demo notebook's QR cell), not in
    # `status` (nor in a notebook that shows status).
    return {"state": "ready", "url": url, "link_with_code": LINK_COMMAND,
            "throttle": f"{cfg.web_rate_limit:g} requests/s (bursts of {cfg.web_burst_limit}); "
                        f"upload forms {cfg.web_upload_rate_limit:g}/s (bursts of "
                        f"{cfg.web_upload_burst_limit})"}


def link(aws: Aws, cfg: Config, url: str | None = None) -> str:
    """The page, ready to use: its URL with the access code in the fragment."""
    if url is None:
        if find_api(aws, cfg) is None:
            raise NotDeployedError("The web page is not deployed: run 'visual-tourism up' "
                                   "(with the setting web_api on).")
        url = page_url(aws, cfg)
        if url is None:
            raise NotDeployedError(f"No web page to open: {NOT_SERVED}.")
    code = get_code(aws, cfg)
    if code is None:
        raise NotDeployedError("The access code is missing: run 'visual-tourism up' again.")
    return f"{url}#code={code}"


def terminal_qr(text: str) -> str:
    """``text`` as a QR code drawn with block characters, for `visual-tourism web`."""
    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue()
