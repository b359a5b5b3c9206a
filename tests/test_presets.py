"""The answer presets (issue 11): the table in up/down/status, the seeds, versioned writes, the
rules a preset must follow (presets_schema.validate_preset), the CLI, and `ask`'s metadata."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageStat

from photo_handler import presets_schema, request
from visual_tourism import config, lambda_fn, presets, stack
from visual_tourism.aws import Aws
from visual_tourism.cli import main
from visual_tourism.config import STACK_TAG, load_config
from visual_tourism.errors import NotDeployedError
from visual_tourism.presets import PresetConflictError, PresetError
from visual_tourism.profiles import PROFILES
from web_function import app as web_app

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
IDEFICS = PROFILES["idefics-9b-instruct"]
QWEN_TGI = PROFILES["qwen2.5-vl-7b-instruct"]


def no_sleep(_: float) -> None:
    pass


@pytest.fixture
def cfg():
    return load_config()


@pytest.fixture
def aws(mocked_aws, cfg) -> Aws:
    return Aws(cfg.region, sleep=no_sleep)


def up(cfg, aws) -> dict[str, Any]:
    return stack.up(cfg, aws, endpoint_poll=0)


def env_defaults(cfg) -> dict[str, str]:
    return lambda_fn.function_environment(cfg, cfg.bucket_name("123456789012"))


def a_preset(**changes: Any) -> dict[str, Any]:
    item = {
        "name": "class-7b", "title": "Class 7B", "description": "short answers",
        "instruction": "Say in 2 sentences what this place is and why it matters.",
        "examples": [{"photo": "example/trevi.jpeg", "answer": "The Trevi Fountain, Rome."}],
        "language": "English", "languages": ["English", "French"],
        "generation": {"do_sample": True, "temperature": 0.5, "top_p": 0.9},
        "max_new_tokens": 200, "structured": False,
    }
    item.update(changes)
    return item


def validate(item: dict[str, Any], profile=IDEFICS) -> list[str]:
    return presets_schema.validate_preset(item, profile.limits, profile.request_style)


# -- the generated example photo --------------------------------------------------------------


def no_landmark_image(width: int = 640, height: int = 480) -> Image.Image:
    """images/no_landmark.jpg: a plain brick wall, drawn the same way every time (seeded)."""
    rng = random.Random(11)
    image = Image.new("RGB", (width, height), (168, 160, 150))  # mortar
    draw = ImageDraw.Draw(image)
    brick_w, brick_h, joint = 80, 32, 6
    for row in range(height // brick_h + 1):
        offset = -(brick_w // 2) if row % 2 else 0
        for col in range(width // brick_w + 2):
            x, y = offset + col * brick_w, row * brick_h
            shade = rng.randint(-22, 22)
            colour = (150 + shade, 62 + shade // 2, 44 + shade // 3)
            draw.rectangle((x + joint // 2, y + joint // 2, x + brick_w - joint // 2,
                            y + brick_h - joint // 2), fill=colour)
    for _ in range(width * height // 6):  # grain
        x, y = rng.randrange(width), rng.randrange(height)
        r, g, b = image.getpixel((x, y))
        d = rng.randint(-18, 18)
        image.putpixel((x, y), tuple(max(0, min(255, c + d)) for c in (r, g, b)))
    return image.filter(ImageFilter.GaussianBlur(0.6))


def test_the_no_landmark_photo_is_the_generated_wall():
    # Written once with: no_landmark_image().save("images/no_landmark.jpg", quality=85,
    # optimize=True). JPEG is lossy, so the check is "the same picture", not the same bytes.
    committed = Image.open(IMAGES / presets_schema.NO_LANDMARK_PHOTO).convert("RGB")
    assert committed.size == (640, 480)
    difference = ImageStat.Stat(ImageChops.difference(committed, no_landmark_image())).mean
    assert max(difference) < 8  # the grain is what JPEG loses; another photo is far off
    other = Image.open(IMAGES / "trevi.jpeg").convert("RGB").resize((640, 480))
    assert min(ImageStat.Stat(ImageChops.difference(committed, other)).mean) > 20
    assert presets_schema.NO_LANDMARK_PHOTO in (IMAGES / "ATTRIBUTION.md").read_text()


# -- the seeds ----------------------------------------------------------------------------------


def test_the_default_seed_is_exactly_the_original_prompt_and_parameters(cfg):
    env = env_defaults(cfg)
    default = presets.seeds(cfg)[0]
    assert default["name"] == "default"
    assert default["instruction"] == env["INSTRUCTION"] == config.INSTRUCTION
    assert default["examples"] == [{"photo": env["EXAMPLE_KEY"], "answer": env["EXAMPLE_ANSWER"]}]
    assert default["examples"][0]["answer"] == config.EXAMPLE_ANSWER
    assert presets_schema.generation_parameters(default) == json.loads(
        env["GENERATION_PARAMETERS"]) == config.GENERATION
    assert default["language"] == "English" and not default["structured"]
    # The request the handler builds from it is byte for byte today's.
    for style in ("tgi", "messages"):
        today = request.build_request(style, env["INSTRUCTION"], env["EXAMPLE_ANSWER"],
                                          "https://ex", "https://photo", config.GENERATION)
        if style == "tgi":
            assert presets_schema.tgi_prompt(default, "English", ["https://ex"],
                                             "https://photo") == today["inputs"]
        else:
            assert presets_schema.chat_messages(default, None, ["https://ex"],
                                                "https://photo") == today["messages"]


def test_the_seeds_offer_six_languages_and_honest_examples(cfg):
    seeds = presets.seeds(cfg)
    assert [s["name"] for s in seeds] == ["default", "family", "history", "food"]
    for seed in seeds:
        assert seed["languages"] == list(presets_schema.LANGUAGES) == [
            "English", "French", "Spanish", "German", "Italian", "Japanese"]
        assert 1 <= len(seed["examples"]) <= 3
        for example in seed["examples"]:
            assert (IMAGES / example["photo"].removeprefix("example/")).is_file()
    for seed in seeds[1:]:
        assert seed["examples"][0]["photo"] == "example/trevi.jpeg"
        assert seed["examples"][-1] == {"photo": "example/no_landmark.jpg",
                                        "answer": presets_schema.NO_LANDMARK_ANSWER}
        assert presets_schema.NO_LANDMARK_ANSWER.startswith("I can't tell where this is")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_seed_fits_every_profile(profile):
    cfg = load_config(model_profile=profile)
    for seed in presets.seeds(cfg):
        assert presets.problems(cfg, seed) == [], seed["name"]
    if PROFILES[profile].limits.engine == "vllm":  # two images per request: one example
        assert all(len(s["examples"]) == 1 for s in presets.seeds(cfg))


def test_language_and_structured_answers_change_only_the_photos_turn(cfg):
    family = presets.seeds(cfg)[1]
    french = presets_schema.answer_instruction(family, "French")
    assert french == family["instruction"] + " Answer in French."
    assert presets_schema.answer_instruction(family, "English") == family["instruction"]
    structured = presets_schema.answer_instruction({**family, "structured": True}, "English")
    assert structured.endswith(presets_schema.STRUCTURED_LINE)
    prompt = presets_schema.tgi_prompt(family, "French", ["a", "b", "c"], "photo")
    assert prompt.count("Answer in French.") == 1 and prompt.count("![](") == 4
    assert prompt.endswith("Answer in French.![](photo)<end_of_utterance>\nAssistant:")
    schema = presets_schema.structured_schema()
    assert set(schema["required"]) == {"place", "city", "country", "description", "story",
                                       "where_to_eat", "recognised"}
    assert schema["properties"]["recognised"] == {"type": "boolean"}


# -- validation ---------------------------------------------------------------------------------


def test_a_valid_preset_has_no_problems():
    assert validate(a_preset()) == []
    assert validate(a_preset(), QWEN_TGI) == []


def test_top_p_one_is_refused_by_tgi_naming_the_field_and_range():
    (problem,) = validate(a_preset(generation={"do_sample": True, "top_p": 1.0}))
    assert problem.startswith("generation: top_p=1.0")
    assert "0 < top_p < 1" in problem and "tgi 1.4.5" in problem
    # vLLM takes top_p = 1.
    assert validate(a_preset(generation={"top_p": 1.0}),
                    PROFILES["smolvlm-instruct"]) == []


def test_five_stop_sequences_are_refused():
    (problem,) = validate(a_preset(generation={"stop": ["a", "b", "c", "d", "e"]}))
    assert problem.startswith("generation: stop has 5 sequences: at most 4 allowed")


def test_max_new_tokens_over_the_total_budget_names_the_allowed_range():
    (problem,) = validate(a_preset(max_new_tokens=5000))
    assert problem.startswith("max_new_tokens: max_new_tokens=5000 must be between 1 and 2047")
    (problem,) = validate(a_preset(max_new_tokens=2000))  # below 2047, but with the prompt
    tokens = presets_schema.prompt_tokens(a_preset(), IDEFICS.limits, "tgi", "French")
    assert problem.startswith("max_new_tokens: 2000 does not fit")
    assert f"between 1 and {tokens['max_new_tokens_allowed']}" in problem
    assert "MAX_TOTAL_TOKENS 2048" in problem
    assert validate(a_preset(max_new_tokens=tokens["max_new_tokens_allowed"])) == []


def test_a_prompt_too_long_for_the_input_limit_is_refused():
    (problem,) = validate(a_preset(instruction="Describe it. " * 140))
    assert problem.startswith("instruction/examples: the prompt is too long")
    assert "MAX_INPUT_TOKENS 1536" in problem


def test_an_example_photo_outside_example_is_refused():
    for photo in ("input/trevi.jpeg", "output/x.json", "example/", "example/../input/a.jpg"):
        examples = [{"photo": photo, "answer": "Trevi."}]
        (problem,) = validate(a_preset(examples=examples))
        assert problem.startswith("examples[0].photo:") and "under example/" in problem


@pytest.mark.parametrize(("changes", "start"), [
    ({"name": "has space"}, "name:"),
    ({"language": "Klingon"}, "language:"),
    ({"languages": []}, "languages:"),
    ({"structured": "yes"}, "structured:"),
    ({"generation": {"max_new_tokens": 10}}, "generation: max_new_tokens is a field"),
    ({"generation": {"grammar": {}}}, "generation: grammar cannot be set"),
    ({"examples": [{"photo": "example/a.jpg", "answer": "x"}] * 4}, "examples: 4 given"),
    ({"instruction": ""}, "instruction:"),
    ({"colour": "red"}, "colour: unknown field"),
])
def test_each_problem_names_its_field(changes, start):
    problems = validate(a_preset(**changes))
    assert problems and problems[0].startswith(start), problems


# Every generation field by the types and ranges each container takes (issue 23, item 3):
# TGI router/src/lib.rs GenerateParameters at v1.4.5 and v3.3.6 (do_sample: bool, seed:
# Option<u64>, top_k: Option<i32>, stop: Vec<String>; a value serde cannot read is a 422) and
# ChatRequest at v3.3.6 (seed: Option<u64>, stop: Option<Vec<String>>); vLLM's seed is int64.
SMOLVLM = PROFILES["smolvlm-instruct"]
ALL_ENGINES = [IDEFICS, QWEN_TGI, SMOLVLM]
TGI_PROFILES = [IDEFICS, QWEN_TGI]


@pytest.mark.parametrize("profile", ALL_ENGINES, ids=lambda p: p.name)
@pytest.mark.parametrize(("generation", "name"), [
    ({"do_sample": "yes"}, "do_sample"),
    ({"do_sample": 1}, "do_sample"),
    ({"do_sample": None}, "do_sample"),
    ({"seed": 1.5}, "seed"),
    ({"seed": "abc"}, "seed"),
    ({"seed": True}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["User:", ""]}, "stop"),
    ({"top_k": 1.5}, "top_k"),
    ({"top_k": True}, "top_k"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 2**31}, "top_k"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": float("inf")}, "top_p"),
    ({"temperature": None}, "temperature"),
])
def test_a_generation_field_of_the_wrong_type_is_refused_naming_it(profile, generation, name):
    problems = validate(a_preset(generation={"do_sample": True, **generation}), profile)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"generation: {name}="), problems


@pytest.mark.parametrize("profile", TGI_PROFILES, ids=lambda p: p.name)
def test_tgi_takes_an_unsigned_seed_and_a_list_of_stops(profile):
    (problem,) = validate(a_preset(generation={"seed": -1}), profile)
    assert problem.startswith("generation: seed=-1 must be a whole number from 0 to "
                              "18446744073709551615"), problem
    (problem,) = validate(a_preset(generation={"stop": "User:"}), profile)
    assert problem.startswith("generation: stop='User:' must be a list"), problem
    for fine in ({"seed": 0}, {"seed": 2**64 - 1}, {"do_sample": False}, {"stop": ["\n"]},
                 {"top_k": 2**31 - 1}):
        assert validate(a_preset(generation=fine), profile) == [], fine


def test_vllm_takes_a_signed_seed_and_a_single_stop_string():
    for fine in ({"seed": -1}, {"seed": -(2**63)}, {"stop": "User:"}):
        assert validate(a_preset(generation=fine), SMOLVLM) == [], fine
    (problem,) = validate(a_preset(generation={"seed": 2**63}), SMOLVLM)
    assert problem.startswith("generation: seed=9223372036854775808 must be a whole number "
                              "from -9223372036854775808 to 9223372036854775807"), problem


def test_tgi_chat_refuses_a_presence_penalty_of_minus_two():
    # v3.3.6 ChatRequest::try_into_generate: repetition_penalty = presence_penalty + 2 > 0.
    (problem,) = validate(a_preset(generation={"presence_penalty": -2}), QWEN_TGI)
    assert problem.startswith("generation: presence_penalty=-2"), problem
    assert validate(a_preset(generation={"presence_penalty": -2}), SMOLVLM) == []
    assert validate(a_preset(generation={"presence_penalty": -1.5}), QWEN_TGI) == []


def test_vllm_takes_one_example_image_besides_the_photo():
    two = [{"photo": "example/a.jpg", "answer": "A."}, {"photo": "example/b.jpg", "answer": "B."}]
    (problem,) = validate(a_preset(examples=two), PROFILES["smolvlm-instruct"])
    assert problem.startswith("examples: 2 given, 0 to 1 allowed")
    assert validate(a_preset(examples=two)) == []  # TGI has no such limit


def test_dynamodb_attribute_values_round_trip():
    item = {**a_preset(), "version": 3}
    stored = presets_schema.to_dynamodb(item)
    assert stored["generation"]["M"]["top_p"] == {"N": "0.9"}
    assert stored["structured"] == {"BOOL": False}
    assert presets_schema.from_dynamodb(stored) == item
    # DynamoDB answers 1.0 as "1": still a number the rules accept.
    assert presets_schema.from_dynamodb({"t": {"N": "1"}, "p": {"N": "0.20"}}) == {"t": 1,
                                                                                   "p": 0.2}


# -- the table in up / down / status ------------------------------------------------------------


def test_up_creates_the_table_on_demand_encrypted_with_recovery_and_tagged(cfg, aws):
    up(cfg, aws)
    db = aws.client("dynamodb")
    table = db.describe_table(TableName=cfg.presets_table)["Table"]
    assert table["TableName"] == "visual-tourism-presets"
    assert table["KeySchema"] == [{"AttributeName": "name", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["Status"] == "ENABLED"
    backups = db.describe_continuous_backups(TableName=cfg.presets_table)
    assert backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
        "PointInTimeRecoveryStatus"] == "ENABLED"
    tags = db.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
    assert tags == [{"Key": STACK_TAG, "Value": cfg.prefix}]
    # Seeded, every example photo uploaded, the function told, the roles allowed.
    assert [p["name"] for p in presets.list_presets(aws, cfg)] == [
        "default", "family", "food", "history"]
    name = cfg.bucket_name(aws.account_id)
    keys = {o["Key"] for o in aws.s3.list_objects_v2(Bucket=name, Prefix="example/")["Contents"]}
    assert keys == {"example/", "example/trevi.jpeg", "example/neuschwanstein.jpeg",
                    "example/santiago_cathedral.jpeg", "example/no_landmark.jpg"}
    fn = aws.lambda_.get_function(FunctionName=cfg.function_name)["Configuration"]
    assert fn["Environment"]["Variables"]["PRESETS_TABLE"] == cfg.presets_table
    doc = aws.iam.get_role_policy(RoleName=cfg.lambda_role_name,
                                  PolicyName="visual-tourism-lambda")["PolicyDocument"]
    (read,) = [s for s in doc["Statement"] if s["Sid"] == "ReadPresets"]
    assert read["Action"] == ["dynamodb:GetItem"] and read["Resource"] == table["TableArn"]
    web_doc = aws.iam.get_role_policy(RoleName=f"{cfg.prefix}-web-role",
                                      PolicyName="visual-tourism-web")["PolicyDocument"]
    (scan,) = [s for s in web_doc["Statement"] if s["Sid"] == "ReadPresets"]
    assert scan["Action"] == ["dynamodb:Scan"] and scan["Resource"] == table["TableArn"]


def test_up_twice_creates_once_and_keeps_an_edited_preset(cfg, aws):
    creates: list[str] = []
    aws.client("dynamodb").meta.events.register(
        "provide-client-params.dynamodb.CreateTable",
        lambda **kw: creates.append(kw["params"]["TableName"]))
    up(cfg, aws)
    family = presets.get_preset(aws, cfg, "family")
    edited = {**family, "instruction": "Two sentences for 6-year-olds.", "max_new_tokens": 120}
    saved = presets.put_preset(aws, cfg, edited, expected_version=family["version"])
    assert saved["version"] == 2
    up(cfg, aws)
    assert creates == [cfg.presets_table]
    again = presets.get_preset(aws, cfg, "family")
    assert again["instruction"] == "Two sentences for 6-year-olds."
    assert again["version"] == 2 and again["max_new_tokens"] == 120


def test_down_removes_the_table_unless_kept(cfg, aws):
    up(cfg, aws)
    removed = stack.down(cfg, aws, keep_presets=True)
    assert not any("presets" in r for r in removed)
    assert presets.describe_table(aws, cfg.presets_table) is not None
    kept = cfg.replace(keep_presets=True)  # the setting does the same
    assert not any("presets" in r for r in stack.down(kept, aws))
    removed = stack.down(cfg, aws)
    assert f"presets table {cfg.presets_table}" in removed
    assert presets.describe_table(aws, cfg.presets_table) is None
    assert not any("presets" in r for r in stack.down(cfg, aws))


def test_keep_presets_setting_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("VT_KEEP_PRESETS", "true")
    assert load_config().keep_presets is True
    monkeypatch.setenv("VT_KEEP_PRESETS", "maybe")
    with pytest.raises(config.ConfigError, match="keep_presets"):
        load_config()


def test_down_leaves_a_table_that_is_not_ours(cfg, aws):
    db = aws.client("dynamodb")
    settings = {**presets.table_settings(cfg), "Tags": [{"Key": "owner", "Value": "someone"}]}
    db.create_table(**settings)
    assert presets.delete_table(aws, cfg) is False
    with pytest.raises(presets.NotOwnedError, match="not created by visual-tourism"):
        presets.ensure_table(aws, cfg)


def test_status_shows_the_table_and_its_presets(cfg, aws):
    assert stack.status(cfg, aws)["presets"] == {"name": cfg.presets_table, "state": "absent"}
    up(cfg, aws)
    info = stack.status(cfg, aws)["presets"]
    assert info == {"name": cfg.presets_table, "state": "active", "items": 4,
                    "presets": ["default", "family", "food", "history"], "encrypted": True,
                    "point_in_time_recovery": True}
    assert stack.status(cfg.replace(presets="off"), aws)["presets"] == {"state": "off"}


def test_presets_off_leaves_the_table_grant_and_variable_out(mocked_aws):
    cfg = load_config(presets="off")
    aws = Aws(cfg.region, sleep=no_sleep)
    up(cfg, aws)
    assert aws.client("dynamodb").list_tables()["TableNames"] == []
    fn = aws.lambda_.get_function(FunctionName=cfg.function_name)["Configuration"]
    assert fn["Environment"]["Variables"]["PRESETS_TABLE"] == ""
    doc = aws.iam.get_role_policy(RoleName=cfg.lambda_role_name,
                                  PolicyName="visual-tourism-lambda")["PolicyDocument"]
    assert "ReadPresets" not in {s["Sid"] for s in doc["Statement"]}


# -- versioned writes ---------------------------------------------------------------------------


@pytest.fixture
def table(cfg, aws):
    bucket = cfg.bucket_name(aws.account_id)
    aws.s3.create_bucket(Bucket=bucket)
    presets.ensure(aws, cfg, bucket)
    return cfg.presets_table


def test_each_write_increments_the_version_and_a_stale_one_is_refused(cfg, aws, table):
    created = presets.put_preset(aws, cfg, a_preset(), expected_version=None)
    assert created["version"] == 1
    with pytest.raises(PresetConflictError, match="already exists"):
        presets.put_preset(aws, cfg, a_preset(), expected_version=None)
    first = presets.put_preset(aws, cfg, a_preset(max_new_tokens=150), expected_version=1)
    assert first["version"] == 2 and first["max_new_tokens"] == 150
    # A second teacher still holding version 1: refused, the first edit stays.
    with pytest.raises(PresetConflictError, match="at version 2, your edit was based on "
                                                  "version 1"):
        presets.put_preset(aws, cfg, a_preset(max_new_tokens=90), expected_version=1)
    assert presets.get_preset(aws, cfg, "class-7b")["max_new_tokens"] == 150
    # An invalid edit is refused before any write.
    with pytest.raises(PresetError, match="top_p"):
        presets.put_preset(aws, cfg, a_preset(generation={"top_p": 1.0}), expected_version=2)
    assert presets.get_preset(aws, cfg, "class-7b")["version"] == 2
    with pytest.raises(PresetConflictError):
        presets.delete_preset(aws, cfg, "class-7b", expected_version=1)
    presets.delete_preset(aws, cfg, "class-7b", expected_version=2)
    assert presets.get_preset(aws, cfg, "class-7b") is None


def test_default_cannot_be_deleted_and_unknown_names_list_the_presets(cfg, aws, table):
    with pytest.raises(PresetError, match="default preset cannot be deleted"):
        presets.delete_preset(aws, cfg, "default")
    with pytest.raises(PresetError, match="No preset named 'nope'. Presets: default, family, "
                                          "food, history"):
        presets.delete_preset(aws, cfg, "nope")


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_list_show_set_delete(cfg, aws, table, capsys, tmp_path):
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["NAME", "VERSION", "LANGUAGE"]
    assert [line.split()[0] for line in out.splitlines()[2:6]] == [  # under the rule
        "default", "family", "food", "history"]
    assert max(map(len, out.splitlines())) <= 80
    assert "Japanese" in out

    assert main(["presets", "show", "food"]) == 0
    food = json.loads(capsys.readouterr().out)
    assert food["name"] == "food" and food["version"] == 1

    # A new preset starts as a copy of default; fields set one by one.
    assert main(["presets", "set", "quiz", "--field", "title=Quiz", "--field",
                 "max_new_tokens=100", "--field", "generation.top_p=0.7", "--field",
                 "languages=English,French", "--field", "structured=true"]) == 0
    assert "preset quiz created: version 1" in capsys.readouterr().out
    quiz = presets.get_preset(aws, cfg, "quiz")
    default = presets.get_preset(aws, cfg, "default")
    assert quiz["instruction"] == default["instruction"] and quiz["examples"] == default[
        "examples"]
    assert quiz["generation"]["top_p"] == 0.7 and quiz["structured"] is True
    assert quiz["languages"] == ["English", "French"]

    # show > edit > set --from-file: written on top of the version it was shown at.
    path = tmp_path / "food.json"
    path.write_text(json.dumps({**food, "max_new_tokens": 180}))
    assert main(["presets", "set", "food", "--from-file", str(path)]) == 0
    assert presets.get_preset(aws, cfg, "food")["version"] == 2
    assert main(["presets", "set", "food", "--from-file", str(path)]) == 2  # stale: version 1
    assert "changed by someone else" in capsys.readouterr().err

    # Refused writes name the field and the range; nothing is written.
    assert main(["presets", "set", "food", "--field", "generation.top_p=1.0"]) == 2
    err = capsys.readouterr().err
    assert "generation: top_p=1.0 must satisfy 0 < top_p < 1" in err
    assert main(["presets", "set", "food", "--field",
                 'examples=[{"photo": "example/missing.jpg", "answer": "x"}]']) == 2
    assert "s3://" in capsys.readouterr().err
    assert presets.get_preset(aws, cfg, "food")["version"] == 2

    assert main(["presets", "delete", "default"]) == 2
    assert "cannot be deleted" in capsys.readouterr().err
    assert main(["presets", "delete", "quiz"]) == 0
    assert presets.get_preset(aws, cfg, "quiz") is None


@pytest.mark.parametrize(("field", "shown"), [
    ("generation.do_sample=yes", "generation: do_sample='yes' must be true or false"),
    ("generation.seed=-1", "generation: seed=-1 must be a whole number from 0"),
    ("generation.seed=1.5", "generation: seed=1.5 must be a whole number"),
    ("generation.seed=abc", "generation: seed='abc' must be a whole number"),
    ('generation.stop=[""]', "generation: stop=['']: a stop sequence must not be empty"),
])
def test_cli_set_refuses_what_the_container_would_refuse_naming_the_field(
        cfg, aws, table, capsys, field, shown):
    assert main(["presets", "set", "food", "--field", field]) == 2
    err = capsys.readouterr().err
    assert shown in err and "was not saved" in err, err
    assert presets.get_preset(aws, cfg, "food")["version"] == 1


def test_seeding_skips_a_seed_the_container_would_refuse(cfg, aws, monkeypatch):
    family = {**presets_schema._RICHER[0], "generation": {"do_sample": "yes", "seed": -1}}
    monkeypatch.setattr(presets_schema, "_RICHER", (family, *presets_schema._RICHER[1:]))
    bucket = cfg.bucket_name(aws.account_id)
    aws.s3.create_bucket(Bucket=bucket)
    presets.ensure_table(aws, cfg)
    notes: list[str] = []
    written = presets.seed(aws, cfg, bucket, notes.append)
    assert "family" not in written and "food" in written
    (note,) = [n for n in notes if "family" in n]
    assert "generation: do_sample='yes'" in note, note
    assert presets.get_preset(aws, cfg, "family") is None


def test_cli_help_lists_the_subcommands_and_ask_flags(capsys):
    with pytest.raises(SystemExit):
        main(["presets", "--help"])
    out = capsys.readouterr().out
    assert all(word in out for word in ("list", "show", "set", "delete"))
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    out = capsys.readouterr().out
    assert "--preset NAME" in out and "--language NAME" in out
    with pytest.raises(SystemExit):
        main(["down", "--help"])
    assert "--keep-presets" in capsys.readouterr().out


# -- ask: the uploader's choice travels as the object's metadata -------------------------------


def test_ask_sends_the_preset_and_language_as_metadata(cfg, mocked_aws):
    seen: list[dict[str, Any]] = []

    def handler_stand_in(_: float) -> None:
        """What the function would do: read the upload's metadata, write a result."""
        name = cfg.bucket_name(aws.account_id)
        key = "input/tour_eiffel.jpeg"
        head = aws.s3.head_object(Bucket=name, Key=key)
        seen.append(head["Metadata"])
        aws.s3.put_object(Bucket=name, Key="output/tour_eiffel.jpeg.json",
                          Body=json.dumps({"status": "ok", "answer": "Paris."}).encode(),
                          Metadata={"input-etag": head["ETag"].strip('"'), "final": "true"})

    aws = Aws(cfg.region, sleep=handler_stand_in)
    stack.up(cfg, Aws(cfg.region, sleep=no_sleep), endpoint_poll=0)
    record = stack.ask(IMAGES / "tour_eiffel.jpeg", cfg, aws, timeout=30, preset="family",
                       language="French")
    assert record["answer"] == "Paris."
    assert seen[0] == {"preset": "family", "language": "French"}

    with pytest.raises(PresetError, match="No preset named 'kids'. Presets: default, family"):
        stack.ask(IMAGES / "trevi.jpeg", cfg, aws, preset="kids")
    with pytest.raises(PresetError, match="does not offer 'Klingon'"):
        stack.ask(IMAGES / "trevi.jpeg", cfg, aws, language="Klingon")
    name = cfg.bucket_name(aws.account_id)
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=name, Prefix="input/trevi")


def test_a_language_is_chosen_by_name_or_code_in_any_case(cfg, mocked_aws):
    """People type codes: `ask --language fr` (and the notebook's ask_with_preset, through
    the same check) sends the preset's own name for it."""
    seen: list[dict[str, Any]] = []

    def handler_stand_in(_: float) -> None:
        name = cfg.bucket_name(aws.account_id)
        head = aws.s3.head_object(Bucket=name, Key="input/tour_eiffel.jpeg")
        seen.append(head["Metadata"])
        aws.s3.put_object(Bucket=name, Key="output/tour_eiffel.jpeg.json",
                          Body=json.dumps({"status": "ok", "answer": "Paris."}).encode(),
                          Metadata={"input-etag": head["ETag"].strip('"'), "final": "true"})

    aws = Aws(cfg.region, sleep=handler_stand_in)
    stack.up(cfg, Aws(cfg.region, sleep=no_sleep), endpoint_poll=0)
    stack.ask(IMAGES / "tour_eiffel.jpeg", cfg, aws, timeout=30, preset="family", language="fr")
    assert seen == [{"preset": "family", "language": "French"}]
    for asked, named in [("FR", "French"), ("french", "French"), ("French", "French"),
                         ("fr-FR", "French"), ("fra", "French"), ("ja", "Japanese"),
                         ("de_DE", "German"), ("en", "English"), ("Es", "Spanish")]:
        assert presets.check_choice(aws, cfg, "family", asked) == {
            "preset": "family", "language": named}, asked
    assert presets.check_choice(aws, cfg, None, "it") == {"language": "Italian"}
    with pytest.raises(PresetError, match="does not offer 'pt': it offers English, French"):
        presets.check_choice(aws, cfg, "family", "pt")


def test_a_language_and_its_code_are_one_language_in_a_preset():
    (problem,) = validate(a_preset(languages=["English", "French", "fr"]))
    assert problem.startswith("languages: French and fr are the same language"), problem
    (problem,) = validate(a_preset(languages=["English", "French", "French"]))
    assert problem.startswith("languages: French is listed twice"), problem
    assert presets_schema.offered_language(["English", "French"], "FR") == "French"
    assert presets_schema.offered_language(["en", "fr"], "French") == "fr"
    assert presets_schema.offered_language(["English", "Klingon"], "klingon") == "Klingon"
    assert presets_schema.offered_language(["English", "French"], "de") is None
    assert presets_schema.offered_language(["English", "French"], "") is None


def test_ask_without_a_table_says_so(mocked_aws, cfg):
    aws = Aws(cfg.region, sleep=no_sleep)
    with pytest.raises(NotDeployedError, match="presets table"):
        presets.check_choice(aws, cfg, "family", None)
    assert presets.check_choice(aws, cfg, None, None) == {}


# -- the web page's pickers read the same items -------------------------------------------------


def test_web_api_lists_the_seeded_presets_and_languages(cfg, aws, table):
    env = {"AWS_REGION": cfg.region}
    status, body = web_app.list_presets(
        web_app.Settings(bucket="b", code_parameter="/c", presets_table=table), env)
    assert status == 200
    assert [p["id"] for p in body["presets"]] == ["default", "family", "food", "history"]
    assert body["presets"][1]["label"] == "Family (for children)"
    assert body["languages"] == sorted(presets_schema.LANGUAGES)
