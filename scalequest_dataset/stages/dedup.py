"""Exact-duplicate removal on normalised question text (not in the paper: the released selection grouped
rows by exact question text, which merged exact duplicates). A question is kept iff its id is the lowest
(string order) among the questions with the same normalised text.

Deciding this needs the whole input, not one shard: the executor calls `prepare(batches)` with every input
shard's rows, in every worker, before it processes any shard. `prepare` keeps only the texts that occur
more than once, as 16-byte digests mapped to the id that is kept, so a shard then decides alone."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from .base import ShardResult, Stage, StageContext, with_drop_reason
from .questions import QuestionsStage

DIGEST_BYTES = 16
_SPACE = re.compile(r"\s+")


def normalize_question(text: str) -> str:
    """NFKC, case-folded (NFKC again: case folding can leave text un-normalised), whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _SPACE.sub(" ", folded).strip()


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(normalize_question(text).encode("utf-8"), digest_size=DIGEST_BYTES).digest()


def build_index(batches: Iterable[pa.RecordBatch]) -> dict[bytes, str]:
    """Digest -> the lowest id, for digests seen more than once. Arrow does the grouping, so memory is about
    (16 bytes + id) per input row while building, then only the duplicated texts."""
    parts = []
    for batch in batches:
        digests = [text_digest(q or "") for q in batch.column("query").to_pylist()]
        parts.append(pa.table({"digest": pa.array(digests, pa.binary(DIGEST_BYTES)), "id": batch.column("id")}))
    if not parts:
        return {}
    groups = pa.concat_tables(parts).group_by("digest").aggregate([("id", "min"), ("id", "count")])
    groups = groups.filter(pc.greater(groups["id_count"], 1))
    return dict(zip(groups["digest"].to_pylist(), groups["id_min"].to_pylist(), strict=True))


class DedupStage(Stage):
    name = "dedup"
    version = "1"
    input = "language"
    description = "Questions with exact duplicates (normalised text) removed; the lowest id of each text is kept."
    features = QuestionsStage.features
    dropped_features = with_drop_reason(QuestionsStage.features, duplicate_of=datasets.Value("string"))

    def __init__(self, config) -> None:
        super().__init__(config)
        self.kept_ids: dict[bytes, str] | None = None

    def prepare(self, batches: Iterable[pa.RecordBatch]) -> None:
        """The global pass over the whole input (every `train` shard of the input stage, in order)."""
        self.kept_ids = build_index(batches)

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if self.kept_ids is None:
            raise RuntimeError("stage 'dedup' needs its global pass: call prepare(batches) with the whole "
                               "input before processing a shard")
        kept, dropped = [], []
        for row in rows:
            first = self.kept_ids.get(text_digest(row["query"] or ""))
            if first is None or first == row["id"]:
                kept.append(row)
            else:
                dropped.append({**row, "drop_reason": "duplicate", "duplicate_of": first})
        ctx.report(len(rows))
        return ShardResult(kept, dropped)
