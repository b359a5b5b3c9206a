"""The model containers' rules (serving_limits) and what each profile makes of them.

Image token formulas are checked against independent figures: the TGI router's count for the
demo photo (facts.md, from router/src/config.rs at v3.3.6) and the real Hugging Face image
processors (transformers, constructed offline with each model's published settings), which is
what vLLM counts with.
"""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from photo_handler import errors, settings
from photo_handler import serving_limits as sl
from visual_tourism import lambda_fn, packaging
from visual_tourism.config import EXAMPLE_ANSWER, GENERATION, INSTRUCTION, load_config
from visual_tourism.errors import ConfigError
from visual_tourism.profiles import PROFILES

BAD_SETTINGS = {  # what the issue lists: each alone is refused by TGI's router
    "top_p": 1.0,
    "temperature": 0,
    "stop": ["a", "b", "c", "d", "e"],
    "max_new_tokens": 0,
    "top_k": 0,
}


def tgi(version: str = "3.3.6", **changes: object) -> sl.ContainerLimits:
    values = dict(engine="tgi", container_version=version, max_input_tokens=1000,
                  max_total_tokens=1500, payload_limit_bytes=2_000_000,
                  max_stop_sequences=4, image_formula="qwen2-vl-router")
    values.update(changes)
    return sl.ContainerLimits(**values)  # type: ignore[arg-type]


# -- image token formulas --------------------------------------------------------------------


def test_tgi_router_counts_qwen_images_from_the_full_pixel_size():
    # facts.md: the Trevi example (1200x651) costs 3,985 tokens at the v3.3.6 router.
    assert sl.image_tokens(1200, 651, "qwen2-vl-router") == 3985
    assert sl.image_tokens(4000, 3000, "qwen2-vl-router") == 61224
    assert sl.image_tokens(4000, 3000, "idefics") == 1  # v1.4.5: one <image> token


def test_processor_formulas_equal_the_hugging_face_image_processors():
    transformers = pytest.importorskip("transformers")
    qwen = transformers.Qwen2VLImageProcessor(
        min_pixels=56 * 56, max_pixels=12_845_056, patch_size=14, merge_size=2,
        do_normalize=False, do_rescale=False)
    smol = transformers.Idefics3ImageProcessor(  # SmolVLM-Instruct's preprocessor_config
        size={"longest_edge": 1536}, max_image_size={"longest_edge": 384},
        do_image_splitting=True, do_normalize=False, do_rescale=False)
    rng = random.Random(7)
    sizes = [(1200, 651), (800, 1481), (2000, 1500), (64, 64), (300, 200)]
    sizes += [(rng.randint(32, 3000), rng.randint(32, 3000)) for _ in range(5)]
    for w, h in sizes:
        image = Image.new("RGB", (w, h))
        _, grid_h, grid_w = qwen(images=[image], return_tensors="np")["image_grid_thw"][0]
        # one token per 2x2 merge of 14-pixel patches, plus vision_start and vision_end
        assert sl.image_tokens(w, h, "qwen2-vl-processor") == grid_h * grid_w // 4 + 2, (w, h)
        out = smol(images=[[image]], return_row_col_info=True, return_tensors="np")
        rows, cols = out["rows"][0][0], out["cols"][0][0]
        assert sl._idefics3_grid(w, h) == (rows, cols), (w, h)
        tiles = rows * cols if rows * cols > 1 else 0
        assert (tiles + 1) * 81 <= sl.image_tokens(w, h, "idefics3") <= (tiles + 1) * 81 + 140


def test_a_wrong_formula_is_caught():
    # The router formula is not the processor's: a profile with the wrong one would misjudge
    # a phone photo by a factor of four.
    assert sl.image_tokens(4000, 3000, "qwen2-vl-router") > 3 * sl.image_tokens(
        4000, 3000, "qwen2-vl-processor")


@pytest.mark.parametrize("formula", ["qwen2-vl-router", "qwen2-vl-processor"])
def test_fit_image_is_the_largest_size_within_the_allowance(formula):
    for allowance in (300, 1024, 4000, 7000):
        w, h = sl.fit_image(4000, 3000, allowance, formula)
        assert sl.image_tokens(w, h, formula) <= allowance
        assert abs(w / h - 4 / 3) < 0.02  # aspect kept
        bigger = (int(w * 1.05), int(h * 1.05))
        assert sl.image_tokens(*bigger, formula) > allowance  # not needlessly small
    assert sl.fit_image(800, 600, 10**6, "qwen2-vl-router") == (800, 600)  # never enlarged
    assert sl.fit_image(4000, 3000, 2, "qwen2-vl-router") is None


# -- generation parameters -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_SETTINGS))
def test_tgi_refuses_each_setting_the_issue_lists_naming_it_and_the_range(name):
    params = {**GENERATION, name: BAD_SETTINGS[name]}
    problems = sl.generation_problems(params, tgi("1.4.5", image_formula="idefics"), "tgi")
    assert len(problems) == 1 and problems[0].startswith(name), problems
    assert any(word in problems[0] for word in ("between", "> 0", "<", "at most"))


def test_defaults_pass_every_profile():
    for profile in PROFILES.values():
        assert profile.generation_problems(GENERATION) == [], profile.name
        profile.check_generation(GENERATION)


def test_chat_style_rules_differ_from_the_prompt_style():
    limits = tgi()
    greedy = {"max_new_tokens": 100, "temperature": 0}
    assert sl.generation_problems(greedy, limits, "messages") == []  # greedy in chat
    assert sl.generation_problems(greedy, limits, "tgi")  # 422 on /generate
    vllm = sl.ContainerLimits(engine="vllm", container_version="0.33.0", max_input_tokens=8191,
                              max_total_tokens=8192, payload_limit_bytes=6_000_000,
                              max_stop_sequences=None, image_formula="idefics3")
    assert sl.generation_problems({"max_new_tokens": 10, "top_p": 1.0}, vllm, "messages") == []
    assert sl.generation_problems({"max_new_tokens": 10, "top_p": 1.0}, limits, "messages")
    assert sl.generation_problems({"max_new_tokens": 10, "stop": ["x"] * 9}, vllm,
                                  "messages") == []
    assert sl.generation_problems({"max_new_tokens": 10, "top_p": 1.5}, vllm, "messages")


def test_max_new_tokens_must_leave_room_in_the_total():
    limits = tgi()
    assert sl.generation_problems({"max_new_tokens": 1499}, limits, "tgi") == []
    (problem,) = sl.generation_problems({"max_new_tokens": 1500}, limits, "tgi")
    assert "between 1 and 1499" in problem


def test_profile_check_generation_raises_config_error_naming_everything():
    profile = PROFILES["idefics-9b-instruct"]
    with pytest.raises(ConfigError) as info:
        profile.check_generation({**GENERATION, **BAD_SETTINGS})
    for name in BAD_SETTINGS:
        assert name in str(info.value)


def test_load_config_refuses_generation_the_container_would_reject(tmp_path):
    for name, value in BAD_SETTINGS.items():
        with pytest.raises(ConfigError, match=name):
            load_config(env={}, region="us-east-1", state_dir=str(tmp_path),
                        generation={**GENERATION, name: value})


def test_load_config_refuses_a_prompt_that_leaves_no_room_for_the_photo(tmp_path):
    with pytest.raises(ConfigError, match="no room for the photo"):
        load_config(env={}, region="us-east-1", state_dir=str(tmp_path),
                    model_profile="qwen2.5-vl-7b-instruct",
                    generation={**GENERATION, "max_new_tokens": 9000})


# -- budgets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_default_prompt_fits_every_profile_with_room_for_the_photo(name):
    profile = PROFILES[name]
    budget = profile.check_prompt(INSTRUCTION, [(EXAMPLE_ANSWER, (1200, 651))], 512)
    assert budget.fits, budget.explain()
    assert budget.image_tokens[-1] >= profile.limits.min_image_tokens
    # the example gets no more than its cap; the upload gets everything else
    assert budget.image_tokens[0] <= profile.limits.example_image_tokens
    assert budget.input_tokens == profile.limits.max_input_tokens or (
        budget.total_tokens == profile.limits.max_total_tokens)


def test_text_is_estimated_from_above():
    # one token per UTF-8 byte is an upper bound for byte-level BPE and byte-fallback
    # SentencePiece tokenizers; multibyte characters count each byte.
    assert sl.text_tokens_bound("abc") == 3
    assert sl.text_tokens_bound("é") == 2


def test_request_budget_adds_text_images_and_answer():
    budget = sl.request_budget(tgi(), ["x" * 100], [(140, 140)], 50, messages=2)
    assert budget.text_tokens == 100 + sl.TEMPLATE_TOKENS + 2 * sl.MESSAGE_TOKENS
    assert budget.image_tokens == (100,)
    assert budget.total_tokens == budget.input_tokens + 50
    assert "limit 1000" in budget.explain()


# -- the handler uses the same rules ------------------------------------------------------------


def test_limits_round_trip_through_the_lambda_environment():
    for profile in PROFILES.values():
        assert sl.ContainerLimits.from_env(profile.limits.to_env()) == profile.limits
    with pytest.raises(sl.GenerationError):
        sl.ContainerLimits.from_env("{not json")


def test_function_environment_carries_the_profile_limits(tmp_path):
    cfg = load_config(env={}, region="us-east-1", state_dir=str(tmp_path),
                      model_profile="qwen2.5-vl-7b-instruct")
    env = lambda_fn.function_environment(cfg, "bucket")
    assert json.loads(env["CONTAINER_LIMITS"])["image_formula"] == "qwen2-vl-router"


def test_handler_refuses_bad_generation_parameters_from_its_environment():
    base = {"BUCKET_NAME": "b", "ENDPOINT_NAME": "e",
            "CONTAINER_LIMITS": PROFILES["idefics-9b-instruct"].limits.to_env()}
    settings.load_settings(base)  # the defaults pass
    for name, value in BAD_SETTINGS.items():
        env = {**base, "GENERATION_PARAMETERS": json.dumps({**GENERATION, name: value})}
        with pytest.raises(errors.ConfigError, match=name):
            settings.load_settings(env)


def test_the_zip_carries_the_rules_beside_the_handler():
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(packaging.build_zip("photo"))) as archive:
        assert {"lambda_code.py", "photo_handler/serving_limits.py"} <= set(archive.namelist())
