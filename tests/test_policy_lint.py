"""Security linters in the suite (issue 14): parliament on every IAM policy document the stack
builds, cfn-lint's security rules on infra/template.yaml.

- parliament (with its community auditors) lints each document as the real policy-building
  functions make it, for both inference modes, with the web API and the stop deadline on.
  Gate: no finding of severity MEDIUM, HIGH or CRITICAL, and no needless ``Resource: "*"``
  (RESOURCE_STAR, rated LOW by parliament but exactly the over-breadth least privilege is
  about), except the waivers below, each with its reason. A waiver that no longer matches
  anything fails too, so the list cannot go stale.
- The template's IAM documents are not linted separately: tests/test_infra.py proves that the
  resolved template carries exactly the documents of these helpers.
- The template scan is cfn-lint with the rules that concern security made mandatory (so no
  template metadata can switch them off) and the informational ones included. checkov was
  the first choice but its releases pin boto3/botocore to an old line (checkov 3.3.30:
  boto3 1.35.x; this project needs >=1.40), so it cannot live in this venv.
- Each gate is shown to fail on a deliberately bad input.

The findings, by severity, go to the run's "security" section (security_tally, conftest.py).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID  # the placeholder account, 123456789012

from visual_tourism import bucket, iam, infra, schedule, web
from visual_tourism.config import INFERENCE_MODES, load_config
from visual_tourism.profiles import PROFILES

REGION = "us-east-1"
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
GATED_SEVERITIES = {"CRITICAL", "HIGH", "MEDIUM"}
GATED_ISSUES = {"RESOURCE_STAR", "RESOURCE_EFFECTIVELY_STAR"}

_TRUST = (
    "parliament reads every document as an identity policy; a trust policy has no Resource "
    "by definition (IAM rejects one that has it). Its shape is checked by cfn-lint E3530 in "
    "the template scan, its Principal and Condition by parliament all the same."
)
# {(policy name, parliament issue): reason}
WAIVERS: dict[tuple[str, str], str] = {
    ("trust/lambda", "MALFORMED"): _TRUST,
    ("trust/sagemaker", "MALFORMED"): _TRUST,
    ("trust/scheduler", "MALFORMED"): _TRUST,
    **{
        (f"sagemaker/{mode}", "CREDENTIALS_EXPOSURE"): (
            "ecr:GetAuthorizationToken: SageMaker pulls the model image with the execution "
            "role, and the call has no resource-level permissions (Resource must be '*'). "
            "The token only lets the role do what its ECR statements allow: read the one "
            "image repository."
        )
        for mode in INFERENCE_MODES
    },
    ("scheduler/async", "RESOURCE_STAR"): (
        "application-autoscaling:RegisterScalableTarget: the scalable target's ARN ends in an "
        "id AWS generates when `up` registers it, so the pure role_policy() cannot name it. "
        "The role can make only this one call, and only the schedule assumes it."
    ),
}

# cfn-lint rules that concern security: secrets, IAM documents, public ACLs, who may invoke
# the functions, what happens to stored data. Each must exist in the installed cfn-lint.
CFN_SECURITY_RULES = {
    "E1027": "secure-string dynamic references only where supported",
    "E1051": "Secrets Manager references only in resource properties",
    "W1011": "secrets as dynamic references, not parameters",
    "W1051": "a secret where a secret ARN is expected",
    "W2501": "password properties: NoEcho parameters, not strings",
    "E3510": "identity-based IAM policies",
    "E3512": "resource-based IAM policies",
    "E3513": "ECR repository policies",
    "E3514": "resource ARNs of resource policies",
    "E3530": "IAM trust policies",
    "I3510": "statement resources match the actions",
    "W2511": "IAM resource policy syntax",
    "W3037": "IAM permissions exist",
    "W3045": "S3 access through bucket policies, not ACLs",
    "W3663": "Lambda permissions: SourceAccount with an account-less SourceArn",
    "W3664": "Lambda permissions: Principal matches the SourceArn",
    "W3011": "stateful resources: DeletionPolicy with UpdateReplacePolicy",
    "I3011": "stateful resources: explicit DeletionPolicy/UpdateReplacePolicy",
    "I3013": "auto-expiring content: explicit retention",
}
# {(rule id, resource logical id): reason}
CFN_WAIVERS: dict[tuple[str, str], str] = {}


# -- parliament -------------------------------------------------------------------------------
@functools.cache
def _parliament() -> types.ModuleType:
    """parliament 1.6.4 calls pkg_resources.resource_filename at import, and setuptools>=81
    no longer ships pkg_resources: lend it that one function for the import only."""
    shimmed = False
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(  # type: ignore[attr-defined]
            importlib.resources.files(package) / name)
        sys.modules["pkg_resources"] = shim
        shimmed = True
    try:
        import parliament
    finally:
        if shimmed:
            del sys.modules["pkg_resources"]
    # The severities of the community auditors' findings, as `parliament
    # --include-community-auditors` loads them.
    parliament.override_config(
        Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml")
    return parliament


def lint_policy(name: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """parliament's findings on one document: issue, severity, detail, location."""
    parliament = _parliament()
    from parliament.cli import is_finding_filtered

    policy = parliament.analyze_policy_string(
        json.dumps(document), filepath=name, include_community_auditors=True)
    findings = []
    for finding in map(parliament.enhance_finding, policy.findings):
        if is_finding_filtered(finding, "LOW"):  # parliament's own ignore_locations
            continue
        location = {k: v for k, v in finding.location.items() if k != "filepath"}
        findings.append({"policy": name, "issue": finding.issue,
                         "severity": finding.severity, "detail": finding.detail,
                         "location": location})
    return findings


def gated(finding: dict[str, Any]) -> bool:
    return finding["severity"] in GATED_SEVERITIES or finding["issue"] in GATED_ISSUES


def stack_policies() -> dict[str, dict[str, Any]]:
    """Every IAM document the stack builds, from the real helpers, both inference modes, web
    API and stop deadline on. Names: <role or resource>[/<mode>]."""
    account = DEFAULT_ACCOUNT_ID
    documents: dict[str, dict[str, Any]] = {}
    for mode in INFERENCE_MODES:
        cfg = load_config(env={}, region=REGION, inference_mode=mode, stop_after="3h",
                          web_api="on")
        name = cfg.bucket_name(account)
        image = PROFILES[cfg.model_profile].image_uri(cfg.region)
        documents[f"lambda/{mode}"] = iam.lambda_policy(cfg, account=account, bucket=name)
        documents[f"sagemaker/{mode}"] = iam.sagemaker_policy(
            cfg, account=account, image_uri=image, bucket=name)
        documents[f"scheduler/{mode}"] = schedule.role_policy(cfg, account=account)
    # The web role's and the bucket's documents do not depend on the inference mode.
    documents["web"] = web.web_policy(cfg, account=account, bucket=name,
                                      table=f"{cfg.prefix}-presets")
    documents["bucket"] = bucket.bucket_policy(name)
    documents["trust/lambda"] = iam.trust_policy("lambda.amazonaws.com")  # handler and web
    documents["trust/sagemaker"] = iam.trust_policy("sagemaker.amazonaws.com",
                                                    source_account=account)
    documents["trust/scheduler"] = iam.trust_policy("scheduler.amazonaws.com")
    return documents


def _tally(security_tally: dict, tool: str, levels: tuple[str, ...],
           findings: list[dict[str, Any]], waived: int) -> None:
    """{severity: count} of every finding, waived ones included, then how many are waived."""
    counts = dict.fromkeys(levels, 0)
    for finding in findings:
        counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
    security_tally["findings"][tool] = {**counts, "waived": waived}


def test_parliament_passes_every_policy_the_stack_builds(security_tally):
    findings = [f for name, document in stack_policies().items()
                for f in lint_policy(name, document)]
    waived = [f for f in findings if (f["policy"], f["issue"]) in WAIVERS]
    _tally(security_tally, "parliament", SEVERITIES, findings, len(waived))

    unwaived = [f for f in findings if gated(f) and (f["policy"], f["issue"]) not in WAIVERS]
    assert unwaived == [], json.dumps(unwaived, indent=1)
    used = {(f["policy"], f["issue"]) for f in findings}
    assert set(WAIVERS) <= used, f"stale waivers: {sorted(set(WAIVERS) - used)}"


@pytest.mark.parametrize(("document", "issue"), [
    # The issue's example: every S3 action (bucket policies and ACLs too) on every bucket.
    ({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}, "PERMISSIONS_MANAGEMENT_ACTIONS"),
    # A read that could name its objects, left on "*".
    ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}, "RESOURCE_STAR"),
    # Escalation: pass any role to a new function and run it.
    ({"Effect": "Allow", "Action": ["iam:PassRole", "lambda:CreateFunction",
                                    "lambda:InvokeFunction"], "Resource": "*"},
     "PRIVILEGE_ESCALATION"),
], ids=["s3-star", "resource-star", "privilege-escalation"])
def test_parliament_gate_fails_on_an_over_broad_policy(document, issue):
    policy = {"Version": "2012-10-17", "Statement": [document]}
    findings = lint_policy("lambda/realtime", policy)
    assert issue in {f["issue"] for f in findings if gated(f)}
    assert ("lambda/realtime", issue) not in WAIVERS


# -- cfn-lint's security rules on the template -------------------------------------------------
def scan_template(text: str) -> list[dict[str, Any]]:
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    matches = lint(text, config=ManualArgs(
        regions=[REGION], include_checks=["I"], mandatory_checks=sorted(CFN_SECURITY_RULES)))
    return [
        {"rule": m.rule.id, "severity": m.rule.severity, "line": m.linenumber,
         "resource": (m.path[1] if len(m.path) > 1 and m.path[0] == "Resources" else ""),
         "message": m.message}
        for m in matches if m.rule.id in CFN_SECURITY_RULES
    ]


def test_security_rules_exist_in_this_cfn_lint():
    from cfnlint.core import get_rules

    known = {rule.id for rule in get_rules([], [], ["I"]).rules.values()}
    assert set(CFN_SECURITY_RULES) <= known, sorted(set(CFN_SECURITY_RULES) - known)


def test_template_passes_cfn_lint_security_rules(security_tally):
    findings = scan_template(infra.TEMPLATE.read_text())
    unwaived = [f for f in findings if (f["rule"], f["resource"]) not in CFN_WAIVERS]
    _tally(security_tally, "cfn-lint (security rules)", ("error", "warning", "informational"),
           findings, len(findings) - len(unwaived))

    assert unwaived == [], json.dumps(unwaived, indent=1)
    used = {(f["rule"], f["resource"]) for f in findings}
    assert set(CFN_WAIVERS) <= used, f"stale waivers: {sorted(set(CFN_WAIVERS) - used)}"


def test_template_scan_fails_on_a_public_bucket_acl():
    text = infra.TEMPLATE.read_text()
    anchor = "      PublicAccessBlockConfiguration:\n"
    assert anchor in text
    public = text.replace(anchor, "      AccessControl: PublicRead\n" + anchor, 1)
    assert [(f["rule"], f["resource"]) for f in scan_template(public)] == [("W3045", "Bucket")]
