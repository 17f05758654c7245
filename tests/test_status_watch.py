"""`migrator status --watch` from a second terminal while `execute` runs: a live view in a
pseudo-terminal with the copy per table, and a clean exit on Ctrl-C (SIGINT)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from faultkit import REPO, ToolProcess
from movekit import demo_move

from migrator.errors import OperationFailed
from migrator.lab.sandbox import GROUP_TABLES
from migrator.move.state import StateStore
from migrator.move.status import Outages, live_view
from migrator.output.watch import plain_line
from migrator.playbook import RestartSettings


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def _read_until(fd: int, proc: subprocess.Popen, wanted, timeout: float, raw: bool = False) -> str:
    """What the child wrote to `fd` until `wanted(text)` holds, it exits, or `timeout` passes;
    terminal escapes removed unless `raw`."""
    show = (lambda t: t) if raw else _plain
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
        text = show(seen.decode(errors="replace"))
        if wanted(text) or proc.poll() is not None:
            return text
    return show(seen.decode(errors="replace"))


def test_watch_in_a_terminal_shows_the_copy_and_leaves_cleanly_on_sigint(move, tmp_path):
    demo = demo_move(move, tmp_path, scale=2)
    execute = ToolProcess(demo, "execute", hold="rebuild-indexes:start")   # the copy done, a step running
    execute.wait_held()
    try:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
        env.pop("COLUMNS", None)
        watch = subprocess.Popen(
            [sys.executable, "-m", "migrator", "status", str(demo.path), "--state", demo.state_url, "--watch"],
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True)
        os.close(slave)

        def shown(text: str) -> bool:
            return "Ctrl-C to stop watching" in text and text.count("refreshed") >= 2

        text = _read_until(master, watch, shown, timeout=30)
        assert watch.poll() is None, text
        assert "step: rebuild-indexes running" in text, text
        assert "copy: " in text and "100%" in text, text
        for table in GROUP_TABLES:
            assert table in text, text
        assert "done" in text and "replication: forward, lag" in text, text

        os.kill(watch.pid, signal.SIGINT)
        text += _read_until(master, watch, lambda t: "stopped watching" in t, timeout=10)
        assert watch.wait(10) == 0, text
        assert "stopped watching" in text and "Traceback" not in text, text
        os.close(master)

        # Not a terminal: plain lines, one per refresh.
        plain = subprocess.Popen(
            [sys.executable, "-m", "migrator", "status", str(demo.path), "--state", demo.state_url, "--watch"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
        # Two refreshes, however slow the machine is to start the process, then Ctrl-C.
        early = _read_until(plain.stdout.fileno(), plain,
                            lambda t: t.count("step rebuild-indexes") >= 2, timeout=30, raw=True)
        plain.send_signal(signal.SIGINT)
        rest, err = plain.communicate(timeout=10)
        out = early + rest.decode()
        assert plain.returncode == 0, out + err.decode()
        lines = [line for line in out.splitlines() if "step rebuild-indexes" in line]
        assert len(lines) >= 2 and "copy " in lines[0] and "\x1b[" not in out, out
    finally:
        execute.release()
    assert execute.wait() == 0, execute.output


def test_watch_waits_out_a_server_that_restarts_then_stops_with_the_cause(move, tmp_path):
    demo = demo_move(move, tmp_path, scale=0)
    book = demo.playbook.model_copy(update={"restarts": RestartSettings(wait=1.5)})
    store = StateStore(demo.state_url)
    outages = Outages(book.restarts.wait)
    source = f"the source (migrator@127.0.0.1:{move.source.port}/app)"
    try:
        assert live_view(book, store, outages=outages).waiting == []
        move.source.stop()
        view = live_view(book, store, outages=outages)
        assert len(view.waiting) == 1 and view.waiting[0].startswith(f"{source} does not answer (")
        assert view.waiting[0].endswith("waiting, 0 s of 1.5 s (restarts.wait)")
        assert "waiting: " + view.waiting[0] in plain_line(view)
        move.source.start()                              # back within the bound: nothing to wait for
        assert live_view(book, store, outages=outages).waiting == []

        move.source.stop()
        live_view(book, store, outages=outages)
        time.sleep(1.6)
        with pytest.raises(OperationFailed, match=re.escape(f"{source} has not answered for 1.5 s (restarts.wait)")):
            live_view(book, store, outages=outages)

        # The command: a line per refresh saying what it waits for, then exit 1 with the cause.
        demo.path.write_text(demo.path.read_text() + "restarts:\n  wait: 1s\n")
        result = demo.cli("status", "--watch")
        assert result.exit_code == 1, result.output
        assert f"waiting: {source} does not answer (" in result.output
        assert f"error: {source} has not answered for 1 s (restarts.wait)" in result.output
    finally:
        store.close()
