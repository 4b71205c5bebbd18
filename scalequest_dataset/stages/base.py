"""What a stage is: a pure function from a shard of input rows (plus its config and derived seeds) to
output rows, with Features declared once and shared by the writer, the builder and the card."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import datasets

from ..config import RunConfig, fingerprint
from ..engines import Engine, EngineInfo, ProgressFn
from ..models import ResolvedModel, resolve_model


def with_columns(features: datasets.Features, **columns: Any) -> datasets.Features:
    """A stage's schema as its input's plus its own columns. Stage order is fixed, so every column an earlier
    stage may add is known: columns of stages absent from a run are null."""
    return datasets.Features({**features, **columns})


def with_drop_reason(features: datasets.Features, **columns: Any) -> datasets.Features:
    """The schema of a filter stage's `dropped` split: its train columns, `drop_reason`, and any extras."""
    return with_columns(features, drop_reason=datasets.Value("string"), **columns)


@dataclass
class ShardResult:
    rows: list[dict[str, Any]]
    dropped: list[dict[str, Any]] = field(default_factory=list)  # filter stages: rows removed, with `drop_reason`
    tokens: int = 0

    def drop_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r["drop_reason"] for r in self.dropped).items()))


@dataclass
class StageContext:
    """What a stage may use besides its rows: the run seed and a way to get a loaded engine."""

    config: RunConfig
    get_engine: Callable[..., Engine]  # (model, **overrides) -> a loaded engine
    progress: ProgressFn | None = None
    engines_used: dict[str, EngineInfo] = field(default_factory=dict)

    def engine(self, model: ResolvedModel, **overrides: Any) -> Engine:
        """A loaded engine for `model`. `overrides` (task="score", trust_remote_code, dtype) go to the
        executor's getter only when given, so stages that only generate need nothing more from it."""
        engine = self.get_engine(model, **overrides) if overrides else self.get_engine(model)
        self.engines_used[str(model.spec)] = engine.info()
        return engine

    def report(self, rows: int, tokens: int = 0) -> None:
        if self.progress:
            self.progress(rows, tokens)

    def per_row_progress(self, requests_per_row: int) -> ProgressFn | None:
        """A progress callback for an engine call with k requests per input row: it reports whole input
        rows, so the bar (sized in input rows) never overshoots."""
        if self.progress is None:
            return None
        done = [0, 0]  # requests finished, rows reported

        def update(requests: int, tokens: int) -> None:
            done[0] += requests
            rows = done[0] // requests_per_row - done[1]
            done[1] += rows
            self.progress(rows, tokens)  # type: ignore[misc]

        return update


class Stage:
    """Subclasses set the class attributes and implement `process` (and `source` if they have no input)."""

    name: ClassVar[str]
    version: ClassVar[str]  # bump when the code's output for the same input changes
    input: ClassVar[str | None]
    description: ClassVar[str]
    features: ClassVar[Any]  # datasets.Features of the `train` split
    dropped_features: ClassVar[Any | None] = None  # filter stages also write a `dropped` split
    group_key: ClassVar[str | None] = None  # a shard never splits rows that share this column's value

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A config's splits share one schema on the Hub (datasets infers one Features per config), so a
        # filter stage's `train` split carries the `dropped` split's extra columns too, null for kept rows.
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("dropped_features") is not None:
            cls.features = cls.dropped_features

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.params = getattr(config.stages, self.name)

    def model_specs(self) -> dict[str, Any]:
        """Every model the stage loads, by role (for fingerprints, manifests, the card)."""
        return {}

    def resolved_models(self) -> dict[str, ResolvedModel]:
        return {role: resolve_model(spec, f"stages.{self.name}.{role}") for role, spec in self.model_specs().items()}

    def prompts(self) -> dict[str, str]:
        """The prompt templates that shape outputs, rendered once into the fingerprint."""
        return {}

    def fingerprint_payload(self, input_fingerprint: str | None) -> dict[str, Any]:
        return {
            "stage": self.name,
            "code_version": self.version,
            "params": self.params.model_dump(mode="json", exclude=self.throughput_fields()),
            "prompts": self.prompts(),
            "models": {role: {"id": spec.id, "revision": spec.revision} for role, spec in self.model_specs().items()},
            "seed": self.config.seed,
            "rows_per_shard": self.config.rows_per_shard,
            "engine": self.config.engine.output_relevant() if self.model_specs() else None,
            "input": input_fingerprint,
        }

    def fingerprint(self, input_fingerprint: str | None) -> str:
        return fingerprint(self.fingerprint_payload(input_fingerprint))

    def throughput_fields(self) -> set[str]:
        return set()

    def source_plan(self) -> list[dict[str, Any]]:
        """Stages without an input stage: one small JSON descriptor per shard, each with its `rows`."""
        raise NotImplementedError(f"stage {self.name!r} has no source")

    def source_rows(self, descriptor: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError(f"stage {self.name!r} has no source")

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        raise NotImplementedError
