"""What a first-time user meets: ask says at once when nothing would answer, status and down
speak the same language as the CLI. Against moto in-process (see tests/test_stack.py)."""

from __future__ import annotations

import pytest

from visual_tourism import lambda_fn, stack
from visual_tourism.aws import Aws
from visual_tourism.config import IMAGES_DIR, load_config
from visual_tourism.errors import NotDeployedError

pytestmark = pytest.mark.usefixtures("mocked_aws")
PHOTO = IMAGES_DIR / "tour_eiffel.jpeg"


@pytest.fixture
def cfg():
    return load_config()


@pytest.fixture
def aws(cfg) -> Aws:
    return Aws(cfg.region, sleep=lambda _: None)


def _uploads(cfg, aws) -> list[str]:
    name = stack.bucket_name(cfg, aws)
    listing = aws.s3.list_objects_v2(Bucket=name, Prefix=cfg.input_prefix)
    # The folder marker "input/" is made by up; a photo would be a key below it.
    return [o["Key"] for o in listing.get("Contents", []) if o["Key"] != cfg.input_prefix]


def test_ask_after_down_says_at_once_that_the_function_is_gone(cfg, aws, monkeypatch):
    stack.up(cfg, aws, endpoint_poll=0)
    stack.down(cfg, aws)  # keeps the bucket: the situation a user meets
    sleeps: list[float] = []
    monkeypatch.setattr(aws, "sleep", sleeps.append)  # ask's polling waits through it
    with pytest.raises(NotDeployedError, match=f"function {cfg.function_name} does not exist"):
        stack.ask(PHOTO, cfg, aws, timeout=300)
    assert sleeps == []  # said before waiting at all, not after the 300 s of the timeout
    assert _uploads(cfg, aws) == []  # nothing was uploaded


def test_ask_without_the_notification_says_so_before_uploading(cfg, aws):
    stack.up(cfg, aws, endpoint_poll=0)
    name = stack.bucket_name(cfg, aws)
    assert lambda_fn.remove_notification(aws, cfg, name)
    with pytest.raises(NotDeployedError, match="no notification") as error:
        stack.ask(PHOTO, cfg, aws, timeout=300)
    assert "visual-tourism up" in str(error.value)
    assert _uploads(cfg, aws) == []


def test_the_trigger_check_reads_targets_and_filters_not_our_ids(cfg, aws):
    """The CloudFormation template's notification has an Id of its own; it counts too."""
    stack.up(cfg, aws, endpoint_poll=0)
    name = stack.bucket_name(cfg, aws)
    key = cfg.input_prefix + "photo.jpeg"
    assert lambda_fn.trigger_problem(aws, cfg, name, key) is None
    arn = aws.lambda_.get_function(FunctionName=cfg.function_name)["Configuration"][
        "FunctionArn"]

    def wire(**rule):
        aws.s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration={
            "LambdaFunctionConfigurations": [{"LambdaFunctionArn": arn, **rule}]})

    wire(Id="made-by-cloudformation", Events=["s3:ObjectCreated:*"], Filter={"Key": {
        "FilterRules": [{"Name": "prefix", "Value": cfg.input_prefix}]}})
    assert lambda_fn.trigger_problem(aws, cfg, name, key) is None
    wire(Events=["s3:ObjectCreated:*"], Filter={"Key": {"FilterRules": [
        {"Name": "prefix", "Value": "elsewhere/"}]}})
    assert "no notification" in lambda_fn.trigger_problem(aws, cfg, name, key)
    wire(Events=["s3:ObjectRemoved:*"])
    assert "no notification" in lambda_fn.trigger_problem(aws, cfg, name, key)
    wire(Events=["s3:ObjectCreated:*"], Filter={"Key": {"FilterRules": [
        {"Name": "suffix", "Value": ".png"}]}})
    assert "no notification" in lambda_fn.trigger_problem(aws, cfg, name, key)


def test_status_says_absent_for_every_part_of_a_stack_that_is_gone(cfg, aws):
    # What a restarted local stack (or a fresh account) looks like: nothing at all.
    info = stack.status(cfg, aws)
    assert info["bucket"]["state"] == "absent"
    assert info["function"]["state"] == "absent"
    assert info["endpoint"]["state"] == "absent"
    assert info["autoscaling"]["state"] == "absent"
    assert info["delivery"]["state"] == "absent"
    assert set(info["roles"].values()) == {"absent"}
    unknown = [part for part, value in info.items()
               if isinstance(value, dict) and value.get("state") == "unknown"]
    assert not unknown, unknown


def test_down_names_the_cli_flag_for_the_kept_bucket(cfg, aws):
    stack.up(cfg, aws, endpoint_poll=0)
    said: list[str] = []
    stack.down(cfg, aws, progress=said.append)
    kept = [line for line in said if line.startswith("kept bucket")]
    assert kept and "visual-tourism down --delete-bucket" in kept[0]
    assert "delete_bucket=True" not in kept[0]


def test_local_mode_says_nothing_is_billed(cfg, monkeypatch):
    assert not Aws(cfg.region).is_local  # moto in-process: the AWS price, as on AWS
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    local = Aws(cfg.region)
    assert local.is_local
    from visual_tourism import prices

    text = prices.describe_cost("ml.g4dn.12xlarge", 1, "us-east-1", local=local.is_local)
    assert text.startswith("nothing is billed in local mode")
    assert "$4.89/hour" in text  # still says what it would cost on AWS
    # One month, one convention (730 hours, as describe_plan and docs/aws.md use).
    assert f"about ${4.89 * prices.HOURS_PER_MONTH:,.0f} a month" in text
