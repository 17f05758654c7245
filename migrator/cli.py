"""The command line: thin click commands over the library, one clean line per error.

Exit codes (DESIGN section 1): 0 success; 1 operation failed; 2 usage or invalid
playbook; 3 `plan` found a blocking problem.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from migrator import __version__
from migrator.errors import MigratorError
from migrator.output import Output


class MigratorGroup(click.Group):
    """Turns every error into one line and the right exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MigratorError as exc:
            out: Output = ctx.obj or Output()
            out.error(exc.message, exc.hint)
            if _debug(ctx):
                out.traceback()
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            Output().error("interrupted")
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the user gets one line, --debug the rest
            out = ctx.obj or Output()
            out.error(f"internal error: {type(exc).__name__}: {exc}",
                      "run again with --debug for the traceback, and report it")
            if _debug(ctx):
                out.traceback()
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug"))


def json_option(func):
    """--json: print one JSON document instead of the human report."""

    @click.option("--json", "json_mode", is_flag=True, help="Print one JSON document instead of text.")
    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, *args, json_mode: bool, **kwargs):
        ctx.obj = Output(json_mode=json_mode)
        ctx.find_root().obj = ctx.obj
        return ctx.invoke(func, ctx.obj, *args, **kwargs)

    return wrapper


@click.group(cls=MigratorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="migrator")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def cli(debug: bool) -> None:
    """Move a group of PostgreSQL tables to another server while the application runs.

    \b
    Example:
      migrator sandbox up --dir ./sandbox
      migrator plan ./sandbox/playbook.yaml
    """


# --------------------------------------------------------------------------- sandbox


@cli.group()
def sandbox() -> None:
    """A local topology: two Postgres clusters, PgBouncer and demo data.

    \b
    Example:
      migrator sandbox up --dir ./sandbox --scale 10
    """


_dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
    default=Path("sandbox"), show_default=True, help="Directory that holds the sandbox.",
)


@sandbox.command("up")
@_dir_option
@click.option("--scale", type=click.IntRange(min=0), default=10, show_default=True,
              help="Demo data size, in thousands of files (each with 3 versions and a comment).")
@json_option
def sandbox_up_cmd(out: Output, directory: Path, scale: int) -> None:
    """Start the sandbox and write DIR/playbook.yaml; harmless when it is already up.

    \b
    Example:
      migrator sandbox up --dir ./sandbox --scale 100
    """
    from migrator.sandbox import sandbox_up

    with out.status("starting the sandbox (two clusters, PgBouncer, demo data)"):
        info = sandbox_up(directory, scale=scale)
    out.sandbox_info(info, verb="up")


@sandbox.command("down")
@_dir_option
@json_option
def sandbox_down_cmd(out: Output, directory: Path) -> None:
    """Stop every sandbox process and remove DIR.

    \b
    Example:
      migrator sandbox down --dir ./sandbox
    """
    from migrator.sandbox import sandbox_down

    left = sandbox_down(directory)
    out.sandbox_down(directory.absolute(), left)


@sandbox.command("status")
@_dir_option
@json_option
def sandbox_status_cmd(out: Output, directory: Path) -> None:
    """Show the sandbox's servers, ports and processes.

    \b
    Example:
      migrator sandbox status --dir ./sandbox --json
    """
    from migrator.sandbox import sandbox_status

    out.sandbox_info(sandbox_status(directory), verb="status")


def main() -> None:
    cli(prog_name="migrator")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
