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
- ``demo``: notebook 06's side-by-side view, error explanations and the ipywidgets panel
- ``presets``: notebook 06's answer preset editor (plain functions, and the widget)
- ``cleanup``: notebook 07's check that nothing billable is left

A new helper goes into the module it belongs to (or a new one) and its name is added here.
"""

from .cells import one_line_errors, recorded_calls, show_calls_under_cells
from .cleanup import LeftoverError, confirm_clean, leftovers
from .demo import (
    DemoPanel,
    demo_panel,
    demo_photos,
    explain_error,
    sample_not_a_photo,
    show_record,
    show_side_by_side,
    side_by_side_html,
    thumbnail_data_uri,
)
from .display import Table, redact, say, show
from .environment import NotReachableError, describe_environment, is_local, local_endpoints
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
    plan,
    preflight,
    show_bucket,
    show_lambda_policy,
    show_model,
    show_profiles,
)

__all__ = [
    "Comparison", "DemoPanel", "PresetEditor", "check_edit", "compare_answers", "copy_preset",
    "edit_preset", "preflight", "preset_editor", "slider_ranges", "LeftoverError",
    "NotReachableError", "Table", "autoscaling_plan",
    "bucket_name", "one_line_errors", "recorded_calls", "show_calls_under_cells",
    "check_placeholders", "confirm_clean", "cost_warning", "demo_panel", "demo_photos",
    "describe_environment", "explain_error", "is_local", "leftovers", "load_settings",
    "local_endpoints",
    "plan", "redact", "sample_not_a_photo", "save_settings", "say", "settings_path", "show",
    "show_bucket", "show_lambda_policy", "show_model", "show_profiles", "show_record",
    "show_side_by_side", "side_by_side_html", "thumbnail_data_uri",
]
