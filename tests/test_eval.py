"""`visual-tourism eval`: scoring with fake answers, the labels, the cost gate of --profiles,
and the whole command against local mode (the offline stand-in scores zero and says so)."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import pytest

from visual_tourism import evaluation, stack
from visual_tourism.aws import Aws
from visual_tourism.cli import main
from visual_tourism.config import load_config
from visual_tourism.evaluation import Label, is_stand_in, mentions, percentile, score
from visual_tourism.local.backends import STAND_IN_LABEL

ROOT = Path(__file__).resolve().parent.parent
LABELS = evaluation.load_labels()
BY_PHOTO = {label.photo: label for label in LABELS}
EIFFEL = BY_PHOTO["tour_eiffel.jpeg"]
CASTLE = BY_PHOTO["neuschwanstein.jpeg"]
SANTIAGO = BY_PHOTO["santiago_cathedral.jpeg"]


# -- labels ----------------------------------------------------------------------------------

def test_every_photo_is_labelled_and_the_example_is_marked():
    photos = {p.name for p in (ROOT / "images").glob("*.jpeg")}
    assert set(BY_PHOTO) == photos
    assert [x.photo for x in LABELS if x.in_context_example] == ["trevi.jpeg"]
    assert "trevi.jpeg" not in {x.photo for x in evaluation.selected(LABELS)}
    assert "trevi.jpeg" in {x.photo for x in evaluation.selected(LABELS, include_example=True)}


def test_a_label_for_a_missing_photo_is_refused(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"photos": [
        {"photo": "gone.jpeg", "landmark": "x", "city": "y", "country": "z"}]}))
    with pytest.raises(evaluation.ConfigError, match="gone.jpeg is not in"):
        evaluation.load_labels(tmp_path / "labels.json")
    (tmp_path / "labels.json").write_text(json.dumps({"photos": [{"photo": "a.jpeg"}]}))
    with pytest.raises(evaluation.ConfigError, match="lacks landmark, city, country"):
        evaluation.load_labels(tmp_path / "labels.json")


# -- scoring ---------------------------------------------------------------------------------

def test_a_right_answer_scores_one_on_each_question():
    answer = ("The Eiffel Tower is a wrought-iron lattice tower in Paris, France. Legend has "
              "it ... The best place to eat nearby is Le Jules Verne.")
    assert score(answer, EIFFEL) == {"landmark": 1, "city": 1, "country": 1}


def test_a_wrong_city_scores_zero_for_the_city():
    answer = "This is the Eiffel Tower replica at the Paris Las Vegas hotel in Nevada, USA."
    # "Paris" is named, so the city counts: matching is on names, not on meaning.
    assert score(answer, EIFFEL)["city"] == 1
    answer = "The Eiffel Tower replica in Las Vegas, United States."
    assert score(answer, EIFFEL) == {"landmark": 1, "city": 0, "country": 0}
    answer = "The Metropolitan Cathedral of Santiago, Chile, in the Plaza de Armas."
    assert score(answer, SANTIAGO)["city"] == 0  # "Santiago" alone is not Compostela
    assert score(answer, SANTIAGO)["country"] == 0


def test_aliases_case_and_accents():
    answer = "SCHLOSS NEUSCHWANSTEIN, above Fussen in Bavaria, Deutschland."
    assert score(answer, CASTLE) == {"landmark": 1, "city": 1, "country": 1}
    answer = "La tour Eiffel, à PARIS."
    assert score(answer, EIFFEL) == {"landmark": 1, "city": 1, "country": 0}
    answer = "The Catedral de Santiago de Compostela in Galicia, España."
    assert score(answer, SANTIAGO) == {"landmark": 1, "city": 1, "country": 1}


def test_whole_words_only():
    trevi = Label("trevi.jpeg", "Trevi Fountain", "Rome", "Italy")
    assert not mentions("Romeo and Juliet in Verona, Italy", trevi.names("city"))
    assert mentions("Rome, the eternal city.", trevi.names("city"))
    assert not mentions("", trevi.names("city"))


def test_the_stand_in_is_recognised_and_scores_zero():
    record = {"status": "ok", "answer": f"{STAND_IN_LABEL} The Eiffel Tower in Paris, France.",
              "timing": {"model_seconds": 0.1}}
    assert is_stand_in(record)
    assert is_stand_in({"status": "ok", "answer": "x", "model": {"backend": "stand-in"}})
    result = evaluation.photo_result(EIFFEL, record, 1.0)
    assert result["stand_in"] and result["scores"] == {"landmark": 0, "city": 0, "country": 0}
    summary = evaluation.summarise("p", "ml.g4dn.xlarge", [result], local=True)
    assert summary["stand_in"] and evaluation.STAND_IN_NOTE in summary["notes"]


def test_latency_and_cost_per_photo():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0], 95) == pytest.approx(2.9)
    records = [
        {"status": "ok", "answer": "Eiffel Tower, Paris, France", "seen_after_seconds": s,
         "timing": {"model_seconds": s - 1}} for s in (3.0, 5.0)
    ] + [{"status": "error", "error": {"code": "model_failed"}, "seen_after_seconds": 9.0,
          "timing": {"model_seconds": 8.0}}]
    results = [evaluation.photo_result(EIFFEL, r, 3.6) for r in records]
    assert results[0]["cost_usd_estimate"] == pytest.approx(3.6 * 2.0 / 3600)
    assert results[2]["cost_usd_estimate"] is None and results[2]["scores"]["landmark"] == 0
    summary = evaluation.summarise("p", "ml.g5.2xlarge", results, local=False)
    assert summary["correct"] == {"landmark": 2, "city": 2, "country": 2}
    assert summary["rate"]["landmark"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["latency_seconds"] == {"p50": 5.0, "p95": pytest.approx(8.6)}
    assert summary["model_seconds"]["p50"] == 3.0  # the failed call is not a model time
    assert summary["cost_per_photo_usd_estimate"] == pytest.approx(3.6 * 3.0 / 3600)  # mean
    assert "model_failed" in " ".join(summary["notes"])
    text = evaluation.format_profile(summary)
    assert "latency p50 5.00 s, p95 8.60 s" in text and "estimate" in text


def test_how_often_the_answer_recommends_a_real_place_nearby():
    def record(recommended, nearby=2, status="ok"):
        return {"status": status, "answer": "Eiffel Tower", "places": {
            "status": "ok", "nearby": [{"name": f"P{i}"} for i in range(nearby)],
            "recommended": recommended}}

    records = [record("P1"), record(None), record(None, nearby=0), record("P0", status="error")]
    results = [evaluation.photo_result(EIFFEL, r, None) for r in records]
    summary = evaluation.summarise("p", "ml.g5.2xlarge", results, local=False)
    # Only answered photos with places count: one of two recommended a real one.
    assert summary["nearby"] == {"photos_with_places": 2, "recommended_nearby": 1, "rate": 0.5}
    assert "for 1/2 photo(s) with places" in evaluation.format_profile(summary)


# -- --profiles: the cost first, nothing without --yes ------------------------------------------

def _no_aws(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("an AWS client was made")

    import boto3

    monkeypatch.setattr(boto3, "client", refuse)
    monkeypatch.setattr(boto3.session.Session, "client", refuse)
    monkeypatch.setattr(Aws, "__init__", refuse)
    monkeypatch.setattr(stack, "up", refuse)
    monkeypatch.setattr(stack, "down", refuse)


def test_profiles_refuses_without_yes_and_touches_no_aws(monkeypatch, capsys, tmp_path):
    _no_aws(monkeypatch)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    code = main(["eval", "--profiles", "smolvlm-instruct,qwen2.5-vl-7b-instruct",
                 "--out", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code == 2
    assert "--yes" in captured.err and "Nothing was deployed" in captured.err
    out = captured.out
    assert "smolvlm-instruct: ml.g4dn.xlarge at $0.736/h x 25 min = about $0.31" in out
    assert "total: about $0.94" in out
    assert not (tmp_path / "r.json").exists()


def test_profiles_refuses_an_unknown_profile(monkeypatch, capsys):
    _no_aws(monkeypatch)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert main(["eval", "--profiles", "gpt-vision", "--yes"]) == 2
    assert "Unknown profile(s) gpt-vision" in capsys.readouterr().err


# -- output files ------------------------------------------------------------------------------

def _report() -> dict:
    record = {"status": "ok", "answer": "The Eiffel Tower, Paris, France.",
              "seen_after_seconds": 2.0, "timing": {"model_seconds": 1.5}}
    one = evaluation.summarise("smolvlm-instruct", "ml.g4dn.xlarge",
                               [evaluation.photo_result(EIFFEL, record, 0.736)], local=False)
    return evaluation.report([one, {**one, "profile": "qwen2.5-vl-7b-instruct"}])


def test_json_and_png_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    path, png, note = evaluation.write(_report(), tmp_path / "deep" / "r.json")
    assert json.loads(path.read_text())["profiles"][0]["correct"]["landmark"] == 1
    assert png == tmp_path / "deep" / "r.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart: {png}" in note


def test_without_matplotlib_the_chart_is_skipped_with_a_note(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    path, png, note = evaluation.write(_report(), tmp_path / "r.json")
    assert path.is_file() and png is None
    assert "chart: skipped (matplotlib is not installed" in note
    assert not (tmp_path / "r.png").exists()


# -- end to end against local mode ---------------------------------------------------------------

@pytest.fixture(scope="module")
def local(tmp_path_factory):
    from visual_tourism.local.stack import LocalStack

    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("local")) as running:
        yield running


@pytest.fixture
def env(env, monkeypatch, tmp_path):  # conftest's, with a stack prefix of its own
    monkeypatch.setenv("VT_PREFIX", "e" + os.urandom(3).hex())
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))
    return env


def test_eval_against_local_mode_end_to_end(env, tmp_path, capsys):
    cfg = load_config()
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    try:
        capsys.readouterr()
        assert main(["eval", "--timeout", "120"]) == 0
        out = capsys.readouterr().out
        assert "answered by the local offline stand-in" in out and "local mode" in out
        assert "tour_eiffel.jpeg" in out and "trevi.jpeg (the in-context example" in out
        written = sorted((tmp_path / "state" / "eval").glob(f"{cfg.prefix}-*.json"))
        assert len(written) == 1 and f"report: {written[0]}" in out
        report = json.loads(written[0].read_text())
        (result,) = report["profiles"]
        assert result["profile"] == cfg.model_profile and result["n_photos"] == 3
        assert result["answered"] == 3 and result["stand_in"] and result["local"]
        assert result["correct"] == {"landmark": 0, "city": 0, "country": 0}
        assert result["latency_seconds"]["p50"] > 0
        # Each photo went with its landmark's position: the function's role may call the
        # Places stand-in (IAM enforced locally), which found its labelled places; the
        # offline model names none of them.
        assert [p["nearby"]["status"] for p in result["photos"]] == ["ok"] * 3
        assert result["nearby"] == {"photos_with_places": 3, "recommended_nearby": 0,
                                    "rate": 0.0}
        assert "recommended one of the real places nearby for 0/3" in out
        assert all(p["result_key"].startswith(f"{cfg.output_prefix}eval/")
                   for p in result["photos"])
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            assert "chart: skipped" in out
        else:
            assert written[0].with_suffix(".png").is_file()
    finally:
        env.runtime.wait_idle(60)
        stack.down(cfg, aws, delete_bucket=True)


def test_compare_deploys_each_removes_it_and_restores_what_ran(env, tmp_path, capsys):
    cfg = load_config()
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)  # a stack of the default profile runs already
    from visual_tourism import presets

    edited = presets.get_preset(aws, cfg, "food")  # a teacher's edit must survive the run
    presets.put_preset(aws, cfg, {**edited, "title": "Food, for class 4B"},
                       expected_version=edited["version"])
    out_file = tmp_path / "cmp.json"
    try:
        capsys.readouterr()
        # Two ml.g4dn profiles: moto's CreateEndpointConfig knows no ml.g5 instance type.
        code = main(["eval", "--profiles", "smolvlm-instruct,idefics-9b-instruct", "--yes",
                     "--out", str(out_file), "--timeout", "120"])
        out = capsys.readouterr().out
        assert code == 0, out[-3000:]
        assert "Local mode: nothing is billed here" in out
        report = json.loads(out_file.read_text())
        assert [r["profile"] for r in report["profiles"]] == [
            "smolvlm-instruct", "idefics-9b-instruct"]
        assert all(r["stand_in"] and r["n_photos"] == 3 for r in report["profiles"])
        assert "comparison:" in out
        assert out.count("(the bucket stays)") == 3  # the running stack, then each profile
        assert "redeployed at the end" in out
        assert report["restored_profile"] == cfg.model_profile
        fn = aws.lambda_.get_function_configuration(FunctionName=cfg.function_name)
        assert fn["Environment"]["Variables"]["MODEL_PROFILE"] == cfg.model_profile
        assert stack.status(cfg, aws)["endpoint"]["state"] == "InService"
        assert presets.get_preset(aws, cfg, "food")["title"] == "Food, for class 4B"
    finally:
        env.runtime.wait_idle(60)
        stack.down(cfg, aws, delete_bucket=True)


def test_compare_with_nothing_running_leaves_only_the_bucket(env, tmp_path, capsys):
    cfg = load_config()
    aws = Aws(cfg.region)
    try:
        assert main(["eval", "--profiles", "smolvlm-instruct", "--yes",
                     "--out", str(tmp_path / "one.json"), "--timeout", "120"]) == 0
        out = capsys.readouterr().out
        assert "answered by the local offline stand-in" in out
        assert json.loads((tmp_path / "one.json").read_text())["restored_profile"] is None
        info = stack.status(cfg, aws)
        assert info["endpoint"]["state"] == "absent"
        assert info["bucket"]["state"] == "exists"  # photos and results kept
        # ...and the presets table with any edits; nothing else is left to remove.
        assert stack.down(cfg, aws) == [f"presets table {cfg.presets_table}"]
    finally:
        env.runtime.wait_idle(60)
        stack.down(cfg, aws, delete_bucket=True)
