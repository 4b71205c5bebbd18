"""How many bytes of a v2 the Hub would not store again: a chunk-level comparison of two sets of files, the way
xet storage deduplicates (content-defined chunks of the file bytes, a gear rolling hash, ~64 KiB average chunks
between 8 KiB and 128 KiB; a chunk already stored is not uploaded again). An estimate at xet's parameters, not
the Hub's own accounting: the chunk boundaries follow the same rule, not necessarily the same hash table."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MIN_CHUNK, MAX_CHUNK, TARGET_BITS = 8 * 1024, 128 * 1024, 16
_GEAR = np.random.default_rng(0x5EED).integers(0, 2**64, 256, dtype=np.uint64)
_MASK = np.uint64(((1 << TARGET_BITS) - 1) << (64 - TARGET_BITS))  # the top bits, as xet tests them


def _candidates(data: bytes) -> np.ndarray:
    """Positions where the gear hash (h = (h << 1) + G[byte], so only the last 64 bytes count) hits the mask.
    Computed for all positions at once: h_i = sum over k < 64 of G[b_{i-k}] << k."""
    g = _GEAR[np.frombuffer(data, dtype=np.uint8)]
    h = np.zeros(len(g), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(64):
            h[k:] += g[: len(g) - k] << np.uint64(k)
    return np.flatnonzero((h & _MASK) == 0) + 1  # a cut after the byte that hit


def chunks(data: bytes) -> list[bytes]:
    cuts, start = [], 0
    for pos in _candidates(data):
        while pos - start > MAX_CHUNK:
            start += MAX_CHUNK
            cuts.append(start)
        if pos - start >= MIN_CHUNK:
            cuts.append(int(pos))
            start = int(pos)
    while len(data) - start > MAX_CHUNK:
        start += MAX_CHUNK
        cuts.append(start)
    bounds = [0, *cuts, len(data)] if not cuts or cuts[-1] != len(data) else [0, *cuts]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def chunk_set(paths: Iterable[Path]) -> set[bytes]:
    return {hashlib.sha256(c).digest() for p in paths for c in chunks(Path(p).read_bytes())}


def dedup(old: Iterable[Path], new: Iterable[Path]) -> dict[str, int]:
    """Bytes of `new` and how many of them are in chunks `old` already has."""
    known = chunk_set(old)
    total = shared = 0
    for p in new:
        for c in chunks(Path(p).read_bytes()):
            total += len(c)
            if hashlib.sha256(c).digest() in known:
                shared += len(c)
    return {"bytes": total, "dedup_bytes": shared, "new_bytes": total - shared}
