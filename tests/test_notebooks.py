"""The notebooks: run headless, in order, against local mode; the demo panel; the commit check.

Each notebook runs in its own kernel, as in JupyterLab; the kernels inherit the environment
that points boto3 at the local stack, which is how a person runs them in local mode too.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from photo_handler import presets_schema
from visual_tourism import iam, notebook, stack, where
from visual_tourism.aws import Aws
from visual_tourism.errors import ConfigError
from visual_tourism.local.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
IMAGES = ROOT / "images"
STEP_BY_STEP = ["01_setup", "02_bucket_and_roles", "03_model", "04_autoscaling",
                "05_lambda_trigger", "06_demo", "07_cleanup"]
KERNEL = "visual-tourism-test"
CELL_TIMEOUT = 120  # seconds per cell; local mode needs a few
ACCOUNT_DIGITS = re.compile(r"(?<!\d)\d{12}(?!\d)")


def _load_builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_notebooks",
                                                  NOTEBOOKS / "build_notebooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_notebooks = _load_builder()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory):
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("local")) as running:
        yield running


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec for this very interpreter, so the kernels run in the project's environment
    whatever other kernel called python3 the machine may have."""
    from ipykernel.kernelspec import write_kernel_spec

    # Written in place: ipykernel's install() stages it in a temp folder it never removes.
    share = tmp_path_factory.mktemp("jupyter") / "share" / "jupyter"
    write_kernel_spec(share / "kernels" / KERNEL, overrides={"display_name": KERNEL})
    return share


@pytest.fixture
def local_env(env: LocalStack, jupyter_path: Path, monkeypatch: pytest.MonkeyPatch,
              tmp_path: Path) -> LocalStack:
    """The environment `visual-tourism local serve` prints, with a stack prefix of its own."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("VT_PREFIX", "nb-" + os.urandom(3).hex())
    return env


@pytest.fixture
def deployed(local_env: LocalStack):
    cfg = notebook.load_settings()
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    yield cfg, aws
    local_env.runtime.wait_idle(30)
    stack.down(cfg, aws, delete_bucket=True)


# -- helpers ----------------------------------------------------------------------------------


def run(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Execute every cell; the first failing cell raises CellExecutionError."""
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def run_file(name: str) -> nbformat.NotebookNode:
    return run(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4))


def cell_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        for mime in ("text/plain", "text/html"):
            parts.append(output.get("data", {}).get(mime, ""))
    return "\n".join("".join(p) if isinstance(p, list) else p for p in parts)


def html_of(cell: nbformat.NotebookNode) -> str:
    return "".join("".join(o.get("data", {}).get("text/html", ""))
                   for o in cell.get("outputs", []))


def text_of(cell: nbformat.NotebookNode) -> str:
    return "".join("".join(o.get("data", {}).get("text/plain", ""))
                   for o in cell.get("outputs", []))


def first_code_output(nb: nbformat.NotebookNode) -> str:
    return cell_text(next(c for c in nb.cells if c.cell_type == "code"))


def output_text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(cell_text(c) for c in nb.cells if c.cell_type == "code")


def stack_resources(prefix: str) -> list[str]:
    """Everything with this prefix in the emulated account, asked of each service directly."""
    found: list[str] = []
    found += [b["Name"] for b in boto3.client("s3").list_buckets().get("Buckets", [])
              if b["Name"].startswith(prefix)]
    sm = boto3.client("sagemaker")
    found += [e["EndpointName"] for e in sm.list_endpoints(NameContains=prefix)["Endpoints"]]
    found += [m["ModelName"] for m in sm.list_models(NameContains=prefix)["Models"]]
    found += [c["EndpointConfigName"]
              for c in sm.list_endpoint_configs(NameContains=prefix)["EndpointConfigs"]]
    found += [f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]
              if f["FunctionName"].startswith(prefix)]
    found += [r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]
              if r["RoleName"].startswith(prefix)]
    targets = boto3.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"]
    found += [t["ResourceId"] for t in targets if f"/{prefix}-" in t["ResourceId"]]
    groups = boto3.client("logs").describe_log_groups()["logGroups"]
    found += [g["logGroupName"] for g in groups if f"/{prefix}-" in g["logGroupName"]]
    found += [t for t in boto3.client("dynamodb").list_tables()["TableNames"]
              if t.startswith(prefix + "-")]
    return found


# -- the notebooks, executed ------------------------------------------------------------------


def test_step_by_step_notebooks_run_in_order_then_clean_up_twice(local_env, tmp_path):
    prefix = os.environ["VT_PREFIX"]
    ran = {}
    for name in STEP_BY_STEP[:-1]:
        ran[name] = run_file(name)
        assert first_code_output(ran[name]).startswith("local mode: AWS stand-in at http://127")
    assert (tmp_path / "state" / "settings.toml").is_file()  # 01 saved, outside the repository

    # Before the clean-up, the whole stack really exists in the emulated account.
    built = stack_resources(prefix)
    for part in ("-endpoint", "-handler", "-lambda-role", "-sagemaker-role", "-presets"):
        assert any(name.startswith(prefix + part) for name in built), (part, built)
    assert f"endpoint/{prefix}-endpoint/variant/AllTraffic" in built
    assert any(name.startswith(prefix + "-") and name.endswith("-us-east-1") for name in built)

    # Each cell that built something shows its AWS calls, collapsed, as boto3 code.
    bucket_cell = next(c for c in ran["02_bucket_and_roles"].cells
                       if "stack.create_bucket(" in c.source)
    calls_html = html_of(bucket_cell)
    assert calls_html.startswith('<details class="vt-calls"><summary>AWS calls made by this cell')
    snippet = text_of(bucket_cell)
    assert 's3 = boto3.client("s3", region_name="us-east-1")' in snippet
    assert 's3.create_bucket(\n    Bucket=f"' in snippet and "{account}" in snippet
    ast.parse(snippet[snippet.index("import "):].split("\n# plus")[0])
    read_only = next(c for c in ran["02_bucket_and_roles"].cells
                     if "notebook.show_bucket(" in c.source)
    assert "vt-calls" not in cell_text(read_only)  # only reads: nothing shown
    # Status and records as tables; the settings shown and saved counted alike.
    assert "<table" in html_of(next(c for c in ran["05_lambda_trigger"].cells
                                    if "stack.status(" in c.source))
    assert "<table" in html_of(next(c for c in ran["06_demo"].cells
                                    if "notebook.show_record(" in c.source))
    settings = output_text(ran["01_setup"])
    shown = re.search(r"saved (\d+) settings", settings)
    assert shown and int(shown.group(1)) == 12, settings

    demo = output_text(ran["06_demo"])
    assert "Offline stand-in" in demo  # the answer, beside the photo
    assert "data:image/jpeg;base64," in demo
    assert "No answer: not_an_image" in demo and "no GPU time" in demo  # the error explained
    panel_cell = next(c for c in ran["06_demo"].cells if "notebook.demo_panel(" in c.source)
    assert "application/vnd.jupyter.widget-view+json" in json.dumps(panel_cell.outputs)
    # 01's preflight: every step listed; local mode's administrator credentials may run them
    # all (issue 24: real answers, not "cannot tell"); then the account's limits.
    preflight = cell_text(next(c for c in ran["01_setup"].cells
                               if "notebook.preflight(" in c.source))
    for step in ("up: bucket", "up: roles", "up: presets", "up: trigger", "ask", "down"):
        assert step in preflight, (step, preflight)
    assert "all can run" in preflight and "cannot tell" not in preflight, preflight
    assert "ok: &#x27;ml.g4dn.12xlarge for endpoint usage&#x27;" in preflight or (
        "ok: 'ml.g4dn.12xlarge for endpoint usage'" in preflight), preflight
    # 03 shows the same limits before the billable cell.
    room = cell_text(next(c for c in ran["03_model"].cells if "notebook.limits(" in c.source))
    assert "Lambda concurrency" in room and "SHORT" not in room, room
    # 06's presets: the refused edit names top_p; the edited copy answers beside the seed's.
    refused = cell_text(next(c for c in ran["06_demo"].cells if "check_edit(" in c.source))
    assert "top_p=1.0 must satisfy 0 &lt; top_p &lt; 1" in refused or "top_p=1.0" in refused
    edited = next(c for c in ran["06_demo"].cells if "notebook.edit_preset(" in c.source)
    assert "my-class saved: version 2" in cell_text(edited)
    assert 'class="vt-compare"' in html_of(edited) and ">Before" in html_of(edited)
    editor_cell = next(c for c in ran["06_demo"].cells if "preset_editor(" in c.source)
    assert "application/vnd.jupyter.widget-view+json" in json.dumps(editor_cell.outputs)
    assert re.search(r"trigger\s+true", output_text(ran["05_lambda_trigger"]))

    first = run_file("07_cleanup")
    assert "removed " in output_text(first)
    assert "Nothing billable is left" in output_text(first)
    second = run_file("07_cleanup")
    assert "nothing left to remove" in output_text(second)
    assert "Nothing billable is left" in output_text(second)
    assert stack_resources(prefix) == []

    # Outputs mask the account ID (the emulated account is a 12-digit number too).
    for nb in [*ran.values(), first, second]:
        assert not ACCOUNT_DIGITS.search(output_text(nb))


def test_quickstart_alone_builds_asks_and_removes_everything(local_env):
    prefix = os.environ["VT_PREFIX"]
    nb = run_file("00_quickstart")
    text = output_text(nb)
    assert first_code_output(nb).startswith("local mode:")
    assert "Offline stand-in" in text
    assert "Nothing billable is left" in text
    assert stack_resources(prefix) == []


def test_a_failing_cell_fails_the_run(local_env):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from visual_tourism import notebook"),
        nbformat.v4.new_code_cell('notebook.check_placeholders({"bucket": "<your-bucket>"})'),
        nbformat.v4.new_code_cell("reached = True"),
    ]
    with pytest.raises(CellExecutionError, match="placeholder"):
        run(nb)
    assert not nb.cells[2].get("outputs") and nb.cells[2].get("execution_count") is None


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_demo_alone_stops_at_one_line_that_names_the_notebooks_to_run_first(local_env):
    nb = nbformat.read(NOTEBOOKS / "06_demo.ipynb", as_version=4)
    with pytest.raises(CellExecutionError):
        run(nb)  # nothing deployed for this prefix
    failed = next(c for c in nb.cells if c.cell_type == "code"
                  and any(o.output_type == "error" for o in c.get("outputs", [])))
    assert "stack.ask(" in failed.source
    error = next(o for o in failed.outputs if o.output_type == "error")
    assert len(error.traceback) == 1  # one line, no frames
    line = ANSI.sub("", error.traceback[0])
    assert line.startswith("NotDeployedError: Bucket ")
    assert "run notebooks 01-05 first (or 00_quickstart)" in line
    assert "visual_tourism/" not in json.dumps(failed.outputs)  # no package source lines
    assert not ACCOUNT_DIGITS.search(json.dumps(failed.outputs))  # masked, evalue too


def test_expected_errors_are_one_line_and_others_keep_their_traceback(local_env):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('from visual_tourism import notebook\n'
                                  'notebook.one_line_errors("03_model")'),
        nbformat.v4.new_code_cell('notebook.check_placeholders({"bucket": "<your-bucket>"})'),
        nbformat.v4.new_code_cell("1 / 0"),
    ]
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL, allow_errors=True).execute()
    config_error = nb.cells[1].outputs[0]
    assert config_error.ename == "ConfigError" and len(config_error.traceback) == 1
    assert "bucket = '<your-bucket>'" in ANSI.sub("", config_error.traceback[0])
    assert len(nb.cells[2].outputs[0].traceback) > 1  # not the package's: the usual traceback


def test_status_and_records_are_tables():
    table = notebook.Table({"bucket": {"name": "vt-123456789012-us-east-1", "private": True},
                            "deadline": None, "roles": ["a", "b"], "note": ""})
    text = repr(table)
    assert text.splitlines() == ["bucket", "  name     vt-********9012-us-east-1",
                                 "  private  true", "deadline  -", "roles     a, b",
                                 "note      (empty)"]
    page = table._repr_html_()
    assert page.count("<table") == 2 and "<th" in page  # the nested dict: a table inside
    assert "123456789012" not in page and "********9012" in page


def test_markdown_links_between_notebooks_resolve():
    link = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        targets = [t for _, t in link.findall(text) if not t.startswith("http")]
        assert targets or path.stem == "00_quickstart", path.name
        for target in targets:
            assert (NOTEBOOKS / target).is_file(), (path.name, target)
        spans = re.findall(r"`(\d\d_[a-z_]+)(?:\.ipynb)?`", text)
        assert not spans, (path.name, spans)  # a notebook's name is a link, not code


def test_failure_footer_omits_the_model_it_never_reached():
    refused = {"status": "error", "error": {"code": "not_an_image", "message": "text"},
               "model": {"model_id": "m/x"}, "timing": {"model_seconds": 0.0, "attempts": 0},
               "result_key": "output/x.jpeg.json", "seen_after_seconds": 0.2}
    page = notebook.side_by_side_html(IMAGES / "tour_eiffel.jpeg", refused)
    assert "model time" not in page and "m/x" not in page and "result seen 0.2 s" in page
    assert "JPEG, PNG, GIF, WebP or BMP" in page  # the handler's own list
    answered = {"status": "ok", "answer": "A tower.", "model": {"model_id": "m/x"},
                "timing": {"model_seconds": 1.5, "attempts": 1}}
    page = notebook.side_by_side_html(IMAGES / "tour_eiffel.jpeg", answered)
    assert "model m/x" in page and "model time 1.5 s" in page


def test_async_notebooks_show_the_tradeoff_the_deadline_and_the_cost(local_env, monkeypatch):
    prefix = os.environ["VT_PREFIX"]
    monkeypatch.setenv("VT_INFERENCE_MODE", "async")  # the settings the kernels read
    monkeypatch.setenv("VT_STOP_AFTER", "2h")
    ran = {name: run_file(name) for name in ("01_setup", "02_bucket_and_roles", "03_model",
                                             "04_autoscaling")}
    model = output_text(ran["03_model"])
    assert "first photo after idle waits about 5-10 minutes" in model  # the trade-off
    assert "async: $0/hour while idle" in model  # the cost, before the billable cell
    assert "nothing while scaled to 0 instances" in model
    assert "Billing runs until" not in model  # the real-time warning
    assert "stop deadline: at" in model and "scale the endpoint to zero" in model
    scaling = output_text(ran["04_autoscaling"])
    for expected in ("async", "ApproximateBacklogSizePerInstance", "HasBacklogWithoutCapacity",
                     f"0 to {notebook.load_settings().max_instances}", "autoscaling 0-"):
        assert expected in scaling, expected
    assert "SageMakerVariantInvocationsPerInstance" not in scaling

    cleanup = output_text(run_file("07_cleanup"))
    assert "Stop deadline: at" in cleanup and "scale the endpoint to zero" in cleanup
    assert "cost so far: at least $" in cleanup and "estimate from list prices" in cleanup
    assert "nothing is billed in local mode" in cleanup
    assert "stop deadline" in cleanup and "Nothing billable is left" in cleanup
    assert stack_resources(prefix) == []


# -- the demo panel, in-process -------------------------------------------------------------------


def test_demo_panel_button_shows_photo_and_answer(deployed):
    cfg, aws = deployed
    panel = notebook.demo_panel(cfg, aws, timeout=60)
    labels = [label for label, _ in panel.photo.options]
    assert {"neuschwanstein", "santiago cathedral", "tour eiffel"} <= set(labels)
    assert "trevi" not in labels  # not the example
    panel.photo.value = str(IMAGES / "neuschwanstein.jpeg")

    panel.button.click()  # the widget's own wiring runs the callback

    assert panel.record is not None and panel.record["status"] == "ok"
    assert "Offline stand-in" in panel.result_html
    assert "data:image/jpeg;base64," in panel.result_html
    assert "neuschwanstein.jpeg" in panel.result_html
    assert "uploaded s3://" in panel.progress.value
    assert "ok: record output/neuschwanstein.jpeg.json" in panel.progress.value
    assert not ACCOUNT_DIGITS.search(panel.progress.value)
    assert not panel.button.disabled
    # The answer goes through the notebook's HTML renderer (an Output widget), as in cells.
    assert panel.result.outputs[0]["data"]["text/html"] == panel.result_html
    assert panel.upload.layout.width == "auto"  # "Upload a photo", not "Upload a phot..."
    assert f'id="{panel.note_id}"' in panel.note_html()  # shown where the panel cannot render


def test_demo_panel_uploads_and_explains_what_is_not_a_photo(deployed, tmp_path):
    cfg, aws = deployed
    panel = notebook.DemoPanel(cfg, aws, timeout=60, upload_dir=tmp_path)

    def upload(name: str, data: bytes) -> None:
        panel.upload.value = ({"name": name, "type": "image/jpeg", "size": len(data),
                               "content": memoryview(data), "last_modified": datetime.now(UTC)},)

    upload("../holiday.jpeg", b"just some text, no photo")
    assert panel.photo.label == "holiday.jpeg (uploaded)"
    assert Path(panel.photo.value) == tmp_path / "holiday.jpeg"  # no way out of the folder
    assert panel.upload.value == ()  # reset, ready for the next file
    record = panel.on_ask()
    assert record is not None and record["status"] == "error"
    assert record["error"]["code"] == "not_an_image"
    assert "No answer: not_an_image" in panel.result_html
    assert "no GPU time was spent" in panel.result_html
    assert "(not a viewable image)" in panel.result_html

    upload("My Trip.JPG", (IMAGES / "santiago_cathedral.jpeg").read_bytes())
    record = panel.on_ask()
    assert record is not None and record["status"] == "ok"
    assert record["input"]["key"] == "input/My Trip.JPG"
    assert "Offline stand-in" in panel.result_html


def test_demo_panel_shows_a_failure_that_left_no_record(local_env):
    cfg = notebook.load_settings(prefix="nb-never-deployed")
    panel = notebook.DemoPanel(cfg, Aws(cfg.region), timeout=5)
    assert panel.choice.layout.display == "none"  # no presets table: no pickers
    assert panel.on_ask() is None
    assert "does not exist" in panel.result_html and "visual-tourism up" in panel.result_html
    assert "failed:" in panel.progress.value
    assert not panel.button.disabled


def _metadata(cfg, aws, record) -> dict[str, str]:
    """The uploaded photo's S3 metadata, read back."""
    return aws.s3.head_object(Bucket=stack.bucket_name(cfg, aws),
                              Key=record["input"]["key"])["Metadata"]


def test_demo_panel_passes_the_chosen_preset_and_language(deployed):
    cfg, aws = deployed
    panel = notebook.demo_panel(cfg, aws, timeout=60)
    assert panel.choice.layout.display != "none"
    names = [value for _, value in panel.preset.options]
    assert names[0] == "default" and {"family", "history", "food"} <= set(names)
    assert panel.chosen() == (None, None)  # the default preset in its language: no choice
    panel.photo.value = str(IMAGES / "neuschwanstein.jpeg")
    panel.preset.value = "family"
    assert "Japanese" in panel.language.options and panel.language.value == "English"
    panel.language.value = "Japanese"

    record = panel.on_ask()

    assert record is not None and record["status"] == "ok", record
    assert _metadata(cfg, aws, record) == {"preset": "family", "language": "Japanese"}
    assert record["input"]["key"] != "input/neuschwanstein.jpeg"  # not the default's answer
    assert "preset family" in panel.progress.value
    info = record.get("preset")
    if isinstance(info, dict):  # the handler's side says what was asked for and answered
        assert info.get("requested", info["name"]) == "family", info
        assert info["language"] == "Japanese"
        assert f"preset {info['name']}" in panel.result_html


def test_demo_panel_sends_where_the_photo_was_taken_and_shows_the_places(deployed):
    cfg, aws = deployed
    panel = notebook.demo_panel(cfg, aws, timeout=60)
    panel.photo.value = str(IMAGES / "santiago_cathedral.jpeg")
    panel.near.value = "42.88062, -8.54458"
    record = panel.on_ask()
    assert record is not None and record["status"] == "ok", record
    assert _metadata(cfg, aws, record)["near"] == "42.881,-8.545"  # about 100 m
    assert record["places"]["position_source"] == "user"
    assert "Places to eat within 800 m" in panel.result_html
    assert "Stand-in restaurant 1 (not a real place)" in panel.result_html
    assert "Amazon Location Service" in panel.result_html


def test_preset_editor_functions_save_versions_and_refuse_naming_the_field(deployed):
    from visual_tourism import presets

    cfg, aws = deployed
    assert cfg.profile.limits.engine == "tgi" and cfg.profile.request_style == "tgi"
    said: list[str] = []
    mine = notebook.copy_preset(cfg, aws, "family", "t-edit", progress=said.append)
    assert mine["version"] == 1 and "created as a copy of family" in said[-1]
    assert notebook.copy_preset(cfg, aws, "family", "t-edit", progress=said.append)[
        "version"] == 1 and "left as it is" in said[-1]

    answers = [f"Answer {i}." for i in range(len(mine["examples"]))]
    saved = notebook.edit_preset(cfg, aws, "t-edit", temperature=0.8, answers=answers,
                                 language="French")
    assert saved["version"] == 2
    stored = presets.get_preset(aws, cfg, "t-edit")
    assert stored["version"] == 2 and stored["generation"]["temperature"] == 0.8
    assert [e["answer"] for e in stored["examples"]] == answers and stored["language"] == "French"

    # top_p = 1.0: TGI wants 0 < top_p < 1. Refused, naming it; nothing written.
    check = notebook.check_edit(cfg, aws, "t-edit", top_p=1.0)
    assert any("top_p=1.0" in p and "0 < top_p < 1" in p for p in check["problems"]), check
    with pytest.raises(presets.PresetError, match=r"top_p=1\.0 must satisfy 0 < top_p < 1"):
        notebook.edit_preset(cfg, aws, "t-edit", top_p=1.0)
    with pytest.raises(presets.PresetError, match="nope"):
        notebook.edit_preset(cfg, aws, "t-edit", nope=1)
    assert presets.get_preset(aws, cfg, "t-edit") == stored
    # Based on a version someone else has saved over since: refused, nothing overwritten.
    with pytest.raises(presets.PresetConflictError, match="version 2"):
        notebook.edit_preset(cfg, aws, "t-edit", expected_version=1, temperature=0.5)
    assert presets.get_preset(aws, cfg, "t-edit") == stored

    photo = IMAGES / "santiago_cathedral.jpeg"
    first = notebook.compare_answers(cfg, aws, photo, "t-edit", progress=said.append)
    second = notebook.compare_answers(cfg, aws, photo, "t-edit", language="German",
                                      previous=first, progress=said.append)
    for comparison, language in ((first, "French"), (second, "German")):
        assert comparison.record["status"] == "ok", comparison.record
        meta = _metadata(cfg, aws, comparison.record)
        assert meta["preset"] == "t-edit" and meta.get("language", language) == language
        info = comparison.record.get("preset")
        if isinstance(info, dict):
            assert info.get("requested", info["name"]) == "t-edit", info
    assert second.previous == first.record and first.record["input"]["key"] != second.record[
        "input"]["key"]  # a fresh upload each time: an edited preset is asked again
    page = second.html()
    assert page.count("<h4") == 2 and ">Before" in page and "Now (t-edit v2, German)" in page


def test_preset_editor_widget_saves_refuses_and_asks(deployed):
    from visual_tourism import presets

    cfg, aws = deployed
    notebook.copy_preset(cfg, aws, "history", "t-widget", progress=lambda _m: None)
    editor = notebook.preset_editor(cfg, aws, IMAGES / "tour_eiffel.jpeg", preset="t-widget",
                                    timeout=60)
    limits = cfg.profile.limits
    # The sliders' ranges: TGI's rules for the active profile.
    assert (editor.temperature.min, editor.top_p.min, editor.top_p.max) == (0.05, 0.01, 0.99)
    assert 1 <= editor.max_new_tokens.max <= limits.max_total_tokens - 1
    assert editor.sampling.value and editor.top_p.value == 0.5
    assert len(editor.answers) == 3 and editor.language.value == "English"
    assert list(editor.language.options) == list(presets_schema.LANGUAGES)

    editor.instruction.value = "   "  # refused: named in the widget, nothing written
    assert editor.on_save() is None
    assert "instruction" in editor.message.value and "not saved" in editor.message.value
    assert presets.get_preset(aws, cfg, "t-widget")["version"] == 1

    editor.load()
    editor.temperature.value = 0.3
    editor.answers[0].value = "The answer of a careful historian."
    editor.language.value = "Italian"
    editor.save.click()
    stored = presets.get_preset(aws, cfg, "t-widget")
    assert stored["version"] == 2 and "version 2" in editor.message.value
    assert stored["generation"]["temperature"] == 0.3 and stored["language"] == "Italian"
    assert stored["examples"][0]["answer"] == "The answer of a careful historian."

    notebook.edit_preset(cfg, aws, "t-widget", max_new_tokens=100)  # someone else: version 3
    editor.temperature.value = 0.4
    assert editor.on_save() is None and "Reload" in editor.message.value
    assert presets.get_preset(aws, cfg, "t-widget")["generation"]["temperature"] == 0.3
    editor.reload.click()
    assert editor.loaded["version"] == 3 and editor.max_new_tokens.value == 100

    editor.ask.click()
    first = editor.comparison
    assert first is not None and first.record["status"] == "ok"
    assert _metadata(cfg, aws, first.record) == {"preset": "t-widget", "language": "Italian"}
    comparison = editor.on_ask()
    assert comparison is not None and comparison.previous == first.record
    assert 'class="vt-compare"' in editor.result_html and not editor.ask.disabled
    assert editor.result.outputs[0]["data"]["text/html"] == editor.result_html


def test_side_by_side_escapes_the_answer():
    record = {"status": "ok", "answer": "<script>alert(1)</script> & more"}
    page = notebook.side_by_side_html(IMAGES / "tour_eiffel.jpeg", record)
    assert "<script>" not in page and "&lt;script&gt;" in page
    error = {"status": "error", "error": {"code": "model_timeout", "message": "slow <b>"}}
    page = notebook.side_by_side_html(IMAGES / "tour_eiffel.jpeg", error)
    assert "temporary" in page and "slow &lt;b&gt;" in page
    places = {"status": "ok", "answer": "Fine.", "places": {
        "status": "ok", "position_source": "photo", "radius_m": 800,
        "nearby": [{"name": "<b>Bar</b>", "category": "Bar or Pub", "distance_m": 40}],
        "recommended": "<b>Bar</b>", "attribution": "Nearby places: Amazon Location Service"}}
    page = notebook.side_by_side_html(IMAGES / "tour_eiffel.jpeg", places)
    assert "&lt;b&gt;Bar&lt;/b&gt; (Bar or Pub, 40 m) &lt;- recommended" in page
    assert "<b>Bar" not in page and "the photo&#x27;s GPS" in page


# -- environment and settings -------------------------------------------------------------------


def test_local_mode_is_stated(local_env):
    cfg = notebook.load_settings()
    text = notebook.describe_environment(cfg, Aws(cfg.region))
    assert text.startswith(f"local mode: AWS stand-in at {local_env.moto_url}")
    assert local_env.model_server.url in text


def test_preflight_lists_each_step_with_what_it_lacks(local_env):
    """A principal whose policies the local stand-in can read (an IAM user allowed to simulate
    its own policies, and S3 only): the steps it may run, and what the others lack."""
    admin = boto3.client("iam")  # the stand-in's administrator credentials
    name = "student-" + os.urandom(3).hex()
    admin.create_user(UserName=name)
    admin.put_user_policy(UserName=name, PolicyName="some", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy", "Resource": "*"},
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = admin.create_access_key(UserName=name)["AccessKey"]
    session = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                    aws_secret_access_key=key["SecretAccessKey"],
                                    region_name="us-east-1")
    cfg = notebook.load_settings()
    table = notebook.preflight(cfg, Aws(cfg.region, session=session))
    text = table.text()
    assert table.info["principal"].endswith(f":user/{name}")
    assert table.info["steps"]["up: bucket"] == "can run", text
    assert "iam:CreateRole" in json.dumps(table.info["steps"]["up: roles"]), text
    assert "cannot run" in table.info["checked"] and "admin-policy" in table.info["what to do"]
    assert not ACCOUNT_DIGITS.search(text) and "<table" in table._repr_html_()


def test_local_mode_that_is_not_running_is_explained(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    cfg = notebook.load_settings()
    with pytest.raises(notebook.NotReachableError, match="visual-tourism local serve"):
        notebook.describe_environment(cfg, Aws(cfg.region))


def test_aws_is_stated_without_the_account_id(mocked_aws, monkeypatch):
    cfg = notebook.load_settings()
    laptop = notebook.describe_environment(cfg, Aws(cfg.region))  # in-process moto
    assert laptop.startswith("AWS from this machine: account ending 9012")
    assert "credentials from env" in laptop
    assert not ACCOUNT_DIGITS.search(laptop)

    monkeypatch.setattr(where, "in_studio", lambda env=None: True)
    monkeypatch.setattr(iam, "studio_role_arn", lambda: (
        "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole-1"))
    studio = notebook.describe_environment(cfg, Aws(cfg.region))
    assert studio.startswith("SageMaker Studio: execution role AmazonSageMaker-ExecutionRole-1")
    assert not ACCOUNT_DIGITS.search(studio)


@pytest.mark.parametrize("value", ["<your-bucket>", "CHANGE_ME", "your-role", "TODO", "...",
                                   "replace-me-please"])
def test_placeholder_guard_names_the_setting(value):
    with pytest.raises(ConfigError, match=r"bucket = "):
        notebook.check_placeholders({"prefix": "visual-tourism", "bucket": value})


def test_placeholder_guard_passes_real_values():
    settings = {"prefix": "todo-app", "region": "eu-west-1", "bucket": "", "max_instances": 5}
    assert notebook.check_placeholders(settings) is settings


def test_settings_are_validated_saved_and_read_back(monkeypatch, tmp_path):
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))
    path = notebook.settings_path()
    with pytest.raises(ConfigError, match="Known profiles"):
        notebook.save_settings({"prefix": "trip", "model_profile": "gpt-vision"})
    assert not path.exists()  # nothing written before the values are valid

    cfg = notebook.save_settings({"region": "eu-west-1", "prefix": "trip", "bucket": "",
                                  "max_instances": 3, "target_invocations": 7.5})
    assert (cfg.region, cfg.prefix, cfg.max_instances, cfg.target_invocations) == (
        "eu-west-1", "trip", 3, 7.5)
    assert "bucket" not in path.read_text()  # empty means the default
    assert notebook.load_settings().prefix == "trip"  # what the next notebook's kernel reads
    monkeypatch.setenv("VT_PREFIX", "from-env")
    assert notebook.load_settings().prefix == "from-env"  # the environment still wins


def test_clean_up_check_fails_while_something_is_left(mocked_aws):
    cfg = notebook.load_settings(prefix="leftover")
    aws = Aws(cfg.region)
    stack.create_bucket(cfg, aws)
    with pytest.raises(notebook.LeftoverError, match="bucket leftover-"):
        notebook.confirm_clean(cfg, aws)
    notebook.confirm_clean(cfg, aws, keep_bucket=True)  # kept on purpose: not a failure
    stack.down(cfg, aws, delete_bucket=True)
    notebook.confirm_clean(cfg, aws)


def test_clean_up_check_lists_the_stop_deadline_and_the_alarm(mocked_aws):
    from visual_tourism import async_inference, schedule

    cfg = notebook.load_settings(prefix="deadline", inference_mode="async", stop_after="2h")
    aws = Aws(cfg.region)
    schedule.ensure_deadline(aws, cfg)
    aws.client("cloudwatch").put_metric_alarm(
        **async_inference.alarm(cfg, "arn:aws:autoscaling:us-east-1:123456789012:policy"))
    left = "\n".join(notebook.leftovers(cfg, aws))
    for expected in (f"stop deadline schedule {cfg.schedule_name}", "schedule group deadline",
                     f"IAM role {cfg.scheduler_role_name}",
                     f"CloudWatch alarm {async_inference.alarm_name(cfg)}"):
        assert expected in left, (expected, left)
    with pytest.raises(notebook.LeftoverError, match="stop deadline"):
        notebook.confirm_clean(cfg, aws)
    stack.down(cfg, aws)  # the deadline, its group and role, and the alarm
    assert async_inference.remove_scaling(aws, cfg) is False  # already gone with `down`
    assert notebook.leftovers(cfg, aws) == []


# -- what is committed ------------------------------------------------------------------------


def test_committed_notebooks_are_built_stripped_and_free_of_account_data(capsys):
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == ["00_quickstart", *STEP_BY_STEP]
    assert build_notebooks.main(["--check"]) == 0, capsys.readouterr().out


def test_the_commit_check_catches_outputs_and_account_data(tmp_path, monkeypatch, capsys):
    nb = build_notebooks.build("bad", [("code", "x = 1"), ("markdown", "notes")])
    assert build_notebooks.problems(nb) == []
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="hello")]
    nb.cells[0].execution_count = 3
    nb.cells[1].source = ("role arn:aws:iam::123456789012:role/x, key AKIAABCDEFGHIJKLMNOP, "
                          "photo /home/alice/trip.jpeg")
    nb.metadata["widgets"] = {"state": {}}
    found = "\n".join(build_notebooks.problems(nb))
    for expected in ("has outputs", "execution count", "12-digit", "ARN", "access key ID",
                     "home or machine path", "widgets"):
        assert expected in found, (expected, found)

    # A notebook edited by hand (or saved with outputs) fails the --check of the folder.
    copy = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, copy, ignore=shutil.ignore_patterns("*.py", ".*"))
    monkeypatch.setattr(build_notebooks, "HERE", copy)
    assert build_notebooks.main(["--check"]) == 0
    (copy / "06_demo.ipynb").write_text(nbformat.writes(nb))
    assert build_notebooks.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "06_demo.ipynb: differs" in out and "06_demo.ipynb: cell 0: has outputs" in out


def test_kernel_runs_this_interpreter(jupyter_path):
    spec = json.loads((jupyter_path / "kernels" / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
