"""The project's own exceptions; each knows the exit code the CLI returns for it.

Driver and OS errors are translated into these at the seams (connection, topology,
PgBouncer console) so a user never sees a traceback, only one line that says what
failed and what to do.
"""

from __future__ import annotations

from migrator.masking import mask_secrets


class MigratorError(Exception):
    """Base of every error the tool reports to the user as one clean line."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = mask_secrets(message)
        self.hint = mask_secrets(hint) if hint else None
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class OperationFailed(MigratorError):
    """The operation could not be carried out (exit 1); the state is recorded."""

    exit_code = 1


class PlaybookError(MigratorError):
    """The playbook or the command line is invalid (exit 2); nothing was changed."""

    exit_code = 2

    def __init__(self, problems: list[str] | str, *, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"invalid playbook {where}{self.problems[0]}"
        else:
            text = f"invalid playbook {where}{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


class PlanBlocked(MigratorError):
    """`plan` or `preflight` found at least one blocking finding (exit 3)."""

    exit_code = 3


class ServerUnreachable(OperationFailed):
    """A server or PgBouncer could not be reached (exit 1)."""


class MissingBinary(OperationFailed):
    """A program the local topology needs is not installed."""
