"""Fixtures shared by the whole suite: fake credentials, moto in-process and as a server."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.loaders
import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
EVENTS = Path(__file__).resolve().parent / "events"
REGION = "us-east-1"
# Headless Chromium for the browser tests (tests/browser.py): the `chromium` fixture.
pytest_plugins = ["browser"]

# -- botocore's data files, parsed once per test process ---------------------------------------
# Each new boto3 session parses again every JSON model it needs (SageMaker's alone is
# megabytes). The suite makes hundreds of sessions, and that parsing was a quarter of its CPU
# time. Within a session botocore already shares what it loaded among its clients (and treats
# it as read-only); this shares it among the sessions of one process, as one long-lived
# session would. The files do not change during a run.
def _parsed_once(load_file: Any) -> Any:
    parsed: dict[str, Any] = {}

    def load(self: Any, file_path: str) -> Any:
        if file_path not in parsed:
            data = load_file(self, file_path)
            if data is None:  # not there (botocore tries several folders): ask again next time
                return None
            parsed[file_path] = data
        return parsed[file_path]

    return load


botocore.loaders.JSONFileLoader.load_file = _parsed_once(
    botocore.loaders.JSONFileLoader.load_file)


# -- nothing left behind in the temp folder ---------------------------------------------------
# The run gets a temp folder of its own (TMPDIR, inherited by every process it starts: handler
# workers, notebook kernels); at the end whatever is still in it is a leak, reported by name
# and failing the run, and the folder goes. pytest's own tmp_path folders stay where pytest
# keeps and prunes them. A private folder also keeps concurrent runs from seeing each other.
# Under pytest-xdist each worker gets its own folder beside the controller's (not inside it:
# Chromium refuses a profile path as deep as that) and hands its leaks, with the reliability
# and security tallies below, to the controller when it finishes (xdist's workeroutput), so a
# leak on any worker fails the run and the summaries cover every worker.
_TEMP = pytest.StashKey[str]()
_CACHES = "caches-of-libraries"


def _worker(config: pytest.Config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else None


def pytest_configure(config: pytest.Config) -> None:
    root = os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    worker = _worker(config)
    folder = tempfile.mkdtemp(prefix=f"vt-tests-{worker}-" if worker else "vt-tests-", dir=root)
    os.environ["TMPDIR"] = folder
    tempfile.tempdir = None  # recomputed from TMPDIR on next use
    # torch keeps its compile cache in the temp folder (torchinductor_<user>) on purpose; the
    # run gives it a folder of its own, removed with the run, so it is not counted as a leak.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(folder, _CACHES, "torch")
    config.stash[_TEMP] = folder


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    folder = session.config.stash.get(_TEMP, None)
    if not folder:
        return
    shutil.rmtree(os.path.join(folder, _CACHES), ignore_errors=True)
    left = sorted(os.listdir(folder))
    shutil.rmtree(folder, ignore_errors=True)
    if _worker(session.config) is not None:  # the controller reports for every worker
        session.config.workeroutput["visual_tourism"] = {  # type: ignore[attr-defined]
            "leaks": left, "reliability": session.config.stash.get(RELIABILITY, None),
            "security": session.config.stash.get(SECURITY, None)}
        return
    left += session.config.stash.get(_LEAKS, [])
    if left:
        session.config.stash[_LEAKS] = left
        if exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the controller: one worker's leaks and tallies, added to the run's."""
    got = getattr(node, "workeroutput", {}).get("visual_tourism")
    if not got:
        return
    config = node.config
    config.stash[_LEAKS] = config.stash.get(_LEAKS, []) + got["leaks"]
    if got["reliability"]:
        tally = config.stash.setdefault(RELIABILITY, _new_reliability())
        for key, value in got["reliability"].items():
            tally[key] += value
    if got["security"]:
        tally = config.stash.setdefault(SECURITY, _new_security())
        tally["exercised"] = sorted({*tally["exercised"], *got["security"]["exercised"]})
        tally["denied"].update(got["security"]["denied"])
        for tool, counts in got["security"]["findings"].items():
            tally["findings"].setdefault(tool, {}).update(counts)


_LEAKS = pytest.StashKey[list]()


_AWS_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)

# -- loopback only ------------------------------------------------------------------------------
# Every stand-in (moto, the model server, the web front) listens on loopback. A client the
# tests forgot to point at one would otherwise try the real AWS endpoint: in this process such
# a connection fails at once, naming what it tried. (Subprocesses that install packages, such
# as tests/test_old_sdk.py's pip, are separate processes and unaffected.)
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback(address: object) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths and the like
        return True
    host = str(address[0])
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")


def _guarded(real):  # noqa: ANN001, ANN202 - wraps socket.connect / connect_ex
    def connect(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            raise ConnectionRefusedError(
                f"tests may reach loopback only; something tried {address!r}: point that "
                "client at a local stand-in (AWS_ENDPOINT_URL..., the model server)")
        return real(self, address)
    return connect


socket.socket.connect = _guarded(_real_connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded(_real_connect_ex)  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test runs with fake credentials and no real AWS configuration."""
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("VT_")]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def env(local: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The environment `visual-tourism local serve` prints, for the requesting module's
    `local` stack (a module-scoped LocalStack each local-mode test module defines)."""
    for key, value in local.env.items():
        monkeypatch.setenv(key, value)
    return local


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's threaded server on loopback; yields its URL. Shared: use unique bucket names."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def mocked_aws() -> Iterator[None]:
    """moto in-process, with local mode's bucket-policy evaluation (see moto_patches)."""
    from moto import mock_aws

    from visual_tourism.local import moto_patches

    with mock_aws():
        moto_patches.patch_bucket_policies()
        moto_patches.patch_event_invoke_config()
        try:
            yield
        finally:
            moto_patches.restore()


# -- the reliability suite's report (tests/test_reliability.py) ---------------------------------

RELIABILITY = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def reliability_tally(request: pytest.FixtureRequest) -> dict:
    """What the reliability tests tried and lost; shown at the end of the terminal report."""
    return request.config.stash.setdefault(RELIABILITY, _new_reliability())


def _new_reliability() -> dict:
    return {"photos": 0, "faults": 0, "bad_inputs": 0, "lost": 0, "lines": []}


# -- the security figures (tests/test_local_iam.py, tests/test_policy_lint.py) -------------------

SECURITY = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def security_tally(request: pytest.FixtureRequest) -> dict:
    """IAM actions exercised locally and denied when removed; linter/scanner findings."""
    return request.config.stash.setdefault(SECURITY, _new_security())


def _new_security() -> dict:
    return {"exercised": [], "denied": {}, "findings": {}}


def _security_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tally = terminalreporter.config.stash.get(SECURITY, None)
    if not tally or not (tally["exercised"] or tally["denied"] or tally["findings"]):
        return
    terminalreporter.section("security")
    if tally["exercised"]:
        terminalreporter.write_line(
            f"IAM actions of the Lambda role exercised in local mode: "
            f"{', '.join(tally['exercised'])}")
    for action, outcome in sorted(tally["denied"].items()):
        terminalreporter.write_line(f"removed {action}: denied locally, photo -> {outcome}")
    for tool, counts in sorted(tally["findings"].items()):
        terminalreporter.write_line(
            f"{tool}: " + ", ".join(f"{n} {level}" for level, n in counts.items()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    leaks = terminalreporter.config.stash.get(_LEAKS, None)
    if leaks:
        terminalreporter.section("left in the temp folder", red=True)
        terminalreporter.write_line("the run failed: these were not cleaned up (now removed): "
                                    + ", ".join(leaks))
    _security_summary(terminalreporter)
    tally = terminalreporter.config.stash.get(RELIABILITY, None)
    if not tally or not tally["lines"]:
        return
    terminalreporter.section("reliability")
    for line in tally["lines"]:
        terminalreporter.write_line(line)
    terminalreporter.write_line(
        f"reliability: {tally['photos']} photos, {tally['faults']} faults injected, "
        f"{tally['bad_inputs']} bad inputs: {tally['lost']} lost"
    )
