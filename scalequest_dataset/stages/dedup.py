"""Exact-duplicate removal on normalised question text: our addition, not the paper's (the released code
has no dedup step). A question is kept iff its id is the lowest (string order) among the questions with the
same normalised text.

Deciding this needs the whole input, not one shard: at plan time `prepare(batches)` streams every input
shard once and keeps only the texts that occur more than once, as 16-byte digests mapped to the id that is
kept. The plan persists that table, so every worker (on any node) decides its shards alone."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..recipe.params import Strict
from .base import DEPARTURE, Note, ShardResult, Stage, StageContext, with_drop_reason
from .questions import QUESTION_FEATURES

DIGEST_BYTES = 16
_SPACE = re.compile(r"\s+")


def normalize_question(text: str) -> str:
    """NFKC, case-folded (NFKC again: case folding can leave text un-normalised), whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _SPACE.sub(" ", folded).strip()


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(normalize_question(text).encode("utf-8"), digest_size=DIGEST_BYTES).digest()


INDEX_SCHEMA = pa.schema([("digest", pa.binary(DIGEST_BYTES)), ("id", pa.string())])


def text_ids(batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """(digest of the normalised text, id) of every row of these batches: about 16 bytes + the id per row."""
    parts = [pa.table({"digest": pa.array([text_digest(q or "") for q in batch.column("query").to_pylist()],
                                          pa.binary(DIGEST_BYTES)), "id": batch.column("id")}) for batch in batches]
    return pa.concat_tables(parts) if parts else INDEX_SCHEMA.empty_table()


def build_index(parts: list[pa.Table]) -> pa.Table:
    """(digest, the lowest id) for the texts more than one row of all the parts holds, sorted by digest: the same
    whatever the parts. By sorting (digest, then id: a run's first row holds its lowest id), not Arrow's hash
    aggregation, whose hash tables took ~400 MB for 800k rows (issue 22)."""
    table = pa.concat_tables(parts)
    if not table.num_rows:
        return INDEX_SCHEMA.empty_table()
    table = table.take(pc.sort_indices(table, sort_keys=[("digest", "ascending"), ("id", "ascending")]))
    digests = table["digest"].combine_chunks()
    words = np.frombuffer(digests.buffers()[1], dtype=np.uint64, count=2 * len(digests),
                          offset=digests.offset * DIGEST_BYTES).reshape(-1, 2)
    first = np.ones(len(words), dtype=bool)  # where a run of equal digests starts
    first[1:] = (words[1:] != words[:-1]).any(axis=1)
    starts = np.flatnonzero(first)
    picked = pa.array(starts[np.diff(starts, append=len(words)) > 1])  # runs of more than one row
    return pa.table({"digest": digests.take(picked), "id": table["id"].take(picked)}, schema=INDEX_SCHEMA)


class Params(Strict):
    """Exact duplicates of normalised question text (NFKC, case-folded, collapsed whitespace); keeps the lowest
    id. Our addition: the paper and its released code have no dedup step."""

    normalize: Literal["nfkc-casefold-space"] = "nfkc-casefold-space"


class DedupStage(Stage):
    name = "dedup"
    statistics: ClassVar[dict[str, str]] = {"duplicate_of": "id"}  # the diff's statistics (diffing/stats.py)

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        return [(DEPARTURE, "ours: neither the paper nor its released code deduplicates (an exact-text grouping "
                            "exists only in the repository's pre-release history). Exact duplicates of normalised "
                            "question text (NFKC, case-folded, whitespace collapsed) are removed, the lowest id kept")]
    version = "2"
    description = "Questions with exact duplicates (normalised text) removed; the lowest id of each text is kept."
    Params = Params
    reads = ("id", "query")
    features = QUESTION_FEATURES
    dropped_features = with_drop_reason(QUESTION_FEATURES, duplicate_of=datasets.Value("string"))
    row_local = False  # a row's fate depends on every other row

    def __init__(self, config, models=None) -> None:
        super().__init__(config, models)
        self.kept_ids: dict[bytes, str] | None = None

    def prepare_part(self, batches: Iterable[pa.RecordBatch]) -> pa.Table:
        """The global pass over a part of the input: every row's text digest and id."""
        return text_ids(batches)

    def prepare_merge(self, parts: list[pa.Table]) -> pa.Table:
        return build_index(parts)

    def load_prepared(self, table: pa.Table) -> None:
        self.kept_ids = dict(zip(table["digest"].to_pylist(), table["id"].to_pylist(), strict=True))

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
                dropped.append({**row, "drop_reason": "duplicate", "drop_detail": None, "duplicate_of": first})
        ctx.report(len(rows))
        return ShardResult(kept, dropped)
