"""The web page as a step of the whole stack: `up` with the setting off, `down`, `status`,
the CloudFormation path's access code, and the link printed in local mode (the address that
`local serve --web` serves, never moto's execute-api one)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from visual_tourism import infra, stack, web
from visual_tourism.aws import Aws
from visual_tourism.cli import main
from visual_tourism.config import load_config
from visual_tourism.state import State

REGION = "us-east-1"


def no_sleep(_: float) -> None:
    pass


@pytest.fixture
def aws(mocked_aws) -> Aws:
    return Aws(REGION, sleep=no_sleep)


def _apis(aws: Aws) -> list[str]:
    return [a["Name"] for a in aws.client("apigatewayv2").get_apis().get("Items", [])]


def _cors_ids(aws: Aws, bucket: str) -> list[str]:
    try:
        return [r.get("ID") for r in aws.s3.get_bucket_cors(Bucket=bucket)["CORSRules"]]
    except ClientError:
        return []


def _functions(aws: Aws) -> list[str]:
    return [f["FunctionName"] for f in aws.lambda_.list_functions()["Functions"]]


def _roles(aws: Aws) -> list[str]:
    return [r["RoleName"] for r in aws.iam.list_roles()["Roles"]]


def test_up_with_the_web_setting_off_creates_no_api(aws, tmp_path):
    cfg = load_config(web_api="off", state_dir=str(tmp_path / "state"))
    names = stack.up(cfg, aws, endpoint_poll=0)
    assert "web_url" not in names
    assert _apis(aws) == []
    assert web.function_name(cfg) not in _functions(aws)
    assert web.role_name(cfg) not in _roles(aws)
    assert web.get_code(aws, cfg) is None
    assert web.CORS_RULE_ID not in _cors_ids(aws, names["bucket"])
    assert stack.status(cfg, aws)["web"] == {"state": "off (setting web_api)"}
    assert State(cfg.state_path).get("web", "url") is None


def test_down_removes_the_api_its_function_role_code_and_cors_rule(aws, tmp_path):
    cfg = load_config(state_dir=str(tmp_path / "state"))
    names = stack.up(cfg, aws, endpoint_poll=0)
    assert _apis(aws) == [web.api_name(cfg)] and names["web_url"].startswith("https://")
    assert web.function_name(cfg) in _functions(aws) and web.role_name(cfg) in _roles(aws)
    assert web.get_code(aws, cfg) and web.CORS_RULE_ID in _cors_ids(aws, names["bucket"])
    removed = stack.down(cfg, aws)
    assert {f"HTTP API {web.api_name(cfg)}", f"Lambda {web.function_name(cfg)}",
            f"IAM role {web.role_name(cfg)}", "access code parameter",
            "bucket CORS rule for the web page"} <= set(removed)
    assert _apis(aws) == []
    assert web.function_name(cfg) not in _functions(aws)
    assert web.role_name(cfg) not in _roles(aws)
    assert web.get_code(aws, cfg) is None
    assert web.CORS_RULE_ID not in _cors_ids(aws, names["bucket"])
    assert stack.status(cfg, aws)["web"] == {"state": "absent"}


def test_down_forgets_the_web_step_in_the_state_file(aws, tmp_path):
    cfg = load_config(state_dir=str(tmp_path / "state"))
    stack.up(cfg, aws, endpoint_poll=0)
    stack.down(cfg, aws)
    assert State(cfg.state_path).get("web", "url") is None


def test_status_shows_the_page_url_and_how_to_get_the_link_never_the_code(
        aws, tmp_path, capsys, monkeypatch):
    """The access code appears only where it is asked for (`visual-tourism web`, `local
    serve`, the demo notebook's QR cell): `status` (and so the quickstart notebook's output,
    which shows it) gives the page's address and the command that prints the link."""
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))
    cfg = load_config(state_dir=str(tmp_path / "state"))
    names = stack.up(cfg, aws, endpoint_poll=0)
    code = web.get_code(aws, cfg)
    info = stack.status(cfg, aws)["web"]
    api = aws.client("apigatewayv2").get_apis()["Items"][0]
    assert info["state"] == "ready"
    assert info["url"] == api["ApiEndpoint"].rstrip("/") + "/" == names["web_url"]
    assert "link" not in info and "visual-tourism web" in info["link_with_code"]
    assert code not in json.dumps(info)
    for args in (["status"], ["status", "--json"]):
        assert main([*args, "--region", REGION]) == 0
        out = capsys.readouterr().out
        assert info["url"] in out and "visual-tourism web" in out
        assert code not in out and "#code=" not in out
    assert main(["web", "--no-qr", "--region", REGION]) == 0  # asked for: there it is
    assert f"{info['url']}#code={code}" in capsys.readouterr().out
    stack.down(cfg, aws, delete_bucket=True)


def test_the_cloudformation_path_creates_the_access_code_once(aws, tmp_path):
    """The template holds no code: infra.after_deploy creates it (web.ensure_code), keeps it
    on later deploys, and creates none when the template left the page out."""
    cfg = load_config(prefix="vt-cfn-web", state_dir=str(tmp_path / "state"))
    name = "vt-cfn-web-bucket"
    aws.s3.create_bucket(Bucket=name)
    said: list[str] = []
    infra.after_deploy(aws, cfg, {"BucketName": name}, said.append)  # page left out
    assert web.get_code(aws, cfg) is None
    url = "https://abc123.execute-api.us-east-1.amazonaws.com/"
    infra.after_deploy(aws, cfg, {"BucketName": name, "WebUrl": url}, said.append)
    code = web.get_code(aws, cfg)
    assert code and len(code) == 14
    assert any(url in line and "visual-tourism web" in line for line in said)
    assert code not in "\n".join(said)  # printed: where the link is, never the code
    infra.after_deploy(aws, cfg, {"BucketName": name, "WebUrl": url}, said.append)
    assert web.get_code(aws, cfg) == code  # an update keeps the class's code
    assert web.delete_code(aws, cfg) and web.get_code(aws, cfg) is None


# -- local mode: the printed link is the one `local serve --web` serves -------------------------
def test_in_local_mode_web_and_status_print_the_served_page_not_motos_address(
        moto_server, tmp_path, monkeypatch, capsys):
    from visual_tourism.local.web_front import serve_local

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # what `local serve` tells one to export
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))
    cfg = load_config(region=REGION, prefix="vt-webloc", state_dir=str(tmp_path / "state"))
    aws = Aws(REGION, sleep=no_sleep)
    assert aws.is_local
    bucket = stack.bucket_name(cfg, aws)
    aws.s3.create_bucket(Bucket=bucket)
    web.deploy(aws, cfg, bucket)
    args = ["--prefix", cfg.prefix, "--region", REGION]
    try:
        # Deployed, not served: say so, and how to start it; never moto's dead address.
        assert main(["web", "--no-qr", *args]) == 2
        err = capsys.readouterr().err
        assert "local serve --web" in err and "not running" in err
        assert "execute-api" not in err
        described = web.describe(aws, cfg)
        assert described["state"] == "not served" and "local serve --web" in described["note"]
        assert "url" not in described

        front, link = serve_local(cfg, SimpleNamespace(env={"AWS_ENDPOINT_URL": moto_server}))
        try:
            assert main(["web", "--no-qr", *args]) == 0
            out = capsys.readouterr().out
            assert link in out and "execute-api" not in out
            assert link.startswith(front.url) and front.url.startswith("http://127.0.0.1:")
            assert main(["status", "--json", *args]) == 0
            shown = json.loads(capsys.readouterr().out)["web"]
            assert (shown["state"], shown["url"]) == ("ready", front.url)
            assert "link" not in shown and link.split("#code=")[1] not in json.dumps(shown)
            # `up` again while it serves: the bucket's CORS rule keeps the served origin.
            web.deploy(aws, cfg, bucket)
            rule = next(r for r in aws.s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
                        if r["ID"] == web.CORS_RULE_ID)
            assert rule["AllowedOrigins"] == [front.url.rstrip("/")]
            assert web.link(aws, cfg) == link
        finally:
            front.stop()
        # Stopped: the address is forgotten and the message is back.
        assert State(cfg.state_path).get("web", "local_url") is None
        assert main(["web", "--no-qr", *args]) == 2
        assert "not running" in capsys.readouterr().err
    finally:
        web.remove(aws, cfg, bucket)
        aws.s3.delete_bucket(Bucket=bucket)


def test_a_recorded_address_where_nothing_serves_is_not_running(tmp_path):
    cfg = load_config(state_dir=str(tmp_path / "state"))
    assert web.served_url(cfg) is None  # nothing recorded
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    State(cfg.state_path).record("web", local_url=f"http://127.0.0.1:{port}/")
    assert web.served_url(cfg, timeout=0.5) is None
