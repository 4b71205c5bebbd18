"""`scalequest regenerate`: rebuild shards of a published stage from its manifest alone (its config, seed
and input revision) in a scratch directory, and compare their sha256 with the published ones."""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .config import ConfigError, build_config
from .diffing import flatten
from .engines import EnginePool
from .executor import Run, environment
from .sources import Source, StoreSource, open_source
from .storage import sha256_file, write_json


@dataclass
class ShardCheck:
    index: int
    file: str
    expected: str
    actual: str
    first_differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.expected == self.actual


@dataclass
class RegenerateReport:
    source: str
    stage: str
    scratch: str
    shards: list[ShardCheck]
    environment_differences: list[dict[str, Any]]

    @property
    def all_match(self) -> bool:
        return all(s.matches for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "stage": self.stage, "scratch": self.scratch, "all_match": self.all_match,
                "matched": sum(s.matches for s in self.shards), "checked": len(self.shards),
                "shards": [{**asdict(s), "matches": s.matches} for s in self.shards],
                "environment_differences": self.environment_differences}

    def describe(self) -> str:
        lines = [f"regenerate {self.stage} from {self.source}: "
                 f"{sum(s.matches for s in self.shards)}/{len(self.shards)} shards match"]
        for s in self.shards:
            lines.append(f"  {s.file}: {'match' if s.matches else 'MISMATCH'} ({s.actual[:12]} vs {s.expected[:12]})")
            for d in s.first_differences:
                lines.append(f"    {d['id']} [{d['column']}]: published {d['published']!r} -> now {d['now']!r}")
        if not self.all_match and self.environment_differences:
            lines.append("  environment differences from the manifest (what can move bytes):")
            for e in self.environment_differences:
                lines.append(f"    {e['field']}: {e['published']} -> {e['now']}")
        lines.append(f"  scratch directory: {self.scratch}")
        return "\n".join(lines)


def regenerate(source: str | Source, stage: str, shards: list[int] | None = None, sample: int | None = None,
               engine: str | None = None, scratch: str | Path | None = None, pool: EnginePool | None = None,
               seed: int = 0) -> RegenerateReport:
    src = source if isinstance(source, Source) else open_source(source)
    manifests = src.manifests()
    if stage not in manifests:
        raise ConfigError(f"stage {stage!r} is not in {src.label} (stages: {', '.join(manifests) or 'none'})")
    manifest = manifests[stage]
    data = dict(manifest["config"])
    if engine:
        data["engine"] = {**data["engine"], "name": engine}
    config = build_config(data, f"the config in {src.label} manifests/{stage}.json")
    published = {s["index"]: s["files"]["train"] for s in manifest["shards"]}
    chosen = _choose(sorted(published), shards, sample, seed)
    root = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix=f"regenerate-{stage}-"))
    input_stage = manifest["input"]["stage"]
    if input_stage:
        _place_input(src, manifest, input_stage, root)
    run = Run(root, config, pool=pool, show_progress=True)
    try:
        plan = run.plan(run.stage(stage))
        if plan["fingerprint"] != manifest["fingerprint"]:
            raise ConfigError(f"the regenerated plan's fingerprint {plan['fingerprint']} differs from the published "
                              f"{manifest['fingerprint']}: the stage code version or input changed")
        run.run_stage(stage, only=set(chosen))
    finally:
        if pool is None:
            run.close()
    checks = []
    for index in chosen:
        info = published[index]
        path = run.data_dir(stage) / info["file"]
        check = ShardCheck(index, info["file"], info["sha256"], sha256_file(path))
        if not check.matches:
            check.first_differences = _first_differences(src.shard_path(stage, info["file"]), path)
        checks.append(check)
    return RegenerateReport(src.label, stage, str(root), checks, _environment_differences(manifest))


def _choose(indices: list[int], shards: list[int] | None, sample: int | None, seed: int) -> list[int]:
    if shards:
        unknown = sorted(set(shards) - set(indices))
        if unknown:
            raise ConfigError(f"--shards {unknown}: the stage has shards 0..{len(indices) - 1}")
        return sorted(set(shards))
    if sample:
        return sorted(random.Random(seed).sample(indices, min(sample, len(indices))))
    return indices


def _place_input(src: Source, manifest: dict[str, Any], input_stage: str, root: Path) -> None:
    """Put the input stage, exactly as published, into the scratch run (shards and manifest)."""
    input_src: Source = src
    if isinstance(src, StoreSource) and manifest["input"].get("commit"):
        input_src = StoreSource(src.store, manifest["input"]["commit"])
    input_manifest = input_src.manifests().get(input_stage)
    if input_manifest is None or input_manifest["fingerprint"] != manifest["input"]["fingerprint"]:
        raise ConfigError(f"the input stage {input_stage!r} with fingerprint {manifest['input']['fingerprint']} is "
                          f"not in {input_src.label}: publish it (or regenerate it) first")
    target = root / "data" / input_stage
    target.mkdir(parents=True, exist_ok=True)
    for shard in input_manifest["shards"]:
        for info in shard["files"].values():
            dest = target / info["file"]
            shutil.copyfile(input_src.shard_path(input_stage, info["file"]), dest)
            if sha256_file(dest) != info["sha256"]:
                raise ConfigError(f"input shard {info['file']} of {input_stage!r} does not match its manifest")
    write_json(root / "manifests" / f"{input_stage}.json", input_manifest)


def _first_differences(published: Path, now: Path, limit: int = 5) -> list[dict[str, Any]]:
    a, b = pq.read_table(published).to_pylist(), pq.read_table(now).to_pylist()
    out = []
    by_id = {r["id"]: r for r in b}
    for row in a:
        other = by_id.get(row["id"])
        if other is None:
            out.append({"id": row["id"], "column": "<row>", "published": "present", "now": "missing"})
        else:
            for col, value in row.items():
                if other.get(col) != value:
                    out.append({"id": row["id"], "column": col, "published": value, "now": other.get(col)})
                    break
        if len(out) >= limit:
            break
    return out


def _environment_differences(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    published = flatten({"environment": manifest.get("environment", {})})
    now = flatten({"environment": environment()})
    return [{"field": k, "published": published.get(k), "now": now.get(k)} for k in sorted(set(published) | set(now))
            if published.get(k) != now.get(k) and not k.endswith("platform")]
