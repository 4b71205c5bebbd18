"""Row ids and per-row seeds: the determinism contract (README: Determinism).

Ids come from lineage, never from a row's position in a batch or a worker. Seeds come from a
cryptographic hash of a canonical string, so they are the same in every process, on every machine,
whatever PYTHONHASHSEED is.
"""

from __future__ import annotations

import hashlib
import re

SEED_BITS = 63
_GENERATOR_NAME = re.compile(r"^[a-z0-9][a-z0-9_.]*(-[a-z0-9_.]+)*$")


def validate_generator_name(name: str) -> str:
    """Generator names become id prefixes: lower-case, no spaces, no trailing dash."""
    if not _GENERATOR_NAME.match(name):
        raise ValueError(
            f"generator name {name!r} is not allowed: use lower-case letters, digits, '.', '_' "
            "and single '-' between them (it becomes the prefix of every row id)"
        )
    return name


def question_id(generator: str, index: int) -> str:
    """Raw question id: ``"{generator}-{index:08d}"``."""
    if index < 0:
        raise ValueError(f"question index must be >= 0, got {index}")
    return f"{generator}-{index:08d}"


def response_id(question: str, k: int) -> str:
    """Response id: ``"{question_id}-r{k}"``."""
    if k < 0:
        raise ValueError(f"response sample k must be >= 0, got {k}")
    return f"{question}-r{k}"


def derive_seed(run_seed: int, stage: str, row_id: str, k: int = 0) -> int:
    """A 63-bit seed for one random draw of one row in one stage.

    BLAKE2b over a canonical, unambiguous string (fields joined with a separator that cannot occur in
    them), cut to 63 bits so that it fits a signed 64-bit integer (vLLM, torch and OpenAI ``seed``).
    """
    canonical = "\x1f".join(["scalequest-seed-v1", str(int(run_seed)), stage, row_id, str(int(k))])
    digest = hashlib.blake2b(canonical.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def uniform(run_seed: int, stage: str, row_id: str, k: int = 0) -> float:
    """A seeded uniform draw in [0, 1) for a sampling decision about one row (order- and shard-invariant)."""
    return derive_seed(run_seed, stage, row_id, k) / float(1 << SEED_BITS)
