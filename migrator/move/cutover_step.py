"""The cutover step: run the cutover in either direction, after `reconcile`
(migrator.move.recovery) has finished or reverted one a crash interrupted; its undo,
the reverse cutover, rendered for `rollback --dry-run` from the same sequence."""

from __future__ import annotations

from migrator.move.context import MoveContext, UndoPlan
from migrator.move.cutover import (
    Cutover,
    CutoverAborted,
    CutoverPhase,
    Direction,
    cutover_facts,
    cutover_sequence,
    record_action,
)
from migrator.move.recovery import reconcile
from migrator.playbook import format_duration
from migrator.postgres.connection import Side

__all__ = ["cutover_do", "cutover_undo", "cutover_undo_statements", "reconcile"]


def _run_cutover(ctx: MoveContext, direction: Direction) -> str:
    def checkpoint(**data) -> None:
        event = f"{direction.name} cutover: {data['phase']}" if "phase" in data else None
        if data.get("phase") == CutoverPhase.POINT_OF_NO_RETURN:
            # Only from PAUSING: the watchdog records going back with the same
            # compare-and-set, so exactly one of them decides.
            if not ctx.store.update_data_if(ctx.move, "cutover", phase_in=(CutoverPhase.PAUSING,),
                                            event=event, **data):
                raise CutoverAborted("the watchdog gave traffic back to the "
                                     f"{direction.old_label} before the point of no return")
        else:
            ctx.store.update_data(ctx.move, "cutover", event=event, direction=direction.name, **data)

    def log(message: str) -> None:
        ctx.log("cutover", message)
        ctx.reporter.note(message)

    cutover = Cutover(
        ctx.playbook, direction, cutover_facts(ctx),
        checkpoint=checkpoint, log=log, record=record_action(ctx, direction), state_url=ctx.store.url)
    try:
        window = cutover.run()
    finally:
        history = ctx.data("cutover").history
        ctx.save("cutover", history=[*history, cutover.window.to_dict()][-20:])
    # Done, after RESUME too: nothing for the next run to finish or revert.
    ctx.save("cutover", serving=direction.new_label, phase=None, undo=[])
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in window.parts.items())
    return f"pause window {window.total * 1000:.0f} ms ({parts})"


def cutover_do(ctx: MoveContext) -> str:
    if reconcile(ctx) == Side.TARGET:
        return "traffic already on the target"
    return _run_cutover(ctx, Direction.forward(ctx.playbook))


def cutover_undo(ctx: MoveContext) -> str:
    if reconcile(ctx) == Side.SOURCE:
        return "traffic already on the source"
    return _run_cutover(ctx, Direction.reverse(ctx.playbook))


def cutover_undo_statements(ctx: MoveContext) -> UndoPlan:
    """The reverse cutover: the same sequence with the sides swapped."""
    seq = cutover_sequence(ctx.playbook, Direction.reverse(ctx.playbook), cutover_facts(ctx))
    return UndoPlan(seq.render(), [f"one pause of at most max_pause "
                                   f"({format_duration(ctx.playbook.cutover.max_pause)}), "
                                   "the same protocol as the forward cutover"])
