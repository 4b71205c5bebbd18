"""The stage registry: one module per stage, in pipeline order. The config model (`stages.<name>` sections),
the stage order, and what each stage reads (the stage before it among those a config enables) all derive
from REGISTRY; adding a stage is one module plus one line here. Names are the dataset config names users
pass to `load_dataset`."""

from __future__ import annotations

from .base import ShardResult, Stage, StageContext
from .decontamination import DecontaminationStage
from .dedup import DedupStage
from .default import SelectStage
from .difficulty import DifficultyStage
from .language import LanguageStage
from .questions import QuestionsStage
from .responses import ResponsesStage
from .reward import RewardStage
from .solvability import SolvabilityStage

REGISTRY: tuple[type[Stage], ...] = (
    QuestionsStage,
    LanguageStage,
    DedupStage,
    DecontaminationStage,
    SolvabilityStage,
    DifficultyStage,
    ResponsesStage,
    RewardStage,
    SelectStage,
)
STAGES: dict[str, type[Stage]] = {cls.name: cls for cls in REGISTRY}
STAGE_ORDER: tuple[str, ...] = tuple(STAGES)

__all__ = ["REGISTRY", "STAGES", "STAGE_ORDER", "ShardResult", "Stage", "StageContext"]
