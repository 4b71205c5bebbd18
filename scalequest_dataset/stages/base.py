"""What a stage is: a pure function from a shard of input rows (plus its parameters, its pinned models and
derived seeds) to output rows, with Features declared once and shared by the writer, the builder and the card.

A stage module holds everything about its stage: its parameters (`Params`, the config's `stages.<name>`
section), its Features, its code. `stages/__init__.py` orders the stage classes in one registry, from which
the config model and the stage order derive. A stage reads the stage before it among those the config
enables; `reads` names the input columns it needs, checked when a config is built."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import datasets
import pyarrow as pa

from ..engines import Completion, Engine, EngineInfo, ProgressFn
from ..recipe.model_identity import ResolvedModel, as_written, resolve_model
from ..recipe.params import ModelSpec, Strict, fingerprint


class StageConfig(Protocol):
    """What a stage reads of the run's config (recipe.config.RunConfig, which is built from the stages' own
    `Params`: so the stages name its shape here rather than import it)."""

    seed: int
    rows_per_shard: int
    engine: Any  # the engine section: `.name`, `.output_relevant()`
    stages: Any  # one attribute per stage: its Params, or None when disabled

    def input_of(self, stage: str) -> str | None: ...


# ---------------------------------------------------------------------------------------------- what is said about a stage
# A stage owns what the card says about it (its notes and figures) and what a diff counts of the columns it adds:
# the card, its figures and the diff statistics read these, never a stage's name.

EXACT, GAP, DEPARTURE = "exact", "gap", "departure"  # as the paper or its release / our rule for a gap / we depart
Note = tuple[str, str]  # (kind, text)


@dataclass(frozen=True)
class Figure:
    """One picture of a column a stage adds, on the card (`images/<stage>/<name>.png`) and in a diff report (any
    stage whose rows hold the column): what is drawn, and how it is labelled."""

    name: str  # file name without .png
    kind: str  # "length" | "unit" (a score in [0, 1]) | "number" | "category"
    column: str
    title: str  # the alt text in the card
    heading: str = ""  # the plot's own title (default: `title`)
    axis: str = ""  # its x axis: a histogram's values (default: the column), a bar chart's counts ("rows")

    def __post_init__(self) -> None:
        object.__setattr__(self, "heading", self.heading or self.title)
        object.__setattr__(self, "axis", self.axis or ("rows" if self.kind == "category" else self.column))


def length_figure(column: str) -> Figure:
    return Figure(f"{column}-length", "length", column, f"Length of {column} (characters)", f"Length of {column}",
                  f"{column} length (characters)")


DIFFICULTY_FIGURE = Figure("difficulty", "unit", "difficulty", "Difficulty score", "Difficulty",
                           "difficulty score (0 = easiest, 1 = hardest)")
REWARD_FIGURE = Figure("reward", "number", "reward", "Reward", "Reward", "reward (reward-model score)")
GENERATORS_FIGURE = Figure("generator-mix", "category", "generator", "Rows per generator", "Generator mix", "rows")


def with_columns(features: datasets.Features, **columns: Any) -> datasets.Features:
    """A stage's schema as its input's plus its own columns. Stage order is fixed, so every column an earlier
    stage may add is known: columns of stages absent from a run are null."""
    return datasets.Features({**features, **columns})


def with_drop_reason(features: datasets.Features, **columns: Any) -> datasets.Features:
    """The schema of a `dropped` split: the train columns, `drop_reason` (a short category that the manifest
    counts: "unsolvable", "prompt-too-long", ...), `drop_detail` (the specifics, for people), and extras."""
    return with_columns(features, drop_reason=datasets.Value("string"), drop_detail=datasets.Value("string"),
                        **columns)


@dataclass
class ShardResult:
    rows: list[dict[str, Any]]
    dropped: list[dict[str, Any]] = field(default_factory=list)  # rows removed, each with its `drop_reason`
    tokens: int = 0  # completion tokens generated
    prompt_tokens: int = 0  # prompt tokens read by generation

    def drop_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r["drop_reason"] for r in self.dropped).items()))


def rejected(row: dict[str, Any], completion: Completion) -> dict[str, Any]:
    """A row the engine refused (its prompt is longer than the model's context, or the engine failed on that
    one request), as a `dropped` row: one bad row never fails a stage of a million."""
    return {**row, "drop_reason": completion.error, "drop_detail": completion.detail}


def token_counts(completions: Sequence[Completion]) -> dict[str, int]:
    return {"tokens": sum(c.completion_tokens for c in completions),
            "prompt_tokens": sum(c.prompt_tokens for c in completions)}


@dataclass
class StageContext:
    """What a stage may use besides its rows: the run config and a way to get a loaded engine. A worker makes a
    fresh one per shard, so `engines_used` lists exactly the engines this shard used."""

    config: StageConfig
    get_engine: Callable[..., Engine]  # (model, **overrides) -> a loaded engine
    progress: ProgressFn | None = None
    engines_used: dict[str, EngineInfo] = field(default_factory=dict)
    answer_seconds: float = 0.0  # time spent extracting and comparing final answers (execution.answer_seconds)

    def engine(self, model: ResolvedModel, **overrides: Any) -> Engine:
        """A loaded engine for `model`. `overrides` (task="score", trust_remote_code, dtype) go to the
        getter only when given, so stages that only generate need nothing more from it."""
        engine = self.get_engine(model, **overrides) if overrides else self.get_engine(model)
        self.engines_used[model.id] = engine.info()
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


def _model_ids(value: Any) -> Any:
    """Parameters as JSON, each ModelSpec as its id alone (its revision is pinned separately)."""
    if isinstance(value, ModelSpec):
        return value.id
    if isinstance(value, Strict):
        return {name: _model_ids(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, (list, tuple)):
        return [_model_ids(v) for v in value]
    if isinstance(value, dict):
        return {k: _model_ids(v) for k, v in value.items()}
    return value


def _without(value: Any, paths: tuple[str, ...]) -> Any:
    """`value` (params as JSON) without the dotted `paths` (`*` matches every item of a list)."""
    import copy

    value = copy.deepcopy(value)
    for path in paths:
        nodes, *parts = [value], *path.split(".")
        for part in parts[:-1]:
            nodes = [c for n in nodes for c in (n if part == "*" else [n.get(part)]) if c is not None]
        for node in nodes:
            if isinstance(node, dict):
                node.pop(parts[-1], None)
    return value


def token_sum(rows: list[dict[str, Any]], prompt: str, completion: str) -> tuple[int, int]:
    return sum(r.get(prompt) or 0 for r in rows), sum(r.get(completion) or 0 for r in rows)


class Stage:
    """Subclasses set the class attributes and implement `process` (and `source_plan`/`source_rows` if they
    have no input; `prepare`/`load_prepared` if a shard's decision needs the whole input)."""

    name: ClassVar[str]
    version: ClassVar[str]  # bump when the code's output for the same input changes
    description: ClassVar[str]
    Params: ClassVar[type[Strict]]  # the config's `stages.<name>` section
    optional: ClassVar[bool] = True  # may a config leave this stage out?
    features: ClassVar[Any]  # datasets.Features of the `train` split
    dropped_features: ClassVar[Any | None] = None  # stages that remove rows also write a `dropped` split
    group_key: ClassVar[str | None] = None  # a shard never splits rows that share this column's value
    one_row_per_group: ClassVar[bool] = False  # writes one row per group: shards are cut by groups (output rows)
    reads: ClassVar[tuple[str, ...]] = ()  # the input columns this stage needs
    # The card: the paper's settings of this stage (a run's other values are listed as departures), its pictures,
    # and whether it is the dataset's default config on the Hub.
    paper: ClassVar[dict[str, Any]] = {}
    # What a diff counts of the columns this stage adds: column -> "number", "unit" (a score in [0, 1]),
    # "category" (counted by value) or "id" (no statistics). Here: the columns every stage may write.
    statistics: ClassVar[dict[str, str]] = {"id": "id", "drop_reason": "category"}
    figures: ClassVar[tuple[Figure, ...]] = ()
    # What the tokens of the stage's progress bar are: "generated" by its engine, or "read" (a scoring stage).
    progress_tokens: ClassVar[str] = "generated"
    hub_default: ClassVar[bool] = False
    # What a row is, coming in and going out (the funnel reads fan-out and fan-in from these).
    unit_in: ClassVar[str] = "question"
    unit_out: ClassVar[str] = "question"
    # Building on a version (`run --from`): a row's outputs (a group's, with `group_key`) may be taken from the
    # source when its own input and the stage's model recipe are unchanged. `row_local`: a row's outputs depend on
    # its own input alone (not dedup, whose decision reads every row). `origin`: the output column naming the
    # input row or group an output came from. `reuse_ignores`: parameters (dotted, `*` for every list item) that
    # reach no model, which `rebuild` re-applies to the source's outputs: changing them never re-runs a model.
    row_local: ClassVar[bool] = True
    origin: ClassVar[str] = "id"
    reuse_ignores: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A config's splits share one schema on the Hub (datasets infers one Features per config), so a stage's
        # `train` split carries the `dropped` split's extra columns too, null for kept rows.
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("dropped_features") is not None:
            cls.features = cls.dropped_features

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        """What of this stage follows the paper or its release exactly, which rule we chose where they leave a
        gap, and where we depart and why - from the parameters a manifest recorded (`p`), so the card says what
        this run did."""
        return cls.departures(p)

    @classmethod
    def card_section(cls, manifest: Any) -> tuple[str, dict[str, Any]] | None:
        """A section of the card of the stage's own, after the notes: a jinja template and its values, from the
        manifest the stage's revision holds (decontamination: the benchmark overlap table); None for none."""
        return None

    @classmethod
    def paper_differences(cls, p: dict[str, Any]) -> list[str]:
        """The settings in `p` that are not the paper's (`paper`), as "key value (the paper: value)"."""
        out = []
        for key, paper in cls.paper.items():
            value = p.get(key)
            value = value.get("id") if isinstance(value, dict) else value
            if value != paper:
                out.append(f"{key} {value!r} (the paper: {paper!r})")
        return out

    @classmethod
    def departures(cls, p: dict[str, Any]) -> list[Note]:
        diffs = cls.paper_differences(p)
        return [(DEPARTURE, "; ".join(diffs))] if diffs else []

    def __init__(self, config: StageConfig, models: Mapping[str, ResolvedModel] | None = None) -> None:
        """`models`: the identities a plan pinned (role -> model); without them, specs are resolved on use."""
        self.config = config
        self.params: Any = getattr(config.stages, self.name)
        self._models = dict(models) if models is not None else None

    # ------------------------------------------------------------------------------------------ identity

    def model_specs(self) -> dict[str, ModelSpec]:
        """Every model the stage loads, by role (for fingerprints, manifests, the card)."""
        return {}

    def models(self) -> dict[str, ResolvedModel]:
        """The pinned models by role: the plan's, or resolved now (the Hub asked once per process)."""
        if self._models is None:
            self._models = {role: resolve_model(spec, self.model_field(role)) if self.loads_models
                            else as_written(spec.id, spec.revision) for role, spec in self.model_specs().items()}
        return self._models

    @property
    def loads_models(self) -> bool:
        """False under an engine that loads no model (`simulate`): models are their ids and revisions as written."""
        from ..engines import loads_models

        return loads_models(self.config.engine.name)

    def model_field(self, role: str) -> str:
        """Where the config sets the model of `role` (named in errors)."""
        return f"stages.{self.name}.model"

    def prompts(self) -> dict[str, str]:
        """The prompt templates that shape outputs, rendered once into the fingerprint."""
        return {}

    def config_payload(self, input_stage: str | None) -> dict[str, Any]:
        """What the config says about this stage (before any model is resolved): equal payloads mean the same
        config for this stage, which is how a run directory tells a resume from another config."""
        return {
            "stage": self.name,
            "code_version": self.version,
            "params": self.params.model_dump(mode="json"),
            "prompts": self.prompts(),
            "seed": self.config.seed,
            "rows_per_shard": self.config.rows_per_shard,
            "engine": self.config.engine.output_relevant() if self.model_specs() else None,
            "input_stage": input_stage,
        }

    def fingerprint(self, input_stage: str | None, input_ref: dict[str, Any] | None) -> str:
        """The config payload, the pinned model identities and the input's identity (its fingerprint and the
        digest of its rows' content, so a redone input invalidates what was built on it): the same fingerprint
        means the same intended output. How a model's revision was written (`main`, a tag, the commit itself)
        is left out: the commit it was pinned to is what counts."""
        payload = self.config_payload(input_stage)
        payload["params"] = _model_ids(self.params)
        return fingerprint({**payload, "models": {role: m.identity() for role, m in self.models().items()},
                            "input": input_ref})

    def model_recipe(self, models: Mapping[str, Any]) -> dict[str, Any]:
        """What a row's model outputs depend on besides the row: the fingerprint's payload without the input and
        without `reuse_ignores` (`models`: role -> pinned identity)."""
        payload = self.config_payload(self.config.input_of(self.name))
        payload["params"] = _without(_model_ids(self.params), self.reuse_ignores)
        return {**payload, "models": dict(models)}

    def rebuild(self, rows: list[dict[str, Any]], prior: list[tuple[str, dict[str, Any]]]) -> ShardResult:
        """The outputs of `rows` (one input row, or one group) from the source version's outputs for the same input
        (`prior`: (split, row) pairs), without an engine: as they are. A stage with `reuse_ignores` re-applies
        those rules here, exactly as `process` applies them."""
        result = ShardResult([r for split, r in prior if split == "train"],
                             [r for split, r in prior if split != "train"])
        result.prompt_tokens, result.tokens = self.prior_tokens([r for _, r in prior])
        return result

    def prior_tokens(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """(prompt, completion) tokens that made these output rows, from their own columns (what `process`
        counted for them), so a reused row counts in the shard's tokens as it did in a run from scratch."""
        return 0, 0

    # ------------------------------------------------------------------------------------------ rows

    def source_plan(self) -> list[dict[str, Any]]:
        """Stages without an input stage: one small JSON descriptor per shard, each with its `rows`."""
        raise NotImplementedError(f"stage {self.name!r} has no source")

    def source_rows(self, descriptor: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError(f"stage {self.name!r} has no source")

    def prepare(self, batches: Iterable[pa.RecordBatch]) -> pa.Table | None:
        """A pass over the whole input at plan time, for a decision a shard cannot make alone (dedup). The
        table returned is persisted with the plan and handed to `load_prepared` in every worker. It is the merge
        of one part: the planner may instead run `prepare_part` on contiguous parts of the input in several
        processes and merge those (run/prepare.py), which must give the same table."""
        table = self.prepare_merge([self.prepare_part(batches)])
        if table is not None:
            self.load_prepared(table)
        return table

    def prepare_part(self, batches: Iterable[pa.RecordBatch]) -> Any:
        """The pass over one part of the input (picklable: it may come from another process); None: no pass."""
        return None

    def prepare_merge(self, parts: list[Any]) -> pa.Table | None:
        """The prepared table from the parts' results, in input order."""
        return None

    def load_prepared(self, table: pa.Table) -> None:
        raise NotImplementedError(f"stage {self.name!r} prepares nothing")

    @staticmethod
    def summarize(prepared: pa.Table) -> dict[str, Any] | None:
        """What a stage's whole-input pass found that its manifest should carry (decontamination: the overlap
        with each benchmark), read from the prepared table at finalize time; None for most stages."""
        return None

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        raise NotImplementedError
