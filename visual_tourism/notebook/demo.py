"""Notebook 06: a photo and its answer side by side, error records explained, the panel."""

from __future__ import annotations

import html
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from photo_handler.sniff import ACCEPTED

from .. import presets, stack
from ..aws import Aws
from ..config import IMAGES_DIR, Config
from ..errors import VisualTourismError
from ..places import near_key, near_metadata, nearby_lines
from .display import redact, show
from .photos import demo_photos, thumbnail_data_uri
from .presets import preset_choices, question_key

log = logging.getLogger(__name__)


_PHOTO_CODES = frozenset({"not_an_image", "corrupt_image", "empty_file", "unsupported_format",
                          "image_too_large", "image_too_small", "truncated_image"})
_EXPLANATIONS = {
    "photo": "The handler checked the upload before calling the model and refused it, so no "
             f"GPU time was spent. Upload a {ACCEPTED} photo.",
    "busy": "The model endpoint was busy or too slow; the handler already retried. This is "
            "usually temporary: try again in a minute, and check the endpoint's status and "
            "autoscaling if it keeps happening.",
    "wiring": "The handler could not use the model: the endpoint is missing, refused the call "
              "or is misconfigured. Re-run the model and Lambda notebooks (or 'visual-tourism "
              "up'), then try again.",
    "answer": "The model was reached but gave no usable answer. Try another photo.",
    "input": "The handler could not read the photo from the bucket. Upload it again.",
}
_CATEGORY = {
    **dict.fromkeys(_PHOTO_CODES, "photo"),
    "model_timeout": "busy", "model_unavailable": "busy",
    "endpoint_not_found": "wiring", "model_request_failed": "wiring",
    "configuration_error": "wiring",
    "model_rejected_input": "answer", "bad_model_response": "answer", "empty_answer": "answer",
    "input_unreadable": "input",
}


def explain_error(error: Mapping[str, Any]) -> str:
    """A plain-language reading of a result record's ``error`` (code + message)."""
    category = _CATEGORY.get(str(error.get("code", "")))
    return _EXPLANATIONS[category] if category else "The handler reported an error."


def side_by_side_html(image_path: str | Path, record: Mapping[str, Any] | None,
                      failure: str | None = None) -> str:
    """HTML with the photo on the left and the answer, or the error explained, on the right.

    Every text from the record is escaped: a model's answer must not inject markup.
    """
    path = Path(image_path)
    uri = thumbnail_data_uri(path)
    picture = (f'<img src="{uri}" alt="{html.escape(path.name)}" style="max-width:100%">'
               if uri else '<div style="padding:2em;border:1px dashed gray">'
               "(not a viewable image)</div>")
    if record is not None and record.get("status") == "ok":
        heading = "Answer"
        body = f"<p>{html.escape(str(record.get('answer', '')).strip())}</p>"
    elif record is not None:
        error = record.get("error") or {}
        heading = f"No answer: {html.escape(str(error.get('code', 'error')))}"
        body = (f"<p>{html.escape(explain_error(error))}</p>"
                f"<p><i>Handler:</i> {html.escape(redact(str(error.get('message', ''))))}</p>")
    else:
        heading = "No answer"
        body = f"<p>{html.escape(redact(failure or 'nothing came back'))}</p>"
    details = []
    if record is not None:
        model = record.get("model") or {}
        timing = record.get("timing") or {}
        # A photo refused before the model was called: no model, no model time to show.
        if record.get("status") == "ok" or timing.get("attempts", 1):
            details += [f"model {model.get('model_id') or model.get('endpoint') or '?'}",
                        f"model time {timing.get('model_seconds', '?')} s"]
        chosen = record.get("preset")
        if isinstance(chosen, Mapping) and chosen.get("name"):
            version = chosen.get("version")
            details.append(f"preset {chosen['name']}"
                           + (f" v{version}" if version is not None else "")
                           + (f", {chosen['language']}" if chosen.get("language") else ""))
        details += [f"result seen {record.get('seen_after_seconds', '?')} s after upload",
                    f"record {record.get('result_key', '?')}"]
    footer = (f'<p style="color:gray;font-size:smaller">{html.escape("; ".join(details))}</p>'
              if details else "")
    if record is not None and record.get("status") == "ok":
        body += nearby_html(record)
    return (
        '<div style="display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap">'
        f'<figure style="margin:0;flex:0 1 480px">{picture}'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
        f'<div style="flex:1 1 20em"><h4>{heading}</h4>{body}{footer}</div></div>'
    )


def nearby_html(record: Mapping[str, Any]) -> str:
    """The record's nearby places (places.nearby_lines), escaped, with their attribution."""
    lines = nearby_lines(record)
    if not lines:
        return ""
    head, *rest = lines
    items = "".join(f"<li>{html.escape(line.strip()[2:])}</li>" for line in rest
                    if line.strip().startswith("- "))
    tail = [line for line in rest if not line.strip().startswith("- ")]
    return (f"<p><b>{html.escape(head)}</b></p>" + (f"<ul>{items}</ul>" if items else "")
            + "".join(f'<p style="color:gray;font-size:smaller">{html.escape(t)}</p>'
                      for t in tail))


def show_side_by_side(image_path: str | Path, record: Mapping[str, Any] | None) -> None:
    from IPython.display import HTML, display

    display(HTML(side_by_side_html(image_path, record)))


def show_record(record: Mapping[str, Any]) -> None:
    """The result record as stored under output/, as a table (account IDs masked);
    ``print(json.dumps(record, indent=2))`` shows the JSON itself."""
    show(record)


def sample_not_a_photo(folder: Path | None = None) -> Path:
    """A text file named like a photo: the handler must refuse it by its bytes, not its name."""
    if folder is None:  # the state folder (outside the repository), overwritten each run
        folder = Path(os.environ.get("VT_STATE_DIR") or Path.home() / ".visual-tourism")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "not-a-photo.jpeg"
    path.write_text("This is a text file, not a photo.\n")
    return path


_SAFE_NAME = re.compile(r"[^A-Za-z0-9 ._-]+")


class DemoPanel:
    """Choose or upload a photo, press the button, watch progress, read the answer.

    ``on_ask`` is the button's callback; it can be called directly (tests do) and returns the
    result record, or None when no record came back.
    """

    def __init__(self, cfg: Config, aws: Aws, timeout: float = 300.0,
                 images_dir: Path = IMAGES_DIR, upload_dir: Path | None = None) -> None:
        import ipywidgets as widgets

        self.cfg, self.aws, self.timeout = cfg, aws, timeout
        # Beside the state file, outside the repository; made on the first upload only.
        self.upload_dir = upload_dir or cfg.state_path.parent / "uploads"
        self.record: dict[str, Any] | None = None
        self._lines: list[str] = []
        self._started = 0.0
        self.photo = widgets.Dropdown(
            options=[(p.stem.replace("_", " "), str(p)) for p in demo_photos(cfg, images_dir)],
            description="Photo",
        )
        self.upload = widgets.FileUpload(accept="image/*", multiple=False,
                                         description="Upload a photo",
                                         layout=widgets.Layout(width="auto"))
        self.button = widgets.Button(description="Ask the travel agent", icon="paper-plane",
                                     button_style="primary",
                                     layout=widgets.Layout(width="auto"))
        self.progress = widgets.HTML()
        # The answer goes through the notebook's own HTML renderer, as in the cells above.
        self.result = widgets.Output()
        self.result_html = ""
        self.note_id = f"vt-panel-note-{uuid.uuid4().hex[:12]}"
        # Rendered only with the live panel: it hides the note shown for a reopened notebook.
        hide_note = widgets.HTML(f"<style>#{self.note_id} {{display:none}}</style>",
                                 layout=widgets.Layout(height="0px", margin="0"))
        # The answer presets and languages (hidden when the stack has no presets table).
        self.presets = {item["name"]: item for item in preset_choices(cfg, aws)}
        self.preset = widgets.Dropdown(
            options=[(str(item.get("title") or name), name) for name, item in self.presets.items()],
            description="Answer as", layout=widgets.Layout(width="auto"))
        self.language = widgets.Dropdown(description="in", layout=widgets.Layout(width="auto"),
                                         style={"description_width": "2em"})
        # Where the photo was taken, for the real places to eat nearby (empty: its own GPS).
        self.near = widgets.Text(placeholder="LAT,LON, e.g. 41.9009,12.4833",
                                 description="Taken near", layout=widgets.Layout(width="auto"))
        self.choice = widgets.HBox([self.preset, self.language])
        if not self.presets:
            self.choice.layout.display = "none"
        self.preset.observe(lambda _change: self._languages(), names="value")
        self._languages()
        self.upload.observe(self.on_upload, names="value")
        self.button.on_click(self.on_ask)
        self.widget = widgets.VBox([
            widgets.HBox([self.photo, self.upload, self.button]), self.choice, self.near,
            self.progress,
            self.result, hide_note,
        ])

    def _languages(self) -> None:
        """The chosen preset's languages, its own answer language selected."""
        item = self.presets.get(self.preset.value) or {}
        offered = [v for v in item.get("languages") or [] if isinstance(v, str)]
        self.language.options = offered
        if item.get("language") in offered:
            self.language.value = item["language"]

    def chosen(self) -> tuple[str | None, str | None]:
        """(preset, language) to ask with; (None, None) without presets or with the default
        preset in its own language (the photo's upload carries no choice then)."""
        if not self.presets or self.preset.value is None:
            return None, None
        item = self.presets.get(self.preset.value) or {}
        preset, language = self.preset.value, self.language.value
        if preset == "default" and language in (None, item.get("language")):
            return None, None
        return preset, language

    def note_html(self) -> str:
        """Shown under the panel where it cannot render (a saved notebook, reopened)."""
        return (f'<p id="{self.note_id}" style="color:gray"><i>The demo panel lives in the '
                "running kernel. After reopening this notebook, run its cells again (Run &gt; "
                "Run All Cells) to bring the panel back.</i></p>")

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        display(self.widget)
        display(HTML(self.note_html()))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def show_result(self, page: str) -> None:
        self.result_html = page
        self.result.outputs = () if not page else ({"output_type": "display_data", "metadata": {},
                                "data": {"text/html": page, "text/plain": "(the answer)"}},)

    def on_upload(self, change: Mapping[str, Any]) -> None:
        """Save an uploaded file and select it in the list (an empty change is the reset)."""
        files = change.get("new") or ()
        if not files:
            return
        upload = files[0]
        name = _SAFE_NAME.sub("_", Path(str(upload["name"])).name).strip(" .") or "upload.jpeg"
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        path = self.upload_dir / name
        path.write_bytes(bytes(upload["content"]))
        label = f"{name} (uploaded)"
        others = [option for option in self.photo.options if option[1] != str(path)]
        self.photo.options = [*others, (label, str(path))]
        self.photo.value = str(path)
        self.upload.value = ()  # ready for the next upload of the same file

    def report(self, message: str) -> None:
        """The progress callback: the latest lines, with the time since the button press."""
        self._lines.append(f"{time.monotonic() - self._started:5.1f} s  {redact(message)}")
        shown = "<br>".join(html.escape(line) for line in self._lines[-8:])
        self.progress.value = f'<pre style="margin:0;line-height:1.4">{shown}</pre>'

    def on_ask(self, _button: Any = None) -> dict[str, Any] | None:
        path = Path(self.photo.value)
        self._lines, self._started = [], time.monotonic()
        self.button.disabled = True
        self.show_result("")
        self.report(f"asking about {path.name}")
        record: dict[str, Any] | None = None
        preset, language = self.chosen()
        try:
            key = None
            if preset:
                # The version read now: an edited preset is asked again, not its old answer.
                version = (presets.get_preset(self.aws, self.cfg, preset) or {}).get("version")
                key = question_key(self.cfg, path, preset, language, version)
                self.report(f"preset {preset} (version {version}), answer in {language}")
            near = near_metadata(self.near.value.strip() or None)
            if near and key:
                key = near_key(key, near)  # each position its own question (ask does so too)
            record = stack.ask(path, self.cfg, self.aws, timeout=self.timeout,
                               progress=self.report, preset=preset, language=language, key=key,
                               near=near.get("near"))
        except Exception as exc:
            # A button callback's exception would only reach the kernel's log, unseen: show it.
            log.warning("Demo panel: %s", exc, exc_info=not isinstance(exc, VisualTourismError))
            self.report(f"failed: {exc}")
            self.show_result(side_by_side_html(path, None, failure=str(exc)))
        else:
            self.report(f"{record.get('status')}: record {record.get('result_key')}")
            self.show_result(side_by_side_html(path, record))
        finally:
            self.button.disabled = False
        self.record = record
        return record


def demo_panel(cfg: Config, aws: Aws, timeout: float = 300.0) -> DemoPanel:
    return DemoPanel(cfg, aws, timeout=timeout)
