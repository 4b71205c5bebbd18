"""`scalequest regenerate`: rebuild shards of a published stage from its manifest alone - its config, seed,
pinned model revisions and input revision - in a scratch run directory, and compare them with the published
ones: the content digest decides whether the rows reproduce, the sha256 whether the files are byte-identical
(the same rows written by another Parquet writer differ only there, and the report says so).

A revision from someone else is untrusted input: its manifest is validated strictly, the input shards are
checked against their manifest as they are fetched, and no model's remote code runs because a manifest asks
for it - the user names such models on the command line (`--trust-remote-code MODEL`).

With `attest`, a verified reproduction is recorded in the store as one small file in its own commit (what was
compared, the digests that matched, the environment and engines); the card lists it."""

from __future__ import annotations

import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..engines import EnginePool
from ..recipe.config import RunConfig, build_config
from ..recipe.params import ConfigError, flatten
from ..run import RunLayout, StageError
from ..run import records as rec
from ..run.files import write_bytes
from ..run.plan import adopt_config, plan_stage
from ..run.records import FileRecord, Manifest, ShardRecord
from ..run.worker import WorkerContext, environment, run_shard
from ..stages import STAGES
from .locator import Source, StoreSource, open_source
from .stores import RepoLayout, VerificationError
from .verify import Checked


@dataclass
class FileCheck:
    split: str
    file: str
    expected_sha256: str
    actual_sha256: str
    expected_content: str
    actual_content: str
    writers: tuple[str | None, str | None] = (None, None)  # published, now
    corrupt: str | None = None  # the published file's bytes do not match the published manifest
    rebuilt: bool = True  # False: another file of the shard is corrupt in the store, so the shard was not rebuilt

    @property
    def status(self) -> str:
        if self.corrupt:
            return "STORE CORRUPT"
        if not self.rebuilt:
            return "NOT REBUILT"
        if self.expected_sha256 == self.actual_sha256:
            return "match"
        if self.expected_content == self.actual_content:
            return "same rows"  # another Parquet writer or metadata; the data reproduces
        return "MISMATCH"


@dataclass
class ShardCheck:
    index: int
    files: list[FileCheck]
    first_differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        """The rows reproduce (content digests equal for every split) and the published bytes are sound."""
        return all(f.status in ("match", "same rows") for f in self.files)

    @property
    def byte_identical(self) -> bool:
        return all(f.status == "match" for f in self.files)


@dataclass
class RegenerateReport:
    source: str
    stage: str
    scratch: str
    shards: list[ShardCheck]
    environment_differences: list[dict[str, Any]]
    attestation: str | None = None  # the commit that recorded it

    @property
    def all_match(self) -> bool:
        return all(s.matches for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "stage": self.stage, "scratch": self.scratch, "all_match": self.all_match,
                "byte_identical": all(s.byte_identical for s in self.shards),
                "matched": sum(s.matches for s in self.shards), "checked": len(self.shards),
                "shards": [{**asdict(s), "matches": s.matches, "files": [{**asdict(f), "status": f.status}
                                                                         for f in s.files]} for s in self.shards],
                "environment_differences": self.environment_differences, "attestation": self.attestation}

    def describe(self) -> str:
        lines = [f"regenerate {self.stage} from {self.source}: "
                 f"{sum(s.matches for s in self.shards)}/{len(self.shards)} shards reproduce"]
        for s in self.shards:
            for f in s.files:
                detail = f"({f.actual_sha256[:12]} vs published {f.expected_sha256[:12]})"
                if f.status == "same rows":
                    detail = f"(same rows; files written by {f.writers[1]} vs published {f.writers[0]})"
                elif f.corrupt:
                    detail = f"({f.corrupt})"
                elif not f.rebuilt:
                    detail = "(another file of this shard is corrupt in the store)"
                lines.append(f"  {f.file}: {f.status} {detail}")
            for d in s.first_differences:
                lines.append(f"    {d['id']} [{d['column']}]: published {d['published']!r} -> now {d['now']!r}")
        if not all(s.byte_identical for s in self.shards) and self.environment_differences:
            lines.append("  how this environment differs from the published execution (what can move bytes):")
            for e in self.environment_differences:
                lines.append(f"    {e['field']}: {e['published']} -> {e['now']}")
        if self.attestation:
            lines.append(f"  attested: the reproduction is recorded in commit {self.attestation[:12]}")
        lines.append(f"  scratch directory: {self.scratch}")
        return "\n".join(lines)


def regenerate(source: str | Source, stage: str, shards: list[int] | None = None, sample: int | None = None,
               engine: str | None = None, scratch: str | Path | None = None, pool: EnginePool | None = None,
               seed: int = 0, trust_remote_code: list[str] | None = None, attest: bool = False
               ) -> RegenerateReport:
    src = source if isinstance(source, Source) else open_source(source)
    manifests = src.manifests()
    if stage not in manifests:
        raise ConfigError(f"stage {stage!r} is not in {src.label} (stages: {', '.join(manifests) or 'none'})")
    manifest = manifests[stage]
    label = f"{src.label} {RepoLayout.manifest(stage)}"
    config = build_config({**manifest.recipe.config, "preset": manifest.preset or "custom"}, f"the config in {label}")
    recorded = config.engine.name
    if engine is not None and engine != recorded:
        raise ConfigError(f"--engine {engine}: stage {stage!r} was made with the {recorded} engine; another engine "
                          f"samples differently, so it cannot reproduce these bytes (leave --engine out)")
    _check_remote_code(config, stage, manifest, trust_remote_code or [], label)
    config = _as_executed(config, manifest)
    published = {s.index: s for s in manifest.shards}
    chosen = _choose(sorted(published), shards, sample, seed)
    # The published bytes first (fetched, and checked against the manifest with their content recomputed): a
    # shard whose published files are not sound is reported, not rebuilt.
    sound = {i: _published(src, stage, published[i].files) for i in chosen}
    root = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix=f"regenerate-{stage}-"))
    layout = RunLayout(root)
    adopt_config(layout, config)
    if manifest.recipe.input is not None:
        _place_input(src, manifest, layout)
    plan = plan_stage(layout, config, stage, pinned=manifest.recipe.models)
    if plan.fingerprint != manifest.fingerprint:
        raise ConfigError(f"this toolkit plans stage {stage!r} of {src.label} with fingerprint {plan.fingerprint}, "
                          f"not the published {manifest.fingerprint}: {_why_not(config, stage, manifest)}")
    own_pool = pool is None
    context = WorkerContext(pool or EnginePool(), "regenerate")
    try:
        records = {i: run_shard(root, stage, i, context, config=config) for i in chosen
                   if all(isinstance(c, Checked) for c in sound[i].values())}
    finally:
        if own_pool:
            context.pool.close()
    checks = [_check(src, layout, stage, published[i].files, sound[i], records.get(i), i) for i in chosen]
    report = RegenerateReport(src.label, stage, str(root), checks,
                              _environment_differences(manifest, list(records.values())))
    if attest:
        if not report.all_match:
            raise StageError(f"not attested: {len([c for c in checks if not c.matches])} shard(s) of {stage!r} did "
                             "not reproduce")
        if not isinstance(src, StoreSource):
            raise ConfigError("--attest records the reproduction in a store: give STORE@REV or ORG/NAME@REV")
        from .publish import attest as record_attestation

        report.attestation = record_attestation(src.store, src.revision, manifest, report, list(records.values()))
    return report


def _check_remote_code(config, stage: str, manifest: Manifest, allowed: list[str], label: str) -> None:
    """Models whose stage asks for trust_remote_code run only if the user named them."""
    params = getattr(config.stages, stage)
    if not getattr(params, "trust_remote_code", False):
        return
    wanted = sorted({m.id for m in manifest.recipe.models.values()})
    refused = [m for m in wanted if m not in allowed]
    if refused:
        raise ConfigError(f"{label} asks to run {', '.join(refused)} with trust_remote_code (Python code shipped "
                          f"with the model). A revision from someone else must not run code because it says so: "
                          f"if you trust it, pass " + " ".join(f"--trust-remote-code {m}" for m in refused))


def _choose(indices: list[int], shards: list[int] | None, sample: int | None, seed: int) -> list[int]:
    if shards:
        unknown = sorted(set(shards) - set(indices))
        if unknown:
            raise ConfigError(f"--shards {unknown}: the stage has shards 0..{len(indices) - 1}")
        return sorted(set(shards))
    if sample:
        return sorted(random.Random(seed).sample(indices, min(sample, len(indices))))
    return indices


def _place_input(src: Source, manifest: Manifest, layout: RunLayout) -> None:
    """The input stage, exactly as published (at the commit the manifest names), into the scratch run: every
    file checked against the input's manifest as it is fetched."""
    ref = manifest.recipe.input
    assert ref is not None
    input_src = src.at(ref.commit) if isinstance(src, StoreSource) and ref.commit else src
    input_manifest = input_src.manifests().get(ref.stage)
    if input_manifest is None or (input_manifest.fingerprint, input_manifest.content) != (ref.fingerprint, ref.content):
        raise ConfigError(f"the input stage {ref.stage!r} with fingerprint {ref.fingerprint} is not in "
                          f"{input_src.label}: publish it (or regenerate it) first")
    target = layout.data_dir(ref.stage)
    target.mkdir(parents=True, exist_ok=True)
    for info in input_manifest.files().values():
        write_bytes(target / info.file, input_src.file(ref.stage, info).path.read_bytes())
    rec.write(layout.manifest(ref.stage), input_manifest)


def _as_executed(config: RunConfig, manifest: Manifest) -> RunConfig:
    """The config with the engine batch size the published shards recorded: a throughput knob that can still move
    vLLM's numbers on hardware without a batch-invariant mode (rows in flight), so the rebuild uses it too."""
    sizes = {e.get("batch_size") for s in manifest.execution.shards for e in s.engines.values()} - {None}
    if len(sizes) != 1:
        return config
    return config.model_copy(update={"engine": config.engine.model_copy(update={"batch_size": sizes.pop()})})


def _why_not(config, stage: str, manifest: Manifest) -> str:
    cls = STAGES[stage]
    reasons = []
    if cls.version != manifest.recipe.code_version:
        reasons.append(f"the stage's code version is {cls.version} here, {manifest.recipe.code_version} there")
    engine = config.engine.output_relevant()
    if manifest.recipe.engine is not None and engine != manifest.recipe.engine:
        reasons.append(f"the engine settings are {engine} here, {manifest.recipe.engine} there")
    return "; ".join(reasons) or "its prompts or parameter defaults changed in this version of the toolkit"


def _published(src: Source, stage: str, files: dict[str, FileRecord]) -> dict[str, Checked | str]:
    """Each split's published file, fetched and checked (`Source.file`), or what is wrong with it."""
    out: dict[str, Checked | str] = {}
    for split, info in sorted(files.items()):
        try:
            out[split] = src.file(stage, info)
        except VerificationError as exc:
            out[split] = str(exc)
    return out


def _check(src: Source, layout: RunLayout, stage: str, published: dict[str, FileRecord],
           sound: dict[str, Checked | str], record: ShardRecord | None, index: int) -> ShardCheck:
    """Every split of one shard: the rebuilt file against the published one, by the digests recomputed from the
    published bytes (never the manifest's word for them). `record` is None when the shard was not rebuilt."""
    files = []
    for split, info in sorted(published.items()):
        got = sound[split]
        now = record.files.get(split) if record else None
        check = FileCheck(split, info.file, got.sha256 if isinstance(got, Checked) else info.sha256,
                          now.sha256 if now else "missing", got.content if isinstance(got, Checked) else info.content,
                          now.content if now else "missing", (info.writer, now.writer if now else None))
        if not isinstance(got, Checked):
            check.corrupt = got
        elif record is None:
            check.rebuilt = False
        files.append(check)
    check = ShardCheck(index, files)
    for f in files:
        if f.status == "MISMATCH" and not f.corrupt and len(check.first_differences) < 5:
            check.first_differences += _first_differences(src.file(stage, published[f.split]).path,
                                                          layout.data_dir(stage) / f.file)
    return check


def _first_differences(published: Path, now: Path, limit: int = 5) -> list[dict[str, Any]]:
    """The first rows (in published order) that differ, each with its first differing column, by the diff's own
    bit-exact cell comparison (`diffing.rows.column_differs`: a NaN equals a NaN, -0.0 differs from 0.0)."""
    import numpy as np

    from ..diffing.rows import column_differs

    a, b = pq.read_table(published), pq.read_table(now)
    position = {row_id: i for i, row_id in enumerate(b.column("id").to_pylist())}
    ids = a.column("id").to_pylist()
    present = np.array([row_id in position for row_id in ids], dtype=bool)
    taken = b.take(pa.array([position[row_id] for row_id in ids if row_id in position], pa.int64()))
    mine = a.filter(pa.array(present))
    changed = {col: column_differs(mine.column(col), taken.column(col)) if col in taken.column_names
               else np.ones(mine.num_rows, dtype=bool) for col in a.column_names}
    out: list[dict[str, Any]] = []
    j = 0  # index among the rows present on both sides
    for i, row_id in enumerate(ids):
        if not present[i]:
            out.append({"id": row_id, "column": "<row>", "published": "present", "now": "missing"})
        else:
            col = next((c for c in a.column_names if changed[c][j]), None)
            if col is not None:
                out.append({"id": row_id, "column": col, "published": mine.column(col)[j].as_py(),
                            "now": taken.column(col)[j].as_py() if col in taken.column_names else None})
            j += 1
        if len(out) >= limit:
            break
    return out


def _environment_differences(manifest: Manifest, now: list[ShardRecord]) -> list[dict[str, Any]]:
    """The execution fields (engine, device, threads, library versions) of the published shards vs this run."""
    by_index = {s.index: s for s in manifest.execution.shards}
    published: dict[str, Any] = {}
    current: dict[str, Any] = {}
    for record in now:
        shard = by_index.get(record.index)
        if shard is not None:
            published.update(flatten({"engines": shard.engines,
                                      "environment": manifest.execution.environments.get(shard.environment, {})}))
        current.update(flatten({"engines": record.execution.engines, "environment": record.execution.environment}))
    if not now:
        current = flatten({"environment": environment()})
    skip = ("environment.platform",)
    return [{"field": k, "published": published.get(k), "now": current.get(k)}
            for k in sorted(set(published) | set(current))
            if published.get(k) != current.get(k) and not k.endswith(".model") and k not in skip]

