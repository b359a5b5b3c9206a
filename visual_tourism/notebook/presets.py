"""Notebook 06's preset editor: change an answer preset, save it (checked against the active
profile's container), ask about a photo with it, and see the answer beside the previous one.

Everything the widgets do is a plain function first, so that a cell (and the headless test)
can call it without widgets:

- ``copy_preset(cfg, aws, source, name)``: a preset of your own to edit (left as it is if it
  exists), so that the seeded ones stay as they are.
- ``check_edit(cfg, aws, name, **changes)``: what the container would refuse, nothing written.
- ``edit_preset(cfg, aws, name, **changes)``: read, change, validate, write (a new version);
  refused with every problem named by its field, nothing written; a preset changed meanwhile
  by someone else is refused too (reload and redo the change).
- ``compare_answers(cfg, aws, photo, preset, language, previous=...)``: ask about a photo with
  this preset and language, shown beside the previous answer (two columns).
- ``PresetEditor``: the same with sliders, text areas, pickers and two buttons.

Changes (keyword arguments): ``temperature``, ``top_p``, ``top_k``, ``do_sample`` (sampling
parameters: None removes one), ``max_new_tokens``, ``instruction``, ``answers`` (the examples'
written answers, in order), ``language``, ``languages``, ``title``, ``description``,
``structured``, ``examples``.
"""

from __future__ import annotations

import contextlib
import copy
import html
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from photo_handler import presets_schema

from .. import presets, stack
from ..aws import Aws
from ..config import IMAGES_DIR, Config
from ..errors import VisualTourismError
from .display import redact, say
from .photos import demo_photos, thumbnail_data_uri

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

SAMPLING = ("do_sample", "temperature", "top_p", "top_k")  # changes that go into `generation`
TOP_LEVEL = ("title", "description", "instruction", "language", "languages", "max_new_tokens",
             "structured", "examples")
CHANGES = (*SAMPLING, *TOP_LEVEL, "answers")


# -- the limits the sliders follow ------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    step: float

    def clamp(self, value: float) -> float:
        return min(max(value, self.low), self.high)


def slider_ranges(cfg: Config, item: Mapping[str, Any] | None = None) -> dict[str, Range]:
    """What the active profile's container accepts (serving_limits' rules), as slider ranges:
    TGI wants temperature > 0 and 0 < top_p < 1; vLLM takes temperature 0 and top_p 1.
    ``max_new_tokens`` goes up to what still fits beside this preset's prompt and examples
    (presets_schema.prompt_tokens), or the container's total budget without an item."""
    limits, style = cfg.profile.limits, cfg.profile.request_style
    strict = limits.engine == "tgi" and style == "tgi"
    tgi = limits.engine == "tgi"
    most = limits.max_total_tokens - 1
    if item is not None:
        # A broken item keeps the container's budget: the validation says what is wrong.
        with contextlib.suppress(KeyError, TypeError, ValueError):
            most = presets_schema.prompt_tokens(item, limits, style)["max_new_tokens_allowed"]
    return {
        "temperature": Range(0.05 if strict else 0.0, 2.0, 0.05),
        "top_p": Range(0.01, 0.99 if tgi else 1.0, 0.01),
        "max_new_tokens": Range(1, max(1, most), 1),
    }


# -- plain functions ---------------------------------------------------------------------------


def editable(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item without the fields a write manages (version, schema, updated_at)."""
    return {k: copy.deepcopy(v) for k, v in item.items() if k not in presets_schema.MANAGED[1:]}


def apply_changes(item: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``item`` with ``changes`` applied (see the module's docstring); PresetError
    naming an unknown change. Nothing is validated here."""
    unknown = sorted(set(changes) - set(CHANGES))
    if unknown:
        raise presets.PresetError(f"{', '.join(unknown)}: cannot be changed here; changes: "
                                  f"{', '.join(CHANGES)}")
    new = editable(item)
    generation = dict(new.get("generation") or {})
    for name in SAMPLING:
        if name in changes:
            if changes[name] is None:
                generation.pop(name, None)
            else:
                generation[name] = changes[name]
    new["generation"] = generation
    for name in TOP_LEVEL:
        if name in changes:
            new[name] = copy.deepcopy(changes[name])
    if "answers" in changes:
        answers = list(changes["answers"])
        examples = [dict(e) for e in new.get("examples") or []]
        if len(answers) != len(examples):
            raise presets.PresetError(f"answers: {len(answers)} given, the preset has "
                                      f"{len(examples)} example(s); give one answer each")
        new["examples"] = [{**e, "answer": a} for e, a in zip(examples, answers, strict=True)]
    return new


def check_edit(cfg: Config, aws: Aws, name: str, **changes: Any) -> dict[str, Any]:
    """What would happen to this edit, nothing written: ``{"preset", "version", "saved":
    False, "problems": [...]}`` (an empty list: the container would take it)."""
    current = presets.require_preset(aws, cfg, name)
    found = presets.problems(cfg, apply_changes(current, **changes))
    return {"preset": name, "version": current.get("version"), "saved": False,
            "problems": found or ["none: the container would take it"]}


def edit_preset(cfg: Config, aws: Aws, name: str, *, expected_version: int | None = None,
                **changes: Any) -> dict[str, Any]:
    """Change preset ``name`` and save it as a new version; returns it as stored.

    ``expected_version``: the version the change is based on (the editor passes the one it
    loaded); None: the one read now. Refused, nothing written, with PresetError naming every
    field the active profile's container would refuse, or PresetConflictError when the preset
    is no longer at that version (someone else saved it: reload, redo the change).
    """
    current = presets.require_preset(aws, cfg, name)
    item = apply_changes(current, **changes)
    presets.validate(cfg, item)
    based_on = current.get("version") if expected_version is None else expected_version
    return presets.put_preset(aws, cfg, item, expected_version=based_on)


def copy_preset(cfg: Config, aws: Aws, source: str, name: str,
                progress: Progress = say) -> dict[str, Any]:
    """Preset ``name`` as a copy of ``source`` (created if missing; an existing one is left
    as it is, edits and all). Returns it as stored."""
    existing = presets.get_preset(aws, cfg, name)
    if existing is not None:
        progress(f"preset {name} exists (version {existing.get('version')}): left as it is")
        return existing
    original = presets.require_preset(aws, cfg, source)
    item = {**editable(original), presets_schema.KEY: name}
    item["title"] = f"{original.get('title') or source} (copy)"[: presets_schema.MAX_TITLE]
    stored = presets.put_preset(aws, cfg, item, expected_version=None)
    progress(f"preset {name} created as a copy of {source}: version {stored.get('version')}")
    return stored


def preset_choices(cfg: Config, aws: Aws) -> list[dict[str, Any]]:
    """The presets to pick from, `default` first; [] when presets are off or the table is not
    there (yet), or cannot be read: the pickers are then hidden."""
    if not cfg.presets_table:
        return []
    try:
        if presets.describe_table(aws, cfg.presets_table) is None:
            return []
        return presets.list_presets(aws, cfg)
    except Exception as exc:  # noqa: BLE001 - AccessDenied and the like: no pickers, say why
        log.info("presets not listed: %s", exc)
        return []


def question_key(cfg: Config, photo: Path, preset: str | None, language: str | None,
                 version: Any = None, unique: bool = False) -> str | None:
    """The upload key for a photo asked with a preset (at ``version``) and language: a key of
    its own for each choice, because the function answers an upload of bytes it has answered
    before with the result it already wrote, whatever the metadata says. None (the photo's own
    name) when nothing is chosen. ``unique``: a fresh key for every question."""
    if preset is None and language is None and not unique:
        return None
    parts = [preset + (f"-v{version}" if version is not None else "") if preset else "",
             language or "", uuid.uuid4().hex[:8] if unique else ""]
    return f"{cfg.input_prefix}{photo.stem}.{'.'.join(p for p in parts if p)}{photo.suffix}"


def ask_with_preset(cfg: Config, aws: Aws, photo: str | Path, preset: str,
                    language: str | None = None, timeout: float | None = None,
                    progress: Progress = say) -> dict[str, Any]:
    """Ask about ``photo`` with this preset and language (S3 metadata of the upload, checked
    first); a fresh upload key each time, so an edited preset is asked again."""
    path = Path(photo)
    return stack.ask(path, cfg, aws, timeout=timeout, progress=progress, preset=preset,
                     language=language, key=question_key(cfg, path, preset, language, unique=True))


def answered_by(record: Mapping[str, Any] | None) -> str:
    """'family v3, French' from a record's ``preset`` (if the function wrote one)."""
    if not record:
        return ""
    info = record.get("preset")
    if not isinstance(info, Mapping):
        return ""
    version = info.get("version")
    text = str(info.get("name", "?")) + (f" v{version}" if version is not None else "")
    if info.get("language"):
        text += f", {info['language']}"
    return text


def _column(title: str, record: Mapping[str, Any] | None, note: str = "") -> str:
    if record is None:
        body = "<p><i>(nothing asked yet)</i></p>"
    elif record.get("status") == "ok":
        body = f"<p>{html.escape(str(record.get('answer', '')).strip())}</p>"
    else:
        error = record.get("error") or {}
        body = (f"<p><b>No answer: {html.escape(str(error.get('code', 'error')))}</b></p>"
                f"<p>{html.escape(redact(str(error.get('message', ''))))}</p>")
    by = answered_by(record)
    footer = (f'<p style="color:gray;font-size:smaller">answered with preset '
              f"{html.escape(by)}</p>" if by else "")
    if note:
        footer += f'<p style="color:#a60;font-size:smaller">{html.escape(note)}</p>'
    return (f'<div style="flex:1 1 18em;min-width:14em"><h4 style="margin-top:0">'
            f"{html.escape(title)}</h4>{body}{footer}</div>")


@dataclass
class Comparison:
    """A photo and two answers: the previous one (left) and the new one (right)."""

    photo: Path
    record: dict[str, Any] | None
    previous: dict[str, Any] | None = None
    asked: str = ""  # "family v3, French": what was asked for
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return str((self.record or {}).get("answer", ""))

    def html(self) -> str:
        uri = thumbnail_data_uri(self.photo, size=240)
        picture = (f'<img src="{uri}" alt="{html.escape(self.photo.name)}" '
                   'style="max-width:240px">' if uri else "")
        before = answered_by(self.previous)
        return (
            '<div class="vt-compare" style="display:flex;gap:1.5em;align-items:flex-start;'
            'flex-wrap:wrap">'
            f'<figure style="margin:0;flex:0 0 240px">{picture}'
            f"<figcaption>{html.escape(self.photo.name)}</figcaption></figure>"
            + _column("Before" + (f" ({before})" if before else ""), self.previous)
            + _column(f"Now ({self.asked})" if self.asked else "Now", self.record, self.note)
            + "</div>"
        )

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return (f"Before: {(self.previous or {}).get('answer', '(nothing asked yet)')}\n"
                f"Now ({self.asked}): {self.answer}" + (f"\n{self.note}" if self.note else ""))


def _version_note(record: Mapping[str, Any], version: Any) -> str:
    info = record.get("preset")
    if not isinstance(info, Mapping) or version is None or info.get("version") in (None,
                                                                                   version):
        return ""
    return (f"Answered with version {info.get('version')}, not the saved version {version}: a "
            "warm Lambda function keeps a preset it read for about a minute. Ask again in a "
            "minute to see the change.")


def compare_answers(cfg: Config, aws: Aws, photo: str | Path, preset: str,
                    language: str | None = None, previous: Comparison | Mapping[str, Any]
                    | None = None, timeout: float | None = None,
                    progress: Progress = say) -> Comparison:
    """Ask about ``photo`` with ``preset`` (and ``language``), and show the answer beside
    ``previous`` (an earlier Comparison or record). Displays as two columns in JupyterLab."""
    if isinstance(previous, Comparison):
        previous = previous.record
    item = presets.require_preset(aws, cfg, preset)
    asked = f"{preset} v{item.get('version')}, {language or item.get('language')}"
    record = ask_with_preset(cfg, aws, photo, preset, language, timeout, progress)
    return Comparison(Path(photo), record, dict(previous) if previous else None, asked,
                      _version_note(record, item.get("version")))


# -- the widget --------------------------------------------------------------------------------


class PresetEditor:
    """Pick a preset, change it with sliders and text areas, Save (checked first), then ask
    about a photo with it and see the answer beside the previous one.

    ``on_save`` and ``on_ask`` are the buttons' callbacks; tests call them directly.
    """

    def __init__(self, cfg: Config, aws: Aws, photo: str | Path | None = None,
                 preset: str = presets_schema.DEFAULT_NAME, timeout: float | None = None,
                 images_dir: Path = IMAGES_DIR) -> None:
        import ipywidgets as widgets

        self.cfg, self.aws, self.timeout = cfg, aws, timeout
        self.loaded: dict[str, Any] = {}
        self.comparison: Comparison | None = None
        self.previous: dict[str, Any] | None = None
        wide = widgets.Layout(width="100%")
        label = {"description_width": "9em"}
        names = [i[presets_schema.KEY] for i in presets.list_presets(aws, cfg)]
        self.preset = widgets.Dropdown(options=names, value=preset if preset in names else
                                       names[0], description="Preset", style=label)
        self.reload = widgets.Button(description="Reload", icon="refresh",
                                     layout=widgets.Layout(width="auto"))
        self.sampling = widgets.Checkbox(description="sample (off: greedy)", indent=False)
        self.temperature = widgets.FloatSlider(description="temperature", style=label,
                                               readout_format=".2f", continuous_update=False)
        self.top_p = widgets.FloatSlider(description="top_p", style=label,
                                         readout_format=".2f", continuous_update=False)
        self.max_new_tokens = widgets.IntSlider(description="max tokens", style=label,
                                                continuous_update=False)
        self.instruction = widgets.Textarea(description="instruction", style=label,
                                            layout=widgets.Layout(width="100%", height="6em"))
        self.answers_box = widgets.VBox(layout=wide)
        self.answers: list[Any] = []
        self.language = widgets.Dropdown(options=list(presets_schema.LANGUAGES),
                                         description="answer language", style=label)
        self.save = widgets.Button(description="Save", icon="save", button_style="primary")
        photos = demo_photos(cfg, images_dir)
        self.photo = widgets.Dropdown(
            options=[(p.stem.replace("_", " "), str(p)) for p in photos],
            description="Photo", style=label)
        if photo is not None:
            path = str(Path(photo))
            if path not in [value for _, value in self.photo.options]:
                self.photo.options = [*self.photo.options, (Path(path).stem, path)]
            self.photo.value = path
        self.ask = widgets.Button(description="Ask with this preset", icon="paper-plane",
                                  button_style="success", layout=widgets.Layout(width="auto"))
        self.message = widgets.HTML()
        self.result = widgets.Output()
        self.result_html = ""
        self.sampling.observe(lambda _change: self._sampling_changed(), names="value")
        self.preset.observe(lambda _change: self.load(), names="value")
        self.reload.on_click(lambda _button: self.load())
        self.save.on_click(self.on_save)
        self.ask.on_click(self.on_ask)
        self.widget = widgets.VBox([
            widgets.HBox([self.preset, self.reload]),
            widgets.HBox([self.sampling, self.temperature, self.top_p]),
            self.max_new_tokens, self.instruction,
            widgets.HTML("<b>The examples' answers</b> (the model imitates them)"),
            self.answers_box, self.language,
            widgets.HBox([self.save, self.photo, self.ask]),
            self.message, self.result,
        ], layout=wide)
        self.load()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _sampling_changed(self) -> None:
        self.temperature.disabled = self.top_p.disabled = not self.sampling.value

    def say(self, text: str, error: bool = False) -> None:
        color = "#b00" if error else "#060"
        lines = "<br>".join(html.escape(redact(line)) for line in text.splitlines())
        self.message.value = f'<div style="color:{color}">{lines}</div>'

    def load(self) -> dict[str, Any]:
        """Fill the widgets from the stored preset (its version is what Save is based on)."""
        import ipywidgets as widgets

        item = presets.require_preset(self.aws, self.cfg, self.preset.value)
        self.loaded = item
        ranges = slider_ranges(self.cfg, item)
        generation = item.get("generation") or {}
        for slider, name, fallback in ((self.temperature, "temperature", 0.7),
                                       (self.top_p, "top_p", 0.9),
                                       (self.max_new_tokens, "max_new_tokens", 256)):
            r = ranges[name]
            if r.low > slider.max:  # min may never pass max, nor max min
                slider.max, slider.min = r.high, r.low
            else:
                slider.min, slider.max = r.low, r.high
            slider.step = r.step
            value = item.get(name) if name == "max_new_tokens" else generation.get(name)
            slider.value = r.clamp(value if isinstance(value, int | float) else fallback)
        self.sampling.value = bool(generation.get("do_sample", "temperature" in generation))
        self._sampling_changed()
        self.instruction.value = str(item.get("instruction", ""))
        self.answers = [widgets.Textarea(value=str(e.get("answer", "")),
                                         description=Path(str(e.get("photo", ""))).name,
                                         style={"description_width": "9em"},
                                         layout=widgets.Layout(width="100%", height="5em"))
                        for e in item.get("examples") or []]
        self.answers_box.children = tuple(self.answers)
        offered = [v for v in item.get("languages") or [] if isinstance(v, str)]
        self.language.options = offered or list(presets_schema.LANGUAGES)
        language = item.get("language")
        if language in self.language.options:
            self.language.value = language
        self.say(f"Loaded preset {item[presets_schema.KEY]}, version {item.get('version')}.")
        return item

    def changes(self) -> dict[str, Any]:
        """The widgets' values as changes to the loaded preset."""
        changes: dict[str, Any] = {
            "do_sample": bool(self.sampling.value),
            "max_new_tokens": int(self.max_new_tokens.value),
            "instruction": self.instruction.value,
            "answers": [box.value for box in self.answers],
            "language": self.language.value,
        }
        if self.sampling.value:
            changes["temperature"] = round(float(self.temperature.value), 4)
            changes["top_p"] = round(float(self.top_p.value), 4)
        else:  # greedy: the sampling parameters would be refused or ignored
            changes["temperature"] = changes["top_p"] = None
        return changes

    def on_save(self, _button: Any = None) -> dict[str, Any] | None:
        """Validate, then write a new version; the messages name each refused field."""
        name = self.loaded[presets_schema.KEY]
        version = self.loaded.get("version")
        try:
            stored = edit_preset(self.cfg, self.aws, name, expected_version=version,
                                 **self.changes())
        except presets.PresetConflictError as exc:
            self.say(f"{exc}\nNothing was saved: press Reload, then make your change again.",
                     error=True)
            return None
        except VisualTourismError as exc:
            self.say(str(exc), error=True)
            return None
        self.loaded = stored
        self.say(f"Saved preset {name}: version {stored.get('version')}.")
        return stored

    def on_ask(self, _button: Any = None) -> Comparison | None:
        """Ask about the photo with the saved preset; the answer beside the previous one."""
        name = self.loaded[presets_schema.KEY]
        self.ask.disabled = True
        started = time.monotonic()
        note = ""
        if apply_changes(self.loaded, **self.changes()) != editable(self.loaded):
            note = "Unsaved changes are not used: press Save first to ask with them. "
        self.say(note + f"Asking with preset {name} (version {self.loaded.get('version')}), "
                 f"{self.language.value}...")
        try:
            comparison = compare_answers(
                self.cfg, self.aws, self.photo.value, name, self.language.value,
                previous=self.previous, timeout=self.timeout,
                progress=lambda m: self.say(note + m))
        except Exception as exc:  # a callback's exception would only reach the kernel's log
            log.warning("Preset editor: %s", exc, exc_info=not isinstance(exc,
                                                                         VisualTourismError))
            self.say(f"{note}Failed: {exc}", error=True)
            return None
        finally:
            self.ask.disabled = False
        self.comparison = comparison
        self.previous = comparison.record
        self.result_html = comparison.html()
        self.result.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"text/html": self.result_html,
                                         "text/plain": repr(comparison)}},)
        self.say(f"{note}Answered in {time.monotonic() - started:.1f} s "
                 f"({(comparison.record or {}).get('status')}).")
        return comparison


def preset_editor(cfg: Config, aws: Aws, photo: str | Path | None = None,
                  preset: str = presets_schema.DEFAULT_NAME,
                  timeout: float | None = None) -> PresetEditor:
    return PresetEditor(cfg, aws, photo=photo, preset=preset, timeout=timeout)

