"""Every parameter a stage's config covers is in its fingerprint, and throughput knobs are not.

The parameters are not listed here: they are walked from the stages' `Params` models (and the engines'
`Options`), each changed to another valid value, and the fingerprint of every stage is recomputed. A parameter
that a stage's fingerprint skips would let `run --from` hand out rows made with another value (stale rows)."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest

from scalequest_dataset.engines import ENGINES, engine_class
from scalequest_dataset.recipe.config import RunConfig, build_config, resolve_config
from scalequest_dataset.recipe.model_identity import ResolvedModel
from scalequest_dataset.recipe.params import ConfigError, ModelSpec, Strict
from scalequest_dataset.stages import STAGES

INPUT = {"stage": "x", "fingerprint": "f" * 32, "content": "sha256:" + "0" * 64}
# The base configs: `tiny` with every optional stage on, so every stage's Params is walked; a benchmark from a
# local file in one and from the Hub in the other (a field one of them forbids is changed in the other).
BASE = ["stages.decontamination={benchmarks: [{name: b1, path: bench.jsonl, columns: [problem]}]}"]
HUB_BASE = ["stages.decontamination={benchmarks: [{name: b1, repo: org/bench, config: main, columns: [problem]}]}"]


@pytest.fixture(autouse=True)
def _pinned_offline(monkeypatch):
    """Models and benchmarks pinned without loading anything: the identity a resolver would pin depends on
    the spec's id and revision alone (so a changed revision moves the pinned identity, as it does for real)."""
    def model(spec: ModelSpec, field: str = "model") -> ResolvedModel:
        return ResolvedModel(spec.id, f"pinned:{spec.id}@{spec.revision}", "/nowhere")

    def benchmark(b: Any, field: str) -> ResolvedModel:
        return ResolvedModel(f"benchmark:{b.name}", f"pinned:{b.repo}:{b.path}:{b.revision}", "/nowhere")

    monkeypatch.setattr("scalequest_dataset.stages.base.resolve_model", model)
    monkeypatch.setattr("scalequest_dataset.stages.decontamination.resolve_benchmark", benchmark)


def fingerprints(config: RunConfig) -> dict[str, str]:
    return {name: STAGES[name](config).fingerprint(config.input_of(name), INPUT) for name in config.stage_names()}


def base_data(overrides: list[str] = BASE) -> dict[str, Any]:
    return resolve_config("tiny", overrides).model_dump(mode="json")


# ---------------------------------------------------------------------------------------------- walking Params


def leaves(model: Strict, path: str) -> list[tuple[str, Any, Any]]:
    """(dotted path, annotation, value) of every parameter of a Params instance, nested models walked (a list of
    models through its first item, a model id and its revision apart)."""
    out = []
    for name, field in type(model).model_fields.items():
        value, where = getattr(model, name), f"{path}.{name}"
        if isinstance(value, Strict):
            out += leaves(value, where)
        elif isinstance(value, list) and value and isinstance(value[0], Strict):
            out += leaves(value[0], f"{where}.0")
        else:
            out.append((where, field.annotation, value))
    return out


def candidates(annotation: Any, value: Any) -> list[Any]:
    """Other values for a parameter, the likeliest valid first."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    found: list[Any] = []
    for kind in options:
        if typing.get_origin(kind) is typing.Literal:
            found += [a for a in typing.get_args(kind) if a != value]
        elif kind is bool:
            found.append(not value)
        elif kind is int:
            found += [(value or 0) + 1, (value or 16) * 2]
        elif kind is float:
            found += [round((value or 0.0) * 0.5 + 0.01, 6), 0.5]
        elif kind is str:
            found += [f"{value or ''}x", f"x{value or ''}", "main"]
        elif kind is ModelSpec:
            found.append("builtin:other")
        elif typing.get_origin(kind) is list:
            items = list(value or [])
            found += [[*items[:-1], items[-1] * 0.9] if items and isinstance(items[-1], float) else None,
                      [*items, f"{items[-1]}x" if items and isinstance(items[-1], str) else "extra"]]
        elif typing.get_origin(kind) is dict:
            table = dict(value or {})
            if table:
                key = next(iter(table))
                found.append({**table, key: [p * 0.5 for p in table[key]]})
            found.append({**table, "other-generator": [0.5] * 5})
    return [c for c in found if c is not None and c != value]


def assign(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(data)
    node: Any = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value
    return out


def changed(path: str, annotation: Any, value: Any) -> tuple[RunConfig, RunConfig]:
    """(base, the base with `path` changed): the first other value that validates, in either base config, alone
    or with a sibling that was unset (a method that needs its model) set too."""
    tries = ["v2"] if path.endswith(".revision") and value is None else candidates(annotation, value)
    if not tries:
        pytest.skip(f"{path} allows one value only: nothing to change")
    parent, _, _ = path.rpartition(".")
    for overrides in (BASE, HUB_BASE):
        data = base_data(overrides)
        node: Any = data
        for part in parent.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        siblings = [f"{parent}.{k}" for k, v in node.items() if v is None and f"{parent}.{k}" != path]
        for candidate in tries:
            for companion in [None, *siblings]:
                attempt = assign(data, path, candidate)
                if companion is not None:
                    attempt = assign(attempt, companion, "builtin:other")
                try:
                    return build_config(data), build_config(attempt)
                except ConfigError:
                    continue
    raise AssertionError(f"no other valid value found for {path} (tried {tries}): teach `candidates` one")


def stage_parameters() -> list[tuple[str, str, Any, Any]]:
    config = resolve_config("tiny", BASE)
    return [(name, *leaf) for name in config.stage_names()
            for leaf in leaves(getattr(config.stages, name), f"stages.{name}")]


def engine_options() -> list[tuple[str, str]]:
    return [(name, field) for name in ENGINES for field in engine_class(name).Options.model_fields]


# ---------------------------------------------------------------------------------------------- the tests


def test_the_walk_sees_every_stage_and_nested_parameter():
    walked = {p for _, p, _, _ in stage_parameters()}
    assert {s for s, *_ in stage_parameters()} == set(STAGES)
    assert {"stages.questions.top_p", "stages.questions.generators.0.count", "stages.questions.generators.0.model.id",
            "stages.decontamination.benchmarks.0.columns", "stages.difficulty.keep"} <= walked


@pytest.mark.parametrize(("stage", "path", "annotation", "value"), stage_parameters(),
                         ids=[p for _, p, _, _ in stage_parameters()])
def test_every_stage_parameter_moves_its_fingerprint(stage, path, annotation, value):
    base, other = changed(path, annotation, value)
    base, after = fingerprints(base), fingerprints(other)
    assert after[stage] != base[stage], f"{path} is not in the fingerprint of stage {stage!r}"


@pytest.mark.parametrize("path", ["seed", "rows_per_shard", "engine.dtype", "engine.name"])
def test_run_wide_recipe_moves_every_fingerprint_that_reads_it(path):
    base = fingerprints(resolve_config("tiny", BASE))
    new = {"seed": 7, "rows_per_shard": 5, "engine.dtype": "bfloat16", "engine.name": "vllm"}[path]
    after = fingerprints(build_config(assign(base_data(), path, new)))
    moved = {s for s in base if after[s] != base[s]}
    if path.startswith("engine."):  # only stages that load a model read the engine
        assert moved == {s for s in base if STAGES[s](resolve_config("tiny", BASE)).model_specs()}
    else:
        assert moved == set(base)


@pytest.mark.parametrize(("engine", "field"), engine_options())
def test_engine_options_move_fingerprints_iff_declared_output_relevant(engine, field):
    data = assign(base_data(), "engine.name", engine)
    config = build_config(data)
    base = fingerprints(config)
    options = engine_class(engine).Options
    value = getattr(config.engine.options(), field)
    for candidate in candidates(options.model_fields[field].annotation, value):
        try:
            other = build_config(assign(data, f"engine.{engine}.{field}", candidate))
            break
        except ConfigError:
            continue
    else:
        raise AssertionError(f"no other valid value for engine.{engine}.{field}")
    moved = {s for s in base if fingerprints(other)[s] != base[s]}
    if field in options.FINGERPRINTED:
        assert moved, f"engine.{engine}.{field} is declared output-relevant but moves no fingerprint"
    else:
        assert not moved, f"engine.{engine}.{field} is a throughput knob but moves {sorted(moved)}"


def test_batch_size_is_a_throughput_knob():
    base = fingerprints(resolve_config("tiny", BASE))
    assert fingerprints(build_config(assign(base_data(), "engine.batch_size", 1))) == base
