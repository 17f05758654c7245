"""A fleet of PgBouncers rerouted three ways (issue 14): the config file rewritten, an
include file of the tool's own, and commands (as over ssh or kubectl). All rerouted,
none left paused, the other entry never paused; one PgBouncer gone dark inside the
pause aborts the cutover and every other one is resumed within the bound.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import yaml
from faultkit import ToolProcess, pause_bound, routes, wait_for
from movekit import DemoMove, demo_move, wait_sides_identical

from migrator.lab.sandbox import GROUP_ENTRY, WHOLE_ENTRY
from migrator.pgbouncer.console import PgBouncerConsole

KINDS = ("file", "file", "include", "include", "command", "command")


def _move_entry_out(bouncer, include, *, header: bool) -> str:
    """Take the group's line out of pgbouncer.ini into `include`, %included in its place."""
    text = bouncer.config_file.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{GROUP_ENTRY} ="))
    include.write_text(("[databases]\n" if header else "") + line + "\n")
    include.chmod(0o644)
    bouncer.config_file.write_text(text.replace(line, f"%include {include}"))
    with PgBouncerConsole(bouncer.admin_dsn()) as console:
        console.reload()
    return line


def fleet_move(make_move, tmp_path, **cutover) -> DemoMove:
    """Six PgBouncers: two rerouted by rewriting their config, two through an include
    file, two by commands that stand in for ssh (prepare stores the line, activate
    renames it into the file the config %includes, show prints the value)."""
    move = make_move(pgbouncers=6)
    demo = demo_move(move, tmp_path, scale=1, **cutover)
    doc = yaml.safe_load(demo.path.read_text())
    for kind, bouncer, entry in zip(KINDS, move.pgbouncers, doc["pgbouncers"], strict=True):
        if kind == "include":
            include = bouncer.directory / "migrator-app_files.ini"
            _move_entry_out(bouncer, include, header=True)
            entry["include_file"] = str(include)
        elif kind == "command":
            live, staged = bouncer.directory / "app_files.ini", bouncer.directory / "app_files.next"
            _move_entry_out(bouncer, live, header=False)
            del entry["config_file"]
            entry["command"] = {
                "prepare": f"cat > {staged}",
                "activate": f"chmod 644 {staged} && mv {staged} {live}",
                "show": f"sed -n 's/^{GROUP_ENTRY} = //p' {live}",
            }
    demo.path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return demo


class EntryWatch:
    """Polls every PgBouncer's SHOW DATABASES while it runs: was an entry ever paused?"""

    def __init__(self, bouncers, entry: str) -> None:
        self.consoles = [PgBouncerConsole(b.admin_dsn()) for b in bouncers]
        self.entry = entry
        self.paused_seen = 0
        self.looks = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for console in self.consoles:
                if console.databases()[self.entry].paused:
                    self.paused_seen += 1
            self.looks += 1
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for console in self.consoles:
            console.close()


def test_six_pgbouncers_rerouted_three_ways(make_move, app_load, tmp_path):
    demo = fleet_move(make_move, tmp_path)
    move = demo.move
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    mains = {b.name: b.config_file.read_text() for b in move.pgbouncers[2:]}
    other = EntryWatch(move.pgbouncers, WHOLE_ENTRY)
    try:
        with app_load(move, pgbouncer=move.pgbouncers[0], clients=2, rate=60), \
                app_load(move, pgbouncer=move.pgbouncers[3], clients=2, rate=60), \
                app_load(move, pgbouncer=move.pgbouncers[5], clients=2, rate=60):
            result = demo.cli("execute")
            assert result.exit_code == 0, result.output
            time.sleep(0.3)
    finally:
        other.close()
    assert routes(move) == [("target", False)] * 6
    assert other.looks > 10 and other.paused_seen == 0
    # Configuration management's files were not touched; the tool's own ones route on.
    assert {b.name: b.config_file.read_text() for b in move.pgbouncers[2:]} == mains
    for bouncer in move.pgbouncers[2:]:
        included = next(bouncer.directory.glob("*app_files.ini")).read_text()
        assert f"port={move.target.port}" in included, included
    code, status = demo.cli_json("status")
    assert [r["config_points_to"] for r in status["routes"]] == ["target"] * 6, status["routes"]

    # Restarted after the point of no return, an include-file PgBouncer comes back on
    # the new route.
    restarted = move.pgbouncers[2]
    restarted.stop()
    restarted.start()
    assert routes(move)[2] == ("target", False)

    # And back: the reverse cutover through the same three ways.
    result = demo.cli("rollback", "--to", "prepare-reverse")
    assert result.exit_code == 0, result.output
    assert routes(move) == [("source", False)] * 6
    wait_sides_identical(move)


def test_a_pgbouncer_gone_dark_inside_the_pause_aborts_and_the_others_resume(make_move, app_load, tmp_path):
    demo = fleet_move(make_move, tmp_path, max_pause="1s", grace="200ms")
    move = demo.move
    assert demo.cli("execute", "--until", "cutover").exit_code == 0
    dark = move.pgbouncers[3]
    others = [b for b in move.pgbouncers if b is not dark]
    with app_load(move, pgbouncer=move.pgbouncers[0], clients=2, rate=60) as load:
        tool = ToolProcess(demo, "execute", hold="cutover:forward-pausing")
        tool.wait_held()
        os.kill(dark.pid(), signal.SIGSTOP)   # as a host that drops off the network: no answer at all
        try:
            tool.release()
            released = time.monotonic()
            watch = [PgBouncerConsole(b.admin_dsn()) for b in others]

            def paused() -> list[bool]:
                return [c.databases()[GROUP_ENTRY].paused for c in watch]

            wait_for(lambda: any(paused()), timeout=5, interval=0.01, what="the pause to begin")
            wait_for(lambda: not any(paused()), timeout=pause_bound(1.0), interval=0.01,
                     what="every reachable PgBouncer to RESUME")
            resumed_after = time.monotonic() - released
            for console in watch:
                console.close()
        finally:
            time.sleep(0.5)
            os.kill(dark.pid(), signal.SIGCONT)
        assert tool.wait(60) == 1, tool.output
        assert "cutover aborted before the point of no return" in tool.output
        assert f"did not pause within max_pause (1.0s): migrator@127.0.0.1:{dark.port}/pgbouncer" in tool.output
        # The watchdog keeps trying the one that did not answer, until it does.
        wait_for(lambda: routes(move) == [("source", False)] * 6, timeout=15, interval=0.1,
                 what="the dark PgBouncer to be resumed once it answers again")
    assert resumed_after < pause_bound(1.0)
    assert load.result().failures == 0

    result = demo.cli("execute")
    assert result.exit_code == 0, result.output
    assert routes(move) == [("target", False)] * 6
    with psycopg.connect(demo.move.app_dsn(GROUP_ENTRY, move.pgbouncers[4]), prepare_threshold=None) as conn:
        assert conn.execute("SELECT count(*) > 0 FROM public.files").fetchone() == (True,)
