"""Benchmark decontamination: word n-gram overlap of every question with benchmark test sets. Our addition: the
paper only measured 13-gram overlap with its test sets (its Table 6) and filtered nothing.

Normalisation, one function (`words`) for both sides: NFKC, case folding, NFKC again (dedup's
`normalize_question`), then the maximal runs of word characters (`\\w+`: letters, digits, underscore), so
punctuation, LaTeX symbols and whitespace only separate words ("$x^2+1$" -> x, 2, 1). An n-gram is n consecutive
words of one text (a question, or one text column of a benchmark item): it never spans two columns or two
questions. A text of fewer than n words has no n-gram, so it cannot overlap; the report counts such items.

Everything that needs the whole input runs once, at plan time (`prepare`):
1. each benchmark is loaded with `datasets.load_dataset` at the revision the plan pinned (a Hub commit resolved
   like a model's, or a local file's sha256), and its n-grams are indexed as 64-bit hashes in one sorted numpy
   array (8 bytes per n-gram, plus postings to confirm a hit);
2. the questions stream through batch by batch: a hash hit is confirmed word for word (a hash collision never
   makes a match), and only matching questions are kept in memory.
An n-gram that more than `max_items_per_ngram` benchmark items share is boilerplate ("... express your answer
as a common fraction in lowest terms"), not a leak: it is left out of the index, so it flags nothing, and the
report counts such n-grams. (Indexed, it made one hit per position x item: 2.0 GB after 8.5k questions that end in
it, issue 22.) A question holds at most that many items per n-gram, and is reduced to its first hit, its
benchmarks and its items as it is scanned, so memory stays flat however heavy the overlap.
The prepared table (state/decontamination/prepared.parquet, next to the plan) holds one row per matching
question and, in its schema metadata, the report: per benchmark the Table 6 figures (items, clean ratio =
share of items with no n-gram in any question, the matched items). Workers read only that table: no Hub, no
benchmark, and the same decision for a row whatever the shard cut or the worker count."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from ..recipe.model_identity import ResolvedModel, as_written, hub_commit
from ..recipe.params import ConfigError, Strict, canonical_json
from ..run.files import sha256_file
from .base import DEPARTURE, GAP, Note, ShardResult, Stage, StageContext, with_drop_reason
from .dedup import normalize_question
from .questions import QUESTION_FEATURES

NORMALIZATION = "nfkc-casefold-words"
REPORT_KEY = b"scalequest.decontamination"  # the report's key in the prepared table's schema metadata
_WORD = re.compile(r"\w+")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash of an n-gram over its words' hashes
_FILE_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def words(text: str | None) -> list[str]:
    """The words of a text as both sides see them: NFKC, case-folded, split into runs of word characters."""
    return _WORD.findall(normalize_question(text or ""))


def word_hashes(tokens: Sequence[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
                     for t in tokens], dtype=np.uint64)


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """The hash of every window of n consecutive word hashes: sum of h[i + j] * M^(n - 1 - j), mod 2^64 (Horner's
    rule over shifted views: n passes, no window-by-n temporary)."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    out = np.zeros(count, dtype=np.uint64)
    for j in range(n):
        out = out * _MULTIPLIER + hashes[j : j + count]  # uint64 array arithmetic wraps: mod 2^64
    return out


# ---------------------------------------------------------------------------------------------- parameters


class Benchmark(Strict):
    """One benchmark test set: a Hub dataset (`repo`, `config`, `split`, `revision`: a branch, tag or commit,
    pinned to a commit at plan time) or a local JSONL/Parquet file (`path`, identified by its sha256). Items
    are rows; `columns` are the text fields compared; an item's id is its `id_column`, else its row index
    (`config/index` when several configs are read)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    repo: str | None = None
    config: str | list[str] | None = None
    split: str = "test"
    path: str | None = None
    columns: list[str] = Field(min_length=1)
    id_column: str | None = None
    revision: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Benchmark:
        if (self.repo is None) == (self.path is None):
            raise ValueError("give exactly one of `repo` (a Hub dataset) or `path` (a local .jsonl/.parquet file)")
        if self.path is not None:
            if self.revision is not None or self.config is not None:
                raise ValueError("a local file has no `revision` or `config`: it is identified by its sha256")
            if Path(self.path).suffix not in _FILE_SUFFIXES:
                raise ValueError(f"`path` must end in one of {', '.join(sorted(_FILE_SUFFIXES))}")
        return self

    def configs(self) -> list[str | None]:
        return list(self.config) if isinstance(self.config, list) else [self.config]

    def source(self) -> str:
        """The pinned identity's id: where the benchmark comes from."""
        return f"hf://datasets/{self.repo}" if self.repo is not None else f"file:{self.path}"


class Params(Strict):
    """Word n-gram overlap of each question with benchmark test sets (our addition; the paper measured 13-gram
    overlap, Table 6, and removed nothing). `report` annotates rows; `remove` moves overlapping questions to
    `dropped`. Text is normalised the same way on both sides (NFKC, case-folded, runs of word characters)."""

    mode: Literal["report", "remove"] = "report"
    ngram: int = Field(13, ge=1)
    # Ours: an n-gram shared by more benchmark items than this is boilerplate and flags nothing (see the module).
    max_items_per_ngram: int = Field(32, ge=1)
    normalize: Literal["nfkc-casefold-words"] = NORMALIZATION
    benchmarks: list[Benchmark] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Params:
        names = [b.name for b in self.benchmarks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"benchmark names must be unique, repeated: {dupes}")
        return self


def role(benchmark: Benchmark) -> str:
    return f"benchmark:{benchmark.name}"


# ---------------------------------------------------------------------------------------------- pinning, loading


def resolve_benchmark(benchmark: Benchmark, field: str) -> ResolvedModel:
    """Pin a benchmark like a model (plan time): a Hub dataset to the commit its revision points to, a local file
    to its content."""
    if benchmark.path is not None:
        path = Path(benchmark.path).expanduser()
        if not path.is_file():
            raise ConfigError(f"{field}.path: {benchmark.path!r} is not a file")
        return ResolvedModel(benchmark.source(), "sha256:" + sha256_file(path), str(path))
    assert benchmark.repo is not None
    return ResolvedModel(benchmark.source(), hub_commit(benchmark.repo, benchmark.revision, field, "dataset"),
                         benchmark.repo)


@dataclass
class LoadedBenchmark:
    """A benchmark's items as loaded: ids and, per item, the text of each compared column."""

    spec: Benchmark
    revision: str
    ids: list[str]
    texts: list[list[str]]

    def digest(self) -> str:
        """Of the items as loaded (ids and texts): the same revision must give the same digest."""
        return "sha256:" + hashlib.sha256(canonical_json([self.ids, self.texts]).encode("utf-8")).hexdigest()


def load_benchmark(benchmark: Benchmark, pinned: ResolvedModel, field: str, simulated: bool = False
                   ) -> LoadedBenchmark:
    """The benchmark's items through `datasets.load_dataset`, at the pinned revision (a local file must still
    have the content the plan pinned). `simulated`: a Hub dataset's items from the simulate engine (its size as
    the real test set's, one text column)."""
    if benchmark.path is None and simulated:
        from ..engines.simulate import BENCHMARK_SIZES, benchmark_items

        texts = benchmark_items(benchmark.source(), BENCHMARK_SIZES.get(benchmark.repo or "", 1000))
        return LoadedBenchmark(benchmark, pinned.revision, [str(i) for i in range(len(texts))],
                               [[t] for t in texts])
    if benchmark.path is not None:
        path = Path(benchmark.path).expanduser()
        found = "sha256:" + sha256_file(path) if path.is_file() else "missing"
        if found != pinned.revision:
            raise ConfigError(f"{field}.path: {benchmark.path} has content {found}, but the run was planned with "
                              f"{pinned.revision}: restore it, or start a new run")
        parts = [(None, _load_file(path, f"{field}.path"))]
    else:
        parts = [(config, datasets.load_dataset(benchmark.repo, config, split=benchmark.split,
                                                revision=pinned.revision))
                 for config in benchmark.configs()]
    several = len(parts) > 1
    ids: list[str] = []
    texts: list[list[str]] = []
    for config, ds in parts:
        wanted = [*benchmark.columns, *([benchmark.id_column] if benchmark.id_column else [])]
        missing = [c for c in wanted if c not in ds.column_names]
        if missing:
            raise ConfigError(f"{field}: {benchmark.source()} ({config or 'default'}, {benchmark.split}) has no "
                              f"column {', '.join(missing)} (it has {', '.join(ds.column_names)})")
        data = ds.select_columns(wanted).to_dict()
        for i in range(ds.num_rows):
            local = str(data[benchmark.id_column][i]) if benchmark.id_column else str(i)
            ids.append(f"{config}/{local}" if several else local)
            texts.append([str(data[c][i] or "") for c in benchmark.columns])
    if not ids:
        raise ConfigError(f"{field}: {benchmark.source()} has no items")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{field}: item ids are not unique (id_column {benchmark.id_column!r})")
    return LoadedBenchmark(benchmark, pinned.revision, ids, texts)


def _load_file(path: Path, field: str) -> datasets.Dataset:
    """A local benchmark file through `datasets`; an empty, non-UTF-8 or malformed one is a ConfigError naming it
    (the user's input, not a failure of ours)."""
    if path.stat().st_size == 0:
        raise ConfigError(f"{field}: {path} is empty (a benchmark needs items)")
    builder = _FILE_SUFFIXES[path.suffix]
    if builder == "json":  # datasets' JSON reader would fail deep inside on bytes that are not text
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ConfigError(f"{field}: {path} line {number} is not UTF-8 text (byte {exc.start + 1}: "
                                      f"{line[exc.start:exc.start + 1]!r})") from None
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # the reader's own error, said in one line naming the file
        cause = exc.__cause__ or exc
        first = (str(cause).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"{field}: {path} cannot be read as {builder} ({type(cause).__name__}: {first})") from exc


# ---------------------------------------------------------------------------------------------- index and scan


@dataclass(frozen=True)
class Hit:
    benchmark: int  # position in the config's benchmark list
    item: int
    position: int  # of the n-gram's first word in the question


class NgramIndex:
    """Every n-gram of every benchmark item, as sorted 64-bit hashes with postings (the text segment and the
    word position it starts at), so a hit is confirmed against the benchmark's own words."""

    def __init__(self, benchmarks: Sequence[LoadedBenchmark], n: int, max_items: int | None = None) -> None:
        self.n = n
        self.segments: list[tuple[int, int, list[str]]] = []  # (benchmark, item, words) per text column
        self.short = [0] * len(benchmarks)  # items with no n-gram at all
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for b, bench in enumerate(benchmarks):
            for i, fields in enumerate(bench.texts):
                grams = 0
                for text in fields:
                    tokens = words(text)
                    hashes = ngram_hashes(word_hashes(tokens), n)
                    if len(hashes):
                        segment = np.full(len(hashes), len(self.segments), dtype=np.int64)
                        parts.append((hashes, segment, np.arange(len(hashes), dtype=np.int64)))
                        self.segments.append((b, i, tokens))
                        grams += len(hashes)
                self.short[b] += grams == 0
        hashes, segments, positions = (np.concatenate([p[k] for p in parts]) if parts else np.empty(0, np.int64)
                                       for k in range(3))
        order = np.lexsort((positions, segments, hashes))  # by hash, then segment and position: one order
        hashes, segments, positions = hashes[order].astype(np.uint64), segments[order], positions[order]
        self.boilerplate: list[str] = []  # n-grams shared by more than max_items items, left out
        if max_items is not None and len(hashes):
            keep = self._not_boilerplate(hashes, segments, positions, max_items)
            hashes, segments, positions = hashes[keep], segments[keep], positions[keep]
        self.hashes = hashes
        self.posting_segment = segments
        self.posting_position = positions
        self.unique = np.unique(self.hashes)
        self._confirmed: dict[tuple[str, ...], tuple[tuple[int, int], ...]] = {}

    def _not_boilerplate(self, hashes: np.ndarray, segments: np.ndarray, positions: np.ndarray, max_items: int
                         ) -> np.ndarray:
        """A mask of the postings to keep: those of n-grams held by at most `max_items` distinct items (counted
        by hash; the words of each boilerplate n-gram are kept for the report)."""
        owner = np.array([b * (1 << 32) + i for b, i, _ in self.segments], dtype=np.int64)[segments]
        pairs = np.lexsort((owner, hashes))
        h, o = hashes[pairs], owner[pairs]
        distinct = np.ones(len(h), dtype=bool)
        distinct[1:] = (h[1:] != h[:-1]) | (o[1:] != o[:-1])
        values, counts = np.unique(h[distinct], return_counts=True)
        common = values[counts > max_items]
        if not len(common):
            return np.ones(len(hashes), dtype=bool)
        for value in common:
            k = int(np.searchsorted(hashes, value))
            seg_words = self.segments[segments[k]][2]
            self.boilerplate.append(" ".join(seg_words[positions[k] : positions[k] + self.n]))
        self.boilerplate.sort()
        return ~np.isin(hashes, common)

    def lookup(self, tokens: list[str], position: int, value: np.uint64) -> tuple[tuple[int, int], ...]:
        """The (benchmark, item) pairs holding the question's n-gram at `position` word for word."""
        gram = tuple(tokens[position : position + self.n])
        if gram not in self._confirmed:  # boilerplate n-grams recur: confirm each distinct one once
            lo = int(np.searchsorted(self.hashes, value, side="left"))
            hi = int(np.searchsorted(self.hashes, value, side="right"))
            found = set()
            for k in range(lo, hi):
                b, i, seg_words = self.segments[self.posting_segment[k]]
                start = self.posting_position[k]
                if tuple(seg_words[start : start + self.n]) == gram:
                    found.add((b, i))
            self._confirmed[gram] = tuple(sorted(found))
        return self._confirmed[gram]

    def hits(self, texts: Sequence[str | None]) -> tuple[list[list[str]], list[list[Hit]]]:
        """Every confirmed hit of every question of a batch, with the questions' words (for tests: the scan
        reduces each question as it goes, `matches`)."""
        tokens, found = [words(t) for t in texts], [[] for _ in texts]
        for q, position, pairs in self._candidates(tokens):
            found[q].extend(Hit(b, i, position) for b, i in pairs)
        return tokens, found

    def matches(self, texts: Sequence[str | None]) -> Iterator[tuple[int, list[str], Match]]:
        """For each question of a batch that shares an n-gram with an item: its index, its words, and its first
        hit (first benchmark, earliest n-gram, lowest item), its benchmarks and its (benchmark, item) pairs. Only
        one question's hits are held at a time."""
        tokens = [words(t) for t in texts]
        current, match = -1, None
        for q, position, pairs in self._candidates(tokens):
            if q != current:
                if match is not None:
                    yield current, tokens[current], match
                current, match = q, Match()
            match.add(position, pairs)
        if match is not None:
            yield current, tokens[current], match

    def _candidates(self, tokens: list[list[str]]) -> Iterator[tuple[int, int, tuple[tuple[int, int], ...]]]:
        """(question, position, confirmed (benchmark, item) pairs) for every n-gram of the batch found in the
        index, in question then position order. Hashing is vectorised over the batch; a window that would cross
        from one question into the next is never looked up."""
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        flat = word_hashes([w for t in tokens for w in t])
        grams = ngram_hashes(flat, self.n)
        if not len(grams) or not len(self.unique):
            return
        owner = np.repeat(np.arange(len(tokens)), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        inside = owner[: len(grams)] == owner[self.n - 1 :]
        at = np.minimum(np.searchsorted(self.unique, grams), len(self.unique) - 1)
        candidates = np.flatnonzero(inside & (self.unique[at] == grams))
        for p in candidates:
            q = int(owner[p])
            position = int(p - starts[q])
            pairs = self.lookup(tokens[q], position, grams[p])
            if pairs:
                yield q, position, pairs


@dataclass
class Match:
    """One question's overlap, reduced as its hits arrive: the first hit, the benchmarks, the items."""

    first: Hit | None = None
    items: set[tuple[int, int]] = field(default_factory=set)

    def add(self, position: int, pairs: tuple[tuple[int, int], ...]) -> None:
        b, i = min(pairs)  # pairs share the position: the first benchmark, its lowest item
        best = Hit(b, i, position)
        if self.first is None or (best.benchmark, best.position, best.item) < (
                self.first.benchmark, self.first.position, self.first.item):
            self.first = best
        self.items.update(pairs)


class OverlapScan:
    """Streams the questions against the index: keeps the matching questions and, per benchmark item, how many
    questions share an n-gram with it and the lowest such question id (both independent of the input's order)."""

    def __init__(self, benchmarks: Sequence[LoadedBenchmark], index: NgramIndex, max_items: int | None = None
                 ) -> None:
        self.benchmarks = benchmarks
        self.index: NgramIndex | None = index
        self.max_items = max_items
        # what the report needs of the index, kept when a part drops it to cross to another process
        self.n, self.short, self.boilerplate = index.n, index.short, index.boilerplate
        self.questions = 0
        self.matches: list[dict[str, Any]] = []
        self.item_questions = [np.zeros(len(b.ids), dtype=np.int64) for b in benchmarks]
        self.item_first: list[dict[int, str]] = [{} for _ in benchmarks]

    def part(self) -> OverlapScan:
        """This scan without its index (large, and the same in every process): a part to `absorb` elsewhere."""
        self.index = None
        return self

    def absorb(self, other: OverlapScan) -> None:
        """Another part of the input's scan, against the same benchmarks: counts add up, first ids take the
        lowest, matches join (sorted by id in `table`), so the result does not depend on how the input was cut."""
        assert [b.digest() for b in other.benchmarks] == [b.digest() for b in self.benchmarks]
        self.questions += other.questions
        self.matches.extend(other.matches)
        for b, counts in enumerate(other.item_questions):
            self.item_questions[b] += counts
            for i, qid in other.item_first[b].items():
                if i not in self.item_first[b] or qid < self.item_first[b][i]:
                    self.item_first[b][i] = qid

    def add(self, ids: Sequence[str], texts: Sequence[str | None]) -> None:
        assert self.index is not None, "a part's scan takes no more rows"
        self.questions += len(ids)
        for q, tokens, match in self.index.matches(texts):
            self._record(ids[q], tokens, match)

    def _record(self, qid: str, tokens: list[str], match: Match) -> None:
        first = match.first  # first benchmark, earliest n-gram, lowest item
        assert first is not None
        names = [b.spec.name for b in self.benchmarks]
        self.matches.append({
            "id": qid, "benchmark": names[first.benchmark], "item": self.benchmarks[first.benchmark].ids[first.item],
            "ngram": " ".join(tokens[first.position : first.position + self.n]),
            "benchmarks": [names[b] for b in sorted({b for b, _ in match.items})]})
        for b, i in sorted(match.items):
            self.item_questions[b][i] += 1
            if i not in self.item_first[b] or qid < self.item_first[b][i]:
                self.item_first[b][i] = qid

    def report(self) -> dict[str, Any]:
        out = []
        for b, bench in enumerate(self.benchmarks):
            matched = [int(i) for i in np.flatnonzero(self.item_questions[b])]
            items = len(bench.ids)
            out.append({
                "name": bench.spec.name, "source": bench.spec.source(), "config": bench.spec.config,
                "split": bench.spec.split if bench.spec.repo else None, "columns": bench.spec.columns,
                "revision": bench.revision, "digest": bench.digest(), "items": items,
                "short_items": self.short[b], "clean": items - len(matched),
                "clean_ratio": (items - len(matched)) / items,
                "questions": sum(1 for m in self.matches if bench.spec.name in m["benchmarks"]),
                "matched": [{"item": bench.ids[i], "questions": int(self.item_questions[b][i]),
                             "first": self.item_first[b][i]} for i in matched],
            })
        return {"ngram": self.n, "normalize": NORMALIZATION, "questions": self.questions,
                "contaminated": len(self.matches), "benchmarks": out,
                "boilerplate": {"max_items_per_ngram": self.max_items, "ngrams": len(self.boilerplate),
                                "examples": self.boilerplate[:5]}}

    def table(self) -> pa.Table:
        rows = sorted(self.matches, key=lambda m: m["id"])
        table = pa.Table.from_pylist(rows, schema=PREPARED_SCHEMA)
        return table.replace_schema_metadata({REPORT_KEY: canonical_json(self.report()).encode("utf-8")})


PREPARED_SCHEMA = pa.schema([("id", pa.string()), ("benchmark", pa.string()), ("item", pa.string()),
                             ("ngram", pa.string()), ("benchmarks", pa.list_(pa.string()))])


def read_report(table: pa.Table) -> dict[str, Any] | None:
    """The per-benchmark report a prepared table carries (what a manifest or the card shows)."""
    meta = table.schema.metadata or {}
    return json.loads(meta[REPORT_KEY]) if REPORT_KEY in meta else None


# ---------------------------------------------------------------------------------------------- the stage


CONTAMINATION_COLUMNS = {
    "contamination_benchmark": datasets.Value("string"),  # the first benchmark (config order) it overlaps
    "contamination_item": datasets.Value("string"),  # that benchmark's item
    "contamination_ngram": datasets.Value("string"),  # the question's first shared n-gram, normalised words
    "contamination_benchmarks": datasets.Sequence(datasets.Value("string")),  # every benchmark it overlaps
}


# The card's "Benchmark overlap" section (the paper's Table 6), rendered with `overlap` (DecontaminationStage.card_section).
CARD_SECTION = """## Benchmark overlap

Word {{ overlap.n }}-gram overlap of the {{ "{:,}".format(overlap.questions) }} questions entering stage `decontamination`
with each benchmark's test items, as the paper's Table 6: an item is clean when none of its {{ overlap.n }}-grams occurs
in any question (an item shorter than {{ overlap.n }} words has none). {{ "{:,}".format(overlap.contaminated) }} questions
share an n-gram with some benchmark; {% if overlap.mode == "remove" %}they were removed (the `dropped` split of
`decontamination`).{% else %}none was removed (columns `contamination_*` of `decontamination` name the benchmark, the
item and the n-gram).{% endif %} Later stages only remove questions, so the final config overlaps no more than this.

| benchmark | source | revision | items | clean | clean ratio | matched items | questions | shorter than n |
|---|---|---|---:|---:|---:|---:|---:|---:|
{% for b in overlap.rows -%}
| `{{ b.name }}` | `{{ b.source }}`{% if b.where %} ({{ b.where }}){% endif %} | `{{ b.revision }}` | {{ "{:,}".format(b.size) }} | {{ "{:,}".format(b.clean) }} | {{ b.ratio }} | {{ "{:,}".format(b.matched) }} | {{ "{:,}".format(b.questions) }} | {{ "{:,}".format(b.short) }} |
{% endfor %}
The paper (Table 6, 13-grams, on its released data): GSM8K 99.9 %, MATH 92.8 %, College Math 99.8 %,
OlympiadBench 97.2 % clean.
{% for b in overlap.rows if b.matched %}
- `{{ b.name }}` matched items: {{ b.examples }}
{%- endfor %}

"""


def overlap_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The decontamination report as the card's rows (the paper's Table 6, with the matched items)."""
    rows = []
    for b in report["benchmarks"]:
        config = f"{len(b['config'])} configs" if isinstance(b.get("config"), list) else b.get("config")
        where = ", ".join(x for x in (config, b.get("split")) if x)
        rows.append({
            "name": b["name"], "source": b["source"].removeprefix("hf://datasets/"), "where": where,
            "revision": b["revision"].removeprefix("sha256:")[:12], "size": b["items"], "clean": b["clean"],
            "ratio": f"{100 * b['clean_ratio']:.2f} %", "matched": len(b["matched"]), "questions": b["questions"],
            "short": b["short_items"],
            "examples": ", ".join(f"`{m['item']}`" for m in b["matched"][:8]) + (", ..." if len(b["matched"]) > 8 else ""),
        })
    return rows


class DecontaminationStage(Stage):
    name = "decontamination"

    @classmethod
    def card_section(cls, manifest: Any) -> tuple[str, dict[str, Any]] | None:
        report = manifest.report
        if report is None:
            return None
        return CARD_SECTION, {"overlap": {"n": report["ngram"], "questions": report["questions"],
                                          "contaminated": report["contaminated"],
                                          "mode": manifest.recipe.params.get("mode"), "rows": overlap_table(report)}}

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        names = ", ".join(b["name"] for b in p.get("benchmarks") or [])
        what = ("overlapping questions are marked, none removed (as the paper's data)" if p.get("mode") == "report"
                else "overlapping questions are removed (`dropped`, reason `contaminated`)")
        return [(DEPARTURE, f"ours: the paper only measured 13-gram overlap with test sets (its Table 6) and "
                            f"filtered nothing. Word {p.get('ngram')}-grams of every question against {names}: "
                            f"{what}; see Benchmark overlap"),
                (GAP, "the overlap's text normalisation, which the paper does not state: NFKC, case-folded, runs "
                      "of word characters, the same for questions and benchmark items")]
    version = "2"  # 2: n-grams shared by more than max_items_per_ngram items are boilerplate (flag nothing)
    description = ("Questions checked for word n-gram overlap with benchmark test sets; in `remove` mode the "
                   "overlapping ones are in `dropped`.")
    Params = Params
    reads = ("id", "query")
    features = QUESTION_FEATURES
    dropped_features = with_drop_reason(QUESTION_FEATURES, **CONTAMINATION_COLUMNS)
    row_local = False  # decided from the whole input's pass (and its report covers every row)

    def __init__(self, config, models=None) -> None:
        super().__init__(config, models)
        self.matches: dict[str, dict[str, Any]] | None = None
        self.report: dict[str, Any] | None = None

    def field(self, benchmark: Benchmark) -> str:
        return f"stages.{self.name}.benchmarks.{benchmark.name}"

    def models(self) -> dict[str, ResolvedModel]:
        """The benchmarks, pinned like models: the plan records them (role `benchmark:<name>`), the fingerprint
        covers them, and every resume or regeneration loads the same commit."""
        pinned = dict(self._models or {})
        for b in self.params.benchmarks:
            if role(b) not in pinned:
                # Under an engine that loads no model (simulate), a Hub dataset is taken as written (its items are
                # simulated in `prepare`); a local file is still read and pinned by its content.
                pinned[role(b)] = (resolve_benchmark(b, self.field(b)) if self.loads_models or b.path is not None
                                   else as_written(b.source(), b.revision))
        self._models = pinned
        return pinned

    def prepare_part(self, batches: Iterable[pa.RecordBatch]) -> OverlapScan:
        """Load and index the benchmarks, then stream each question of this part of the input once."""
        pinned = self.models()
        benchmarks = [load_benchmark(b, pinned[role(b)], self.field(b), not self.loads_models)
                      for b in self.params.benchmarks]
        cap = self.params.max_items_per_ngram
        scan = OverlapScan(benchmarks, NgramIndex(benchmarks, self.params.ngram, cap), cap)
        for batch in batches:
            scan.add(batch.column("id").to_pylist(), batch.column("query").to_pylist())
        return scan.part()

    def prepare_merge(self, parts: list[OverlapScan]) -> pa.Table:
        merged = parts[0]
        for part in parts[1:]:
            merged.absorb(part)
        return merged.table()

    def load_prepared(self, table: pa.Table) -> None:
        self.matches = {row["id"]: row for row in table.to_pylist()}
        self.report = read_report(table)

    @staticmethod
    def summarize(table: pa.Table) -> dict[str, Any] | None:
        """The report a manifest (and so the card) can carry without re-reading data: the per-benchmark overlap,
        from the prepared table alone (for finalize to call, where it reads state/<stage>/prepared.parquet)."""
        return read_report(table)

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if self.matches is None:
            raise RuntimeError("stage 'decontamination' needs its global pass: call prepare(batches) with the "
                               "whole input before processing a shard")
        kept, dropped = [], []
        for row in rows:
            match = self.matches.get(row["id"])
            out = {**row, **_columns(match)}
            if match is not None and self.params.mode == "remove":
                dropped.append({**out, "drop_reason": "contaminated",
                                "drop_detail": f"shares a {self.params.ngram}-gram with {match['benchmark']} "
                                               f"item {match['item']}"})
            else:
                kept.append(out)
        ctx.report(len(rows))
        return ShardResult(kept, dropped)


def _columns(match: dict[str, Any] | None) -> dict[str, Any]:
    if match is None:
        return dict.fromkeys(CONTAMINATION_COLUMNS)
    return {"contamination_benchmark": match["benchmark"], "contamination_item": match["item"],
            "contamination_ngram": match["ngram"], "contamination_benchmarks": match["benchmarks"]}

