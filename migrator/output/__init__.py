"""Everything a person reads goes through here: rich for people, JSON for scripts.

No other module prints. Commands hand this package plain data (dataclasses, dicts)
and it decides how to show it; each module holds the screens of one verb.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrator.output.analyze import AnalyzeScreens
from migrator.output.base import BaseOutput
from migrator.output.demo import DemoScreens
from migrator.output.move import MoveScreens, StepReporter
from migrator.output.plan import PlanScreens
from migrator.output.report import ReportScreens
from migrator.output.sandbox import SandboxScreens
from migrator.output.verify import VerifyScreens
from migrator.output.watch import WatchScreens

__all__ = ["Output", "StepReporter"]


@dataclass
class Output(SandboxScreens, PlanScreens, MoveScreens, ReportScreens, WatchScreens, VerifyScreens,
             AnalyzeScreens, DemoScreens, BaseOutput):
    """The one printer: every verb's screens over one pair of consoles (or JSON)."""
