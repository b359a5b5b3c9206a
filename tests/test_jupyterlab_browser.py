"""The notebooks in a real JupyterLab, driven in headless Chromium against local mode: the
quickstart runs to its end (Run > Run All Cells), then the demo notebook (its preset editor
included), whose panel is used as a student would: choose a photo, press the button, see the
photo and its answer; its preset and language pickers are shown.

JupyterLab runs as a separate server on a free loopback port, with a token, its own config,
data, runtime and settings folders, a copy of the notebooks as its root, and the variables
`visual-tourism local serve` prints; the test process runs the local stack. Everything it
starts is stopped at the end (the server through its API, which shuts its kernels down).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from browser import DESKTOP, HOW_TO_ENABLE, PHONE, chromium_paths, resize_viewport

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
pytestmark = pytest.mark.timeout(300)
RUN_TIMEOUT = 120.0  # seconds for Run All of one notebook in local mode


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_kernel(share: Path) -> None:
    """``python3`` is this interpreter, whatever other python3 kernel the machine has."""
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(share / "kernels" / "python3", overrides={"display_name": "Python 3"})


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if chromium_paths() is None:
        pytest.skip(HOW_TO_ENABLE)
    from visual_tourism import stack
    from visual_tourism.aws import Aws
    from visual_tourism.config import load_config
    from visual_tourism.local.stack import LocalStack, environment

    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "notebooks"
    root.mkdir()
    for path in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(path, root / path.name)
    _write_kernel(base / "share")
    config = base / "config"
    (config / "labconfig").mkdir(parents=True)
    # No news, no update check: nothing to reach outside, no pop-up over the cells.
    (config / "labconfig" / "page_config.json").write_text(json.dumps({"disabledExtensions": {
        "@jupyterlab/apputils-extension:announcements": True}}))
    prefix = "lab-" + os.urandom(3).hex()
    token = secrets.token_hex(16)
    port = _free_port()
    log = (base / "jupyterlab.log").open("w")
    with LocalStack(model="stand-in", work_dir=base / "local") as local, \
            environment(local.env):
        env = {**os.environ, **local.env, "VT_STATE_DIR": str(base / "state"),
               "VT_PREFIX": prefix, "JUPYTER_PATH": str(base / "share"),
               "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(base / "data"),
               "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "IPYTHONDIR": str(base / "ipython")}
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
             f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
             f"--LabApp.user_settings_dir={base / 'settings'}",
             f"--LabApp.workspaces_dir={base / 'workspaces'}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        cfg = load_config(region="us-east-1", state_dir=str(base / "state"), prefix=prefix)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(f"{url}/api/status", params={"token": token},
                                    timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start:\n"
                                         + (base / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.3)
            yield {"url": url, "token": token, "cfg": cfg, "local": local, "base": base}
        finally:
            try:
                requests.post(f"{url}/api/shutdown", params={"token": token}, timeout=10)
                server.wait(30)
            except (requests.RequestException, subprocess.TimeoutExpired):
                if server.poll() is None:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait(10)
            log.close()
            local.runtime.wait_idle(30)
            stack.down(cfg, Aws(cfg.region), delete_bucket=True)  # leave nothing for others


@pytest.fixture
def browser(chromium: Any) -> Iterator[Any]:
    resize_viewport(chromium, *DESKTOP)
    yield chromium
    chromium.get("about:blank")
    resize_viewport(chromium, *PHONE)  # as the other browser tests expect it


def _wait(driver: Any, condition: Any, timeout: float = 60.0, message: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition, message)


_STATE = """
const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!nb || !nb.content || !nb.content.model || !nb.sessionContext) return null;
const cells = Array.from(nb.content.model.cells).filter(c => c.type === 'code');
const outputs = cells.map(c => c.outputs.toJSON());
return {
  kernel: nb.sessionContext.session && nb.sessionContext.session.kernel
          ? nb.sessionContext.session.kernel.status : null,
  counts: cells.map(c => c.executionCount),
  errors: outputs.flat().filter(o => o.output_type === 'error')
                 .map(o => o.ename + ': ' + o.evalue),
  text: JSON.stringify(outputs),
};
"""


def _open(driver: Any, lab: dict[str, Any], name: str) -> None:
    # ?reset: a workspace with this notebook alone, not the tabs of the notebook before
    driver.get(f"{lab['url']}/lab/tree/{name}.ipynb?reset&token={lab['token']}")
    _wait(driver, lambda d: (d.execute_script(_STATE) or {}).get("kernel") == "idle",
          message=f"{name}: the kernel did not start")


def _run_all(driver: Any, name: str) -> dict[str, Any]:
    """Run All Cells (the Run menu's command) in this notebook, then wait until every code
    cell has run."""
    driver.execute_script("""
        const app = window.jupyterapp, nb = app.shell.currentWidget;
        app.shell.activateById(nb.id);
        app.commands.execute('notebook:run-all-cells');
    """)
    last: dict[str, Any] = {}

    def finished(d: Any) -> dict[str, Any] | None:
        state = d.execute_script(_STATE)
        last.update(state or {})
        if state and state["errors"]:
            raise AssertionError(f"{name}: {state['errors']}")
        if state and all(c is not None for c in state["counts"]) and state["kernel"] == "idle":
            return state
        return None

    from selenium.common.exceptions import TimeoutException

    try:
        return _wait(driver, finished, timeout=RUN_TIMEOUT)
    except TimeoutException:
        raise AssertionError(f"{name}: Run All did not end: kernel {last.get('kernel')}, "
                             f"execution counts {last.get('counts')}, outputs "
                             f"{last.get('text', '')[-1500:]}") from None


def test_quickstart_then_the_demo_panel_in_jupyterlab(lab, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from visual_tourism import stack
    from visual_tourism.aws import Aws
    from visual_tourism.local.stack import environment

    driver = browser
    _open(driver, lab, "00_quickstart")
    state = _run_all(driver, "00_quickstart")
    assert "Offline stand-in" in state["text"] and "Nothing billable is left" in state["text"]
    # The `up` cell's AWS calls, collapsed; the status as a table.
    calls = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output details.vt-calls")
    assert calls and not calls[0].get_attribute("open")
    assert "create_bucket" in calls[0].get_attribute("textContent")
    assert driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output table th")

    with environment(lab["local"].env):  # 06 needs the stack
        stack.up(lab["cfg"], Aws(lab["cfg"].region), endpoint_poll=0.1)
    _open(driver, lab, "06_demo")
    state = _run_all(driver, "06_demo")
    assert "No answer: not_an_image" in state["text"]

    select = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".widget-dropdown select"),
                   message="the demo panel did not render")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", select)
    Select(select).select_by_visible_text("neuschwanstein")
    upload = driver.find_element(By.CSS_SELECTOR, ".widget-upload")
    assert upload.text.startswith("Upload a photo")
    assert driver.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth",
                                 upload), "the upload button's label is cut"
    # The preset and language pickers, filled from the presets table (the default chosen).
    pickers = [s for s in driver.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
               if s.is_displayed()]
    assert len(pickers) >= 3, "no preset and language pickers in the panel"
    preset, language = Select(pickers[1]), Select(pickers[2])
    assert "Family (for children)" in [o.text for o in preset.options]
    assert preset.first_selected_option.text == "Travel agent"
    assert {"English", "Japanese"} <= {o.text for o in language.options}
    note = driver.find_element(By.CSS_SELECTOR, "[id^=vt-panel-note-]")
    assert not note.is_displayed()  # the live panel hides the note for reopened notebooks
    driver.find_element(By.XPATH, "//button[contains(., 'Ask the travel agent')]").click()

    def answered(d: Any) -> Any:
        photos = d.find_elements(By.CSS_SELECTOR, ".widget-output img[alt='neuschwanstein.jpeg']")
        return photos[0] if photos and "Offline stand-in" in d.find_element(
            By.CSS_SELECTOR, ".widget-output").text else None

    photo = _wait(driver, answered, timeout=60, message="no photo and answer in the panel")
    assert photo.is_displayed()
    assert driver.execute_script("return arguments[0].naturalWidth", photo) > 0
    progress = driver.find_element(By.CSS_SELECTOR, ".widget-vbox .widget-html pre").text
    assert "ok: record output/neuschwanstein.jpeg.json" in progress

    # Saved and reopened later (a new kernel): the note says how to bring the panel back.
    driver.execute_script("window.jupyterapp.commands.execute('docmanager:save')")
    saved = lab["base"] / "notebooks" / "06_demo.ipynb"
    _wait(driver, lambda d: "vt-panel-note-" in saved.read_text(), timeout=20,
          message="06_demo was not saved")
    auth = {"token": lab["token"]}
    for session in requests.get(f"{lab['url']}/api/sessions", params=auth, timeout=10).json():
        requests.delete(f"{lab['url']}/api/sessions/{session['id']}", params=auth, timeout=10)
    _open(driver, lab, "06_demo")
    note = _wait(driver, lambda d: [n for n in d.find_elements(
        By.CSS_SELECTOR, "[id^=vt-panel-note-]") if n.is_displayed()], timeout=30,
        message="no note where the panel cannot render")[0]
    assert "Run All Cells" in note.text
