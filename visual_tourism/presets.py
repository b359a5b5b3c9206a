"""DynamoDB: the answer presets table, its seeds, and reading, writing and deleting presets.

One item per named preset (the schema, the seeds and the rules are in
``photo_handler/presets_schema.py``, in the photo function's zip, whose handler reads one
preset per photo with GetItem). The table is on-demand (PAY_PER_REQUEST: a class's few
hundred reads cost cents), encrypted with a KMS key (SSE), has point-in-time recovery (a bad
edit can be undone for 35 days), and carries the stack's tag: ``down`` removes only a table
that carries it, and keeps it with ``--keep-presets`` (or ``keep_presets = true``).

Every write is checked against the serving container's limits for the active profile
(``presets_schema.validate_preset``) and is conditional on the version the writer read:
``SET version = version + 1`` only if ``version`` is still the one read, so two teachers
editing the same preset cannot silently overwrite each other. Seeds are written only where no
item of that name exists (``attribute_not_exists(name)``): ``up`` never undoes an edit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from photo_handler import presets_schema

from . import bucket
from .aws import Aws, error_code, error_message, ignore_not_found, tags_dict
from .config import IMAGES_DIR, STACK_TAG, Config
from .errors import ConfigError, DeployError, NotDeployedError, NotOwnedError, VisualTourismError

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

KEY = presets_schema.KEY
CONDITIONAL_FAILED = "ConditionalCheckFailedException"


class PresetError(ConfigError):
    """A preset that cannot be written or used: invalid, unknown, or `default` deleted."""


class PresetConflictError(VisualTourismError):
    """Someone else wrote the preset since it was read: nothing was overwritten."""


def _quiet(message: str) -> None:
    log.info("%s", message)


# -- the table's settings (pure: the template is checked against them) ----------------------


def table_arn(cfg: Config, account: str, partition: str = "aws") -> str:
    return f"arn:{partition}:dynamodb:{cfg.region}:{account}:table/{cfg.presets_table}"


def table_settings(cfg: Config) -> dict[str, Any]:
    """CreateTable's arguments: key ``name`` (S), on-demand, SSE with KMS, tagged."""
    return {
        "TableName": cfg.presets_table,
        "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": KEY, "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"Enabled": True},
        "Tags": [{"Key": STACK_TAG, "Value": cfg.prefix}],
    }


POINT_IN_TIME_RECOVERY = {"PointInTimeRecoveryEnabled": True}


def _db(aws: Aws) -> Any:
    return aws.client("dynamodb")


def _require_on(cfg: Config) -> str:
    if not cfg.presets_table:
        raise PresetError("Presets are off in this configuration (presets = \"off\"): set "
                          "VT_PRESETS=on (or presets = \"on\") and run 'visual-tourism up'.")
    return cfg.presets_table


# -- the table: create, check, describe, delete --------------------------------------------------


def describe_table(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return _db(aws).describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise


def is_ours(aws: Aws, cfg: Config, arn: str) -> bool:
    tags = _db(aws).list_tags_of_resource(ResourceArn=arn).get("Tags", [])
    return tags_dict(tags).get(STACK_TAG) == cfg.prefix


def require_ours_or_absent(aws: Aws, cfg: Config) -> dict[str, Any] | None:
    """The table's description, None when absent; NotOwnedError when it is not this stack's."""
    table = describe_table(aws, _require_on(cfg))
    if table is not None and not is_ours(aws, cfg, table["TableArn"]):
        raise NotOwnedError(
            f"DynamoDB table {cfg.presets_table} exists but was not created by visual-tourism "
            f"(no {STACK_TAG}={cfg.prefix} tag). Choose another prefix (VT_PREFIX), turn "
            "presets off (VT_PRESETS=off), or remove that table."
        )
    return table


def ensure_table(aws: Aws, cfg: Config) -> str:
    """Create the table, or bring ours up to its settings (SSE, point-in-time recovery)."""
    table = require_ours_or_absent(aws, cfg)
    name = cfg.presets_table
    db = _db(aws)
    if table is None:
        created = True
        try:
            db.create_table(**table_settings(cfg))
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # created meanwhile: checked below
                raise DeployError(f"Could not create table {name}: {error_message(exc)}") from exc
            created = False
        aws.wait("dynamodb", "table_exists", delay=2, max_attempts=60, TableName=name)
        # A table made by this call carries our tags from CreateTable; reading them back at
        # once may lag on AWS, so only a table someone else created meanwhile is checked.
        if created:
            log.info("Created DynamoDB table %s", name)
        else:
            require_ours_or_absent(aws, cfg)
    elif table.get("SSEDescription", {}).get("Status") not in ("ENABLED", "UPDATING"):
        db.update_table(TableName=name, SSESpecification=table_settings(cfg)["SSESpecification"])
    if not _pitr_enabled(aws, name):
        db.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification=POINT_IN_TIME_RECOVERY)
    return name


def _pitr_enabled(aws: Aws, name: str) -> bool:
    backups = _db(aws).describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    status = backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
    return status == "ENABLED"


def delete_table(aws: Aws, cfg: Config) -> bool:
    """Delete the table if it is this stack's; True if something was deleted."""
    if not cfg.presets_table:
        return False
    table = describe_table(aws, cfg.presets_table)
    if table is None:
        return False
    if not is_ours(aws, cfg, table["TableArn"]):
        log.warning("Table %s was not created by visual-tourism: left alone", cfg.presets_table)
        return False
    name = cfg.presets_table
    deleted = ignore_not_found(lambda: _db(aws).delete_table(TableName=name), f"table {name}")
    if deleted:
        aws.wait("dynamodb", "table_not_exists", delay=2, max_attempts=60, TableName=name)
    return deleted


def describe(aws: Aws, cfg: Config) -> dict[str, Any]:
    """For `status`: the table's state, its number of presets and their names."""
    if not cfg.presets_table:
        return {"state": "off"}
    table = describe_table(aws, cfg.presets_table)
    if table is None:
        return {"name": cfg.presets_table, "state": "absent"}
    items = list_presets(aws, cfg)
    return {
        "name": cfg.presets_table,
        "state": table.get("TableStatus", "").lower() or "exists",
        "items": len(items),
        "presets": [item[KEY] for item in items],
        "encrypted": table.get("SSEDescription", {}).get("Status") == "ENABLED",
        "point_in_time_recovery": _pitr_enabled(aws, cfg.presets_table),
    }


# -- reading -------------------------------------------------------------------------------------


def _table(aws: Aws, cfg: Config) -> str:
    name = _require_on(cfg)
    if describe_table(aws, name) is None:
        raise NotDeployedError(f"The presets table {name} does not exist yet: run "
                               "'visual-tourism up'.")
    return name


def list_presets(aws: Aws, cfg: Config) -> list[dict[str, Any]]:
    """Every preset, `default` first, then by name."""
    name = _require_on(cfg)
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": name, "ConsistentRead": True}
    while True:
        page = _db(aws).scan(**kwargs)
        items += [presets_schema.from_dynamodb(item) for item in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sorted(items, key=lambda i: (i[KEY] != presets_schema.DEFAULT_NAME, i[KEY]))


def get_preset(aws: Aws, cfg: Config, name: str) -> dict[str, Any] | None:
    answer = _db(aws).get_item(TableName=_require_on(cfg), Key={KEY: {"S": name}},
                               ConsistentRead=True)
    return presets_schema.from_dynamodb(answer["Item"]) if "Item" in answer else None


def _unknown(aws: Aws, cfg: Config, name: str) -> PresetError:
    names = ", ".join(item[KEY] for item in list_presets(aws, cfg)) or "none"
    return PresetError(f"No preset named {name!r}. Presets: {names} ('visual-tourism presets "
                       "list' shows them; 'presets set NAME ...' creates one).")


def require_preset(aws: Aws, cfg: Config, name: str) -> dict[str, Any]:
    item = get_preset(aws, cfg, name)
    if item is None:
        raise _unknown(aws, cfg, name)
    return item


def check_choice(aws: Aws, cfg: Config, preset: str | None,
                 language: str | None) -> dict[str, str]:
    """The S3 metadata an upload carries to pick ``preset`` and ``language``; PresetError when
    the preset does not exist or does not offer the language. The language may be a name or
    a code in any case ("fr", "French", "french"); the metadata names it as the preset does.
    Nothing is uploaded here."""
    metadata: dict[str, str] = {}
    if preset is None and language is None:
        return metadata
    _table(aws, cfg)
    for what, value in (("preset", preset), ("language", language)):
        if value is not None and not presets_schema.NAME_RE.match(value):
            raise PresetError(f"The {what} name {value!r} is not valid: use letters, digits, "
                              "'-' or '_' (at most 40).")
    item = require_preset(aws, cfg, preset or presets_schema.DEFAULT_NAME)
    if language is not None:
        offered = [str(v) for v in item.get("languages") or []]
        named = presets_schema.offered_language(offered, language)
        if named is None:
            raise PresetError(f"Preset {item[KEY]!r} does not offer {language!r}: it offers "
                              f"{', '.join(offered) or 'none'} (a name or its code, e.g. "
                              f"{_example_code(offered)}).")
        language = named
    if preset is not None:
        metadata["preset"] = preset
    if language is not None:
        metadata["language"] = language
    return metadata


def _example_code(offered: list[str]) -> str:
    """'French or fr' for the first offered language with a known code (for messages)."""
    for name in offered:
        codes = presets_schema.LANGUAGE_CODES.get(presets_schema.language_id(name))
        if codes:
            return f"{name} or {codes[0]}"
    return offered[0] if offered else "English"


# -- validating and writing ---------------------------------------------------------------------


def problems(cfg: Config, item: Mapping[str, Any]) -> list[str]:
    """What the active profile's container would refuse in ``item`` (presets_schema rules)."""
    profile = cfg.profile
    return presets_schema.validate_preset(item, profile.limits, profile.request_style,
                                          example_prefix=cfg.example_prefix)


def validate(cfg: Config, item: Mapping[str, Any]) -> None:
    found = problems(cfg, item)
    if found:
        profile = cfg.profile
        raise PresetError(
            f"Preset {item.get(KEY)!r} was not saved: the {profile.name} container "
            f"({profile.image_family} {profile.image_version}) would refuse it:\n  - "
            + "\n  - ".join(found))


def _stored(item: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a write stores (managed ones set by the write itself)."""
    return {k: item[k] for k in presets_schema.FIELDS if k in item}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def put_preset(aws: Aws, cfg: Config, item: Mapping[str, Any],
               expected_version: int | None) -> dict[str, Any]:
    """Create (``expected_version`` None: only if no such preset exists) or update (only if its
    version is still ``expected_version``) one preset, validated first. Returns it as stored."""
    table = _table(aws, cfg)
    validate(cfg, item)
    name = item[KEY]
    fields = {**_stored(item), "schema": presets_schema.SCHEMA_VERSION, "updated_at": _now()}
    db = _db(aws)
    try:
        if expected_version is None:
            stored = {KEY: name, **fields, "version": 1}
            db.put_item(TableName=table, Item=presets_schema.to_dynamodb(stored),
                        ConditionExpression="attribute_not_exists(#k)",
                        ExpressionAttributeNames={"#k": KEY},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return stored
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":v{i}": presets_schema.to_dynamodb({"v": v})["v"]
                  for i, v in enumerate(fields.values())}
        sets = ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        answer = db.update_item(
            TableName=table, Key={KEY: {"S": name}},
            UpdateExpression=f"SET {sets}, #version = #version + :one",
            ConditionExpression="attribute_exists(#k) AND #version = :expected",
            ExpressionAttributeNames={**names, "#k": KEY, "#version": "version"},
            ExpressionAttributeValues={**values, ":one": {"N": "1"},
                                       ":expected": {"N": str(expected_version)}},
            ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        return presets_schema.from_dynamodb(answer["Attributes"])
    except ClientError as exc:
        if error_code(exc) != CONDITIONAL_FAILED:
            raise
        raise _conflict(exc, name, expected_version) from None


def _conflict(exc: ClientError, name: str, expected: int | None) -> VisualTourismError:
    old = exc.response.get("Item")
    current = presets_schema.from_dynamodb(old).get("version") if old else None
    if expected is None:
        return PresetConflictError(
            f"Preset {name!r} already exists (version {current}): nothing was overwritten. "
            "Edit it instead ('visual-tourism presets set NAME --field ...').")
    if current is None:
        return PresetError(f"Preset {name!r} does not exist (deleted meanwhile?): nothing was "
                           "written.")
    return PresetConflictError(
        f"Preset {name!r} was changed by someone else: it is at version {current}, your edit "
        f"was based on version {expected}. Nothing was overwritten: show it again "
        "('visual-tourism presets show NAME') and redo your change.")


def delete_preset(aws: Aws, cfg: Config, name: str, expected_version: int | None = None) -> None:
    """Delete one preset (never ``default``); with ``expected_version``, only that version."""
    table = _table(aws, cfg)
    if name == presets_schema.DEFAULT_NAME:
        raise PresetError("The default preset cannot be deleted: photos uploaded without a "
                          "preset, and with an unknown one, are answered with it. Edit it "
                          "instead ('visual-tourism presets set default --field ...').")
    condition = "attribute_exists(#k)"
    values: dict[str, Any] = {}
    names = {"#k": KEY}
    if expected_version is not None:
        condition += " AND #version = :expected"
        names["#version"] = "version"
        values[":expected"] = {"N": str(expected_version)}
    try:
        _db(aws).delete_item(TableName=table, Key={KEY: {"S": name}},
                             ConditionExpression=condition, ExpressionAttributeNames=names,
                             **({"ExpressionAttributeValues": values} if values else {}),
                             ReturnValuesOnConditionCheckFailure="ALL_OLD")
    except ClientError as exc:
        if error_code(exc) != CONDITIONAL_FAILED:
            raise
        if exc.response.get("Item"):
            raise _conflict(exc, name, expected_version) from None
        raise _unknown(aws, cfg, name) from None


# -- seeds and their example photos --------------------------------------------------------------


def fit_to_profile(cfg: Config, item: dict[str, Any]) -> dict[str, Any]:
    """A seed as the active profile can take it: vLLM takes ``max_images`` images per request
    (the photo included), so a richer seed keeps its first examples only."""
    limits = cfg.profile.limits
    if limits.engine == "vllm":
        return {**item, "examples": item["examples"][: max(limits.max_images - 1, 0)]}
    return item


def seeds(cfg: Config, bucket_name: str = "") -> list[dict[str, Any]]:
    """The seeded presets for this configuration; `default` is built from the function's own
    environment (lambda_fn.function_environment), so it is exactly the original prompt."""
    from . import lambda_fn

    env = lambda_fn.function_environment(cfg, bucket_name)
    return [fit_to_profile(cfg, item) if item[KEY] != presets_schema.DEFAULT_NAME else item
            for item in presets_schema.seed_presets(env, cfg.example_prefix)]


def seed(aws: Aws, cfg: Config, bucket_name: str = "", progress: Progress = _quiet) -> list[str]:
    """Write the seeds that do not exist yet (edits are never overwritten); returns their
    names. A seed the active profile would refuse is skipped, with a note."""
    written = []
    for item in seeds(cfg, bucket_name):
        found = problems(cfg, item)
        if found and item[KEY] != presets_schema.DEFAULT_NAME:
            progress(f"preset {item[KEY]} not seeded: {cfg.model_profile} would refuse it "
                     f"({found[0]})")
            continue
        try:
            if found:  # only `default` gets here
                _put_raw(aws, cfg, item)
            else:
                put_preset(aws, cfg, item, expected_version=None)
        except PresetConflictError:
            continue  # exists: an edit (or an earlier seed) is kept as it is
        written.append(item[KEY])
    return written


def _put_raw(aws: Aws, cfg: Config, item: Mapping[str, Any]) -> None:
    """The default seed even where the profile's limits would refuse it: the function's own
    environment is the same prompt, so the handler would answer with it anyway."""
    stored = {**_stored(item), KEY: item[KEY], "version": 1,
              "schema": presets_schema.SCHEMA_VERSION, "updated_at": _now()}
    try:
        _db(aws).put_item(TableName=cfg.presets_table, Item=presets_schema.to_dynamodb(stored),
                          ConditionExpression="attribute_not_exists(#k)",
                          ExpressionAttributeNames={"#k": KEY})
    except ClientError as exc:
        if error_code(exc) != CONDITIONAL_FAILED:
            raise
        raise PresetConflictError(item[KEY]) from None


def example_photos(cfg: Config, items: list[Mapping[str, Any]]) -> dict[str, Path]:
    """Example photo key -> the project's file of that name (images/), for those that exist."""
    found: dict[str, Path] = {}
    for item in items:
        for example in item.get("examples") or []:
            key = example.get("photo", "") if isinstance(example, Mapping) else ""
            if key == cfg.example_key:
                found[key] = Path(cfg.example_image)
            elif key.startswith(cfg.example_prefix):
                path = IMAGES_DIR / key[len(cfg.example_prefix):]
                if path.is_file():
                    found[key] = path
    return found


def upload_examples(aws: Aws, cfg: Config, bucket_name: str,
                    items: list[Mapping[str, Any]]) -> list[str]:
    """Upload (if changed) every example photo these presets name that is a project file."""
    photos = example_photos(cfg, items)
    for key, path in sorted(photos.items()):
        bucket.upload_if_changed(aws, bucket_name, key, path)
    return sorted(photos)


def require_example_photos(aws: Aws, cfg: Config, bucket_name: str,
                           item: Mapping[str, Any]) -> None:
    """Each example photo must be in the bucket (a project file of that name is uploaded)."""
    upload_examples(aws, cfg, bucket_name, [item])
    for example in item.get("examples") or []:
        key = example["photo"]
        if not bucket.object_exists(aws, bucket_name, key):
            raise PresetError(
                f"examples: the photo s3://{bucket_name}/{key} does not exist. Upload it first "
                f"(aws s3 cp PHOTO s3://{bucket_name}/{key}), or name a photo under "
                f"{cfg.example_prefix} that exists. Nothing was saved.")


def ensure(aws: Aws, cfg: Config, bucket_name: str, progress: Progress = _quiet) -> dict[str, Any]:
    """The `up` step: the table, its seeds, and the seeds' example photos in the bucket."""
    name = ensure_table(aws, cfg)
    written = seed(aws, cfg, bucket_name, progress)
    items = list_presets(aws, cfg)
    photos = upload_examples(aws, cfg, bucket_name, items) if bucket_name else []
    return {"table": name, "seeded": written, "presets": [i[KEY] for i in items],
            "example_photos": photos}
