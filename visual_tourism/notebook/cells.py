"""What happens around every cell: the AWS calls it made shown under it, and the package's
expected errors as one line.

Both are set up by each notebook's first cell (``one_line_errors`` first, so that even a bad
settings file reads as one line) and work through IPython's own hooks: ``pre_run_cell`` and
``post_run_cell`` bracket a cell, and ``set_custom_exc`` replaces the traceback of the
package's errors. Outside IPython both do nothing.
"""

from __future__ import annotations

from typing import Any

from ..aws import Aws
from ..calls import Recording
from ..errors import NotDeployedError, VisualTourismError
from .display import redact

# What a notebook needs built before it, said when it meets a NotDeployedError.
RUN_FIRST = {
    "02_bucket_and_roles": "run 01_setup first",
    "03_model": "run notebooks 01-02 first",
    "04_autoscaling": "run notebooks 01-03 first",
    "05_lambda_trigger": "run notebooks 01-04 first",
    "06_demo": "run notebooks 01-05 first (or 00_quickstart)",
}
_RED, _RESET = "\x1b[0;31m", "\x1b[0m"


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebooks extra
        return None
    return get_ipython()


def error_line(error: BaseException, notebook: str = "") -> str:
    """The one line a notebook shows for an expected error: its kind, its message with account
    IDs masked, and for "not deployed" which notebooks to run first."""
    message = redact(str(error)).strip()
    hint = RUN_FIRST.get(notebook)
    if isinstance(error, NotDeployedError) and hint:
        message += f" In these notebooks: {hint}."
    return f"{type(error).__name__}: {message}"


def one_line_errors(notebook: str, shell: Any = None) -> None:
    """Show the package's errors (VisualTourismError) as one line, without a traceback into
    the package; any other error keeps its usual traceback."""
    shell = shell or _shell()
    if shell is None:
        return

    def handler(shell: Any, etype: type, value: BaseException, tb: Any,
                tb_offset: Any = None) -> list[str]:
        line = error_line(value, notebook)
        message = line.split(": ", 1)[1]
        value.args = (message,)  # the kernel's error reply repeats it: masked there too
        shell._showtraceback(etype, message, [f"{_RED}{type(value).__name__}{_RESET}: "
                                              f"{message}"])
        return []

    shell.set_custom_exc((VisualTourismError,), handler)


class _CellCalls:
    """Records each cell's AWS calls through ``aws``; shows them under the cell if it changed
    anything (cells that only read show nothing)."""

    def __init__(self, aws: Aws, shell: Any) -> None:
        self.aws, self.shell = aws, shell
        self.current: Recording | None = None
        self.history: list[Recording] = []

    def pre_run_cell(self, info: Any = None) -> None:
        self.current = Recording(self.aws).start()

    def post_run_cell(self, result: Any = None) -> None:
        recording, self.current = self.current, None
        if recording is None:
            return
        recording.stop()
        if not recording.calls:
            return
        self.history.append(recording)
        if recording.changes:
            from IPython.display import display

            display(recording)

    def close(self) -> None:
        self.shell.events.unregister("pre_run_cell", self.pre_run_cell)
        self.shell.events.unregister("post_run_cell", self.post_run_cell)
        if self.current is not None:
            self.current.stop()
            self.current = None


_active: _CellCalls | None = None


def show_calls_under_cells(aws: Aws, shell: Any = None) -> None:
    """From the next cell on, show under each cell the AWS requests it made that changed
    something, as boto3 code (collapsed; read-only checks inside)."""
    global _active
    shell = shell or _shell()
    if shell is None:
        return
    if _active is not None:  # the first cell run again: one recorder, on the new clients
        _active.close()
    _active = _CellCalls(aws, shell)
    shell.events.register("pre_run_cell", _active.pre_run_cell)
    shell.events.register("post_run_cell", _active.post_run_cell)


def recorded_calls() -> list[Recording]:
    """Every cell's recording so far (cells that made AWS calls), oldest first.
    ``recorded_calls()[-1].snippet(reads=True)`` is the last one with its read-only checks."""
    return list(_active.history) if _active is not None else []
