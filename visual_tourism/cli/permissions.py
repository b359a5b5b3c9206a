"""`visual-tourism check` (the preflight: permissions, then the account's limits),
`visual-tourism admin-policy` (what to ask an administrator for) and `up --skip-check`."""

from __future__ import annotations

import argparse
import json
import sys

from .. import bedrock, iam, permissions, quotas, where
from ..aws import Aws
from ..bucket import bucket_name
from .common import config_from_args, say


def cmd_check(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, stop_after=args.stop_after)
    aws = Aws(cfg.region)
    report = permissions.preflight(cfg, aws)
    limits = quotas.check(cfg, aws)
    access = bedrock.model_access(aws, cfg)  # a managed model: may it be invoked here?
    if args.json:
        print(json.dumps({"principal": report.principal, "known": report.known,
                          "reason": report.reason, "method": report.method,
                          "steps": report.rows(), "plan": limits.plan, "note": limits.note,
                          "limits": limits.rows(),
                          "model_access": access.as_dict() if access else None}, indent=2))
    else:
        say(report.text())
        say(limits.text())
        if access is not None:
            say(f"Model access ({cfg.profile.name}): {access.text}")
    refused = access is not None and access.state in (bedrock.NEEDS_ACCESS, bedrock.NOT_OFFERED)
    if report.blocking or limits.short or refused:
        return 1
    if not report.known or report.missing or limits.unknown:
        return 3  # cannot tell
    return 0


def cmd_admin_policy(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    aws = Aws(cfg.region)
    role = args.role_arn or (permissions.principal_arn(aws)
                             if ":assumed-role/" in aws.identity["Arn"] else None)
    studio = iam.studio_role_arn() if where.in_studio() else None
    policy = permissions.admin_policy(cfg, aws.account_id, bucket_name(cfg, aws),
                                      aws.partition, principal_arn=role, studio_role=studio)
    print(json.dumps(policy, indent=2))
    print(f"# On top of AmazonSageMakerFullAccess, for stack {cfg.prefix!r} in {cfg.region} "
          f"(account {aws.account_id}); attach it to {role or 'the Studio execution role'}, "
          "e.g. aws iam put-role-policy --role-name ROLE --policy-name visual-tourism "
          "--policy-document file://policy.json", file=sys.stderr)
    return 0


def add_cli(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check", parents=[common],
        help="which steps your AWS identity may run, and whether the account has room "
             "(preflight)",
        description="Ask IAM (iam:SimulatePrincipalPolicy, with this stack's resource ARNs) "
        "which steps of up, status, ask and down the current identity may run, and list what "
        "is missing. Then the account's limits for this plan, one line each (ok, SHORT, "
        "cannot tell, with the figures): the region, the endpoint instance type's quota "
        "(Service Quotas) against min and max instances and what other endpoints use, and "
        "Lambda's concurrency against what the stack reserves; a short line says what to do "
        "(the quota increase command, a smaller plan, another profile or region). Says "
        "plainly when it cannot tell (the identity may not simulate or read quotas, or is the "
        "root user). Exit status 0: all clear, 1: something missing or short, 3: cannot "
        "tell. Local mode evaluates the identity's policies itself (moto has no simulator) "
        "and serves its own quotas (VT_LOCAL_QUOTAS).",
    )
    p.add_argument("--stop-after", metavar="DURATION",
                   help="include the stop deadline's needs, e.g. 3h (default: VT_STOP_AFTER, "
                        "else none)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "admin-policy", parents=[common],
        help="print the IAM policy a Studio role needs on top of AmazonSageMakerFullAccess",
        description="Print, as JSON, the least-privilege policy (scoped to this stack's "
        "prefix, bucket, region and account) that a SageMaker Studio execution role needs on "
        "top of the AWS managed policy AmazonSageMakerFullAccess to run every notebook: "
        "both inference modes, the web page and the stop deadline. Hand it to your "
        "administrator.",
    )
    p.add_argument("--role-arn", metavar="ARN",
                   help="the role that gets the policy, for its self-check statement "
                        "(default: the current assumed role, else any role of the account)")
    p.set_defaults(func=cmd_admin_policy)

    up = sub.choices.get("up")
    if up is not None:  # `up --skip-check`: run without the preflight
        up.add_argument("--skip-check", action="store_true",
                        help="do not run the preflight first (permissions and limits)")
        run_up = up.get_default("func")

        def up_maybe_unchecked(args: argparse.Namespace) -> int:
            if not getattr(args, "skip_check", False):
                return run_up(args)
            with permissions.skipped():
                return run_up(args)

        up.set_defaults(func=up_maybe_unchecked)
