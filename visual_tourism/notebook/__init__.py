"""Everything the notebooks call beyond `stack`, under the one name their cells use.

The notebooks under ``notebooks/`` stay thin: each code cell is one call into
``visual_tourism.notebook`` or ``visual_tourism.stack``, so nothing works only inside a
notebook and all of it is tested. The code lives in modules named for what they do; this
package only gathers their public names so that a cell reads ``notebook.save_settings(...)``:

- ``display``: ``say``/``show``/``redact``, tables (account IDs masked in every output)
- ``cells``: around every cell: its AWS calls shown under it, expected errors in one line
- ``environment``: where the notebook runs (local mode, Studio, this machine's credentials)
- ``settings``: notebook 01's settings, checked, saved and read back by every notebook
- ``steps``: what each step creates, shown before (plans, costs) and after
- ``cost``: inference mode, cost before billing and so far, the stop deadline (03 and 07)
- ``photos``: the bundled demo photos, and a small inline copy of one
- ``demo``: notebook 06's side-by-side view, error explanations and the ipywidgets panel
- ``presets``: notebook 06's answer preset editor (plain functions, and the widget)
- ``web``: notebook 06's link and QR code of the web page
- ``cleanup``: notebook 07's check that nothing billable is left

A new helper goes into the module it belongs to (or a new one) and its name is added here.
"""

from .cells import one_line_errors, recorded_calls, show_calls_under_cells
from .cleanup import LeftoverError, confirm_clean, leftovers
from .cost import (
    arm_deadline,
    cost_before,
    mode_tradeoff,
    show_cost_so_far,
    show_deadline,
    use_inference_mode,
)
from .demo import (
    DemoPanel,
    demo_panel,
    explain_error,
    sample_not_a_photo,
    show_record,
    show_side_by_side,
    side_by_side_html,
)
from .display import Table, redact, say, show
from .environment import NotReachableError, describe_environment
from .photos import demo_photos, thumbnail_data_uri
from .presets import (
    Comparison,
    PresetEditor,
    check_edit,
    compare_answers,
    copy_preset,
    edit_preset,
    preset_editor,
    slider_ranges,
)
from .settings import check_placeholders, load_settings, save_settings, settings_path
from .steps import (
    autoscaling_plan,
    bucket_name,
    cost_warning,
    hosted_vs_managed,
    limits,
    plan,
    preflight,
    show_bucket,
    show_lambda_policy,
    show_model,
    show_profiles,
)
from .web import qr_data_uri, show_web_link, web_link, web_link_html

__all__ = [
    "arm_deadline", "cost_before", "mode_tradeoff", "show_cost_so_far", "show_deadline",
    "use_inference_mode", "qr_data_uri", "show_web_link", "web_link", "web_link_html",
    "Comparison", "DemoPanel", "PresetEditor", "check_edit", "compare_answers", "copy_preset",
    "edit_preset", "limits", "preflight", "preset_editor", "slider_ranges", "LeftoverError",
    "NotReachableError", "Table", "autoscaling_plan",
    "bucket_name", "one_line_errors", "recorded_calls", "show_calls_under_cells",
    "check_placeholders", "confirm_clean", "cost_warning", "demo_panel", "demo_photos",
    "hosted_vs_managed",
    "describe_environment", "explain_error", "leftovers", "load_settings",
    "plan", "redact", "sample_not_a_photo", "save_settings", "say", "settings_path", "show",
    "show_bucket", "show_lambda_policy", "show_model", "show_profiles", "show_record",
    "show_side_by_side", "side_by_side_html", "thumbnail_data_uri",
]
