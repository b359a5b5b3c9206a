"""`visual-tourism local serve` as a person runs it, in its own process: a busy port is a
one-line error naming the option to change, and SIGTERM or Ctrl-C stop it promptly."""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

STARTED = "Ctrl-C stops."


# A parent that ignores and blocks SIGINT before exec (both are inherited across it).
_DEAF_PARENT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def _serve(tmp_path, *options: str, deaf_parent: bool = False,
           ) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    parent = [sys.executable, "-c", _DEAF_PARENT] if deaf_parent else [sys.executable]
    process = subprocess.Popen(
        [*parent, "-m", "visual_tourism.cli", "local", "serve", "--model", "stand-in",
         "--dir", str(tmp_path / "serve"), *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # SIGABRT then prints every thread's stack: what a test that finds it hung shows.
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def _read_until(lines: queue.Queue[str | None], text: str | None, timeout: float) -> list[str]:
    """Lines up to one containing ``text`` (None: up to the end of output)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no {text!r} within {timeout} s; output so far:\n" + "\n".join(seen))
        if line is None:
            if text is None:
                return seen
            pytest.fail(f"ended without {text!r}:\n" + "\n".join(seen))
        seen.append(line)
        if text is not None and text in line:
            return seen


@contextmanager
def _busy_port() -> Iterator[int]:
    """A port something else listens on, as a second `local serve` or any server would."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


@pytest.mark.parametrize("option", ["--port", "--model-port"])
def test_a_busy_port_is_a_one_line_error_naming_the_option(tmp_path, option):
    other = "--model-port" if option == "--port" else "--port"
    with _busy_port() as port:
        process, lines = _serve(tmp_path, option, str(port), other, "0")
        try:
            code = process.wait(timeout=60)  # never a hang
            output = _read_until(lines, None, timeout=10)
        finally:
            _stop(process)
    assert code != 0
    assert len(output) == 1, output  # one line, no traceback
    assert output[0].startswith("error: ") and f"port {port}" in output[0]
    assert option in output[0]
    assert f"{other} " not in output[0]


# tgkill(2)'s number, to hand a signal to one chosen thread of another process.
_TGKILL = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)


def _signal_a_thread_other_than_main(pid: int, how: int) -> None:
    """What the kernel may do with a signal sent to a process: deliver it to any of its
    threads. Python runs handlers in the main thread only, so the main thread must wake up
    to notice (under load this happened: `local serve` ignored SIGTERM for a minute)."""
    threads = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
    assert threads, "local serve runs its servers in threads"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_TGKILL, pid, threads[0], how) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


@pytest.mark.parametrize("how, to_a_thread, deaf_parent", [
    (signal.SIGTERM, False, False), (signal.SIGINT, False, False), (signal.SIGTERM, True, False),
    (signal.SIGINT, False, True),
], ids=["SIGTERM", "Ctrl-C", "SIGTERM-to-another-thread", "Ctrl-C-after-a-parent-ignored-it"])
def test_a_signal_stops_it_promptly_with_a_stopped_line(tmp_path, how, to_a_thread,
                                                        deaf_parent):
    if to_a_thread and (_TGKILL is None or not Path("/proc/self/task").is_dir()):
        pytest.skip("needs Linux's tgkill on x86_64 or aarch64")
    process, lines = _serve(tmp_path, "--port", "0", "--model-port", "0",
                            deaf_parent=deaf_parent)
    try:
        started = _read_until(lines, STARTED, timeout=60)
        url = next(line for line in started if line.startswith("export AWS_ENDPOINT_URL="))
        port = int(url.rsplit(":", 1)[1])
        if to_a_thread:
            _signal_a_thread_other_than_main(process.pid, how)
        else:
            process.send_signal(how)
        # Generous: a busy machine may be slow to stop; one that ignored the signal never is.
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # its threads' stacks, for the failure
            process.wait(timeout=30)
            pytest.fail("not stopped 60 s after the signal; its threads then:\n"
                        + "\n".join(_read_until(lines, None, timeout=15)[-120:]))
        rest = _read_until(lines, None, timeout=15)
    finally:
        _stop(process)
    assert code == 0
    assert rest[-1:] == ["local serve: stopped"], rest
    with socket.socket() as probe:  # the port is free again: the server really stopped
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_the_printed_commands_work_as_typed(tmp_path):
    """Without an active venv the hint names the script's path, which exists as printed."""
    process, lines = _serve(tmp_path, "--port", "0", "--model-port", "0")
    try:
        started = _read_until(lines, STARTED, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _stop(process)
    then = next(line for line in started if line.startswith("Then: "))
    # Without --web there is no page, and it says how to get one.
    assert any(line.startswith("Web page: not served (add --web") for line in started), started
    first = then.removeprefix("Then: ").split(";")[0].strip()
    program = first.removesuffix(" up")
    assert program == "visual-tourism" or program.endswith("/visual-tourism")
    if program != "visual-tourism":  # a path: it must run as typed, from this folder
        run = subprocess.run([program, "--help"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "usage: visual-tourism" in run.stdout
