"""Facts about the machine an engine runs on that can move numerics (README: Determinism): the CPU model and the
instruction sets its kernels may use, the GPU and its compute capability, torch's thread count.

Everything here is read from the machine, never timed or sampled, and returned in a fixed order, so the same
machine always reports the same facts (they go into every shard's execution record)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# The CPU flags that decide which kernels BLAS/oneDNN and ATen dispatch to (and so which float results come
# out): vector width, FMA, bf16/int8 dot products, AMX tiles. Reported in this order when present.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


@functools.cache
def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13", "Intel(R) Xeon(R) ..."), or the platform's best guess."""
    for key, value in _cpuinfo_fields():
        if key in ("model name", "Hardware", "cpu model"):
            return value
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def cpu_isa() -> str:
    """The ISA flags from ISA_FLAGS this CPU has, space-separated in ISA_FLAGS order, then the capability
    ATen dispatches its vectorized kernels to (e.g. "aten:AVX512"), which an environment variable can lower."""
    flags: set[str] = set()
    for key, value in _cpuinfo_fields():
        if key in ("flags", "Features"):
            flags.update(value.split())
            break
    present = [f for f in ISA_FLAGS if f in flags]
    try:
        import torch

        present.append(f"aten:{torch.backends.cpu.get_cpu_capability()}")
    except (ImportError, AttributeError):
        pass
    return " ".join(present)


def _cpuinfo_fields() -> list[tuple[str, str]]:
    """(key, value) pairs of the first processor in /proc/cpuinfo (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return []
    fields = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough: the others repeat it
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.append((key.strip(), value.strip()))
    return fields


def gpu_model(index: int = 0) -> str | None:
    """The CUDA device's name, or None without one."""
    import torch

    return torch.cuda.get_device_name(index) if torch.cuda.is_available() else None


def gpu_capability(index: int = 0) -> tuple[int, int] | None:
    """The CUDA device's compute capability (major, minor), or None without one."""
    import torch

    return tuple(torch.cuda.get_device_capability(index)) if torch.cuda.is_available() else None  # type: ignore[return-value]


def rocm_arch(index: int = 0) -> str:
    """An AMD GPU's architecture (gfx942), or "" without one."""
    import torch

    if not (torch.cuda.is_available() and getattr(torch.version, "hip", None)):
        return ""
    return str(getattr(torch.cuda.get_device_properties(index), "gcnArchName", "")).split(":")[0]


def device_model(device: str) -> str:
    """What to record as a device's model: the GPU's name with its compute capability on CUDA, the CPU's
    model name on CPU."""
    if device == "cuda":
        capability = gpu_capability()
        name = gpu_model() or "unknown GPU"
        return f"{name} (sm_{capability[0]}{capability[1]})" if capability else name
    return cpu_model()
