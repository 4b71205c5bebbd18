"""The building blocks of every parameter model: stages and engines declare their own parameters with
these next to their code, and `config.py` assembles the run config from their registries (so this module
imports neither, and neither imports `config`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the config (names the field or file)."""


class Strict(BaseModel):
    """Unknown fields are errors (a typo never silently falls back to a default); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """A model: a Hub id (with a revision: a branch, tag or commit), a local folder, or a built-in the toolkit
    makes offline (`builtin:tiny` - random tiny Qwen2; `builtin:smollm2-135m-instruct` - converted from
    PyPI's GGUF). Written as `ID` or `ID@REVISION` in YAML, or as a mapping."""

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


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 text (never \\u escapes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:32]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [2]} -> {"a.b": 1, "c": [2]}: nested mappings as dotted keys (lists stay whole)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}
