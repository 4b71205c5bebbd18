"""One module per stage; `STAGES` maps config names (what users pass to load_dataset) to classes."""

from __future__ import annotations

from .base import ShardResult, Stage, StageContext
from .dedup import DedupStage
from .difficulty import DifficultyStage
from .language import LanguageStage
from .questions import QuestionsStage
from .responses import ResponsesStage
from .reward import RewardStage
from .select import SelectStage
from .solvability import SolvabilityStage

STAGES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (QuestionsStage, LanguageStage, DedupStage, SolvabilityStage, DifficultyStage, ResponsesStage,
                RewardStage, SelectStage)
}

__all__ = ["STAGES", "ShardResult", "Stage", "StageContext"]
