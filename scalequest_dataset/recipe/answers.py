"""Final answers of math responses: extraction (the last balanced \\boxed{...}, else "answer is X") and
equivalence (math_verify, with normalised string equality first and as the fallback).

Used by self-consistency difficulty and self-consistency rewards. Everything here is a pure function of
its text. Cost (issue 22: math_verify took ~4.6 ms of CPU per question, serial while the GPU idles): plain numbers
(integers, decimals, a/b, \\frac{a}{b}) are compared exactly as rationals without math_verify where its answer
is certain (equal values; values far apart); every other pair's verdict is cached, and so is every parse.

math_verify's own timeouts are off: on a timeout it answers "not equivalent", which would make results depend on
machine speed. Instead each call runs under VERIFY_TIMEOUT_S of wall clock and a call that runs out raises
AnswerTimeout, failing the shard with the two answers named: never a silently different answer. Long answers
skip the symbolic check (MAX_SYMBOLIC_CHARS), so a pathological expression rarely gets that far."""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from functools import lru_cache
from typing import Any

ANSWER_IS = re.compile(r"answer is", re.IGNORECASE)
MAX_SYMBOLIC_CHARS = 200  # longer answers are compared as strings only
VERIFY_TIMEOUT_S = 20.0  # wall clock per math_verify call (parse or verify); see AnswerTimeout
# Two plain numbers this close (relative) go to math_verify, which compares numerically with rounding; farther
# apart, it never calls them equal.
_NEAR = Fraction(1, 10**4)
_NUMBER = re.compile(r"^([+-]?)(?:(\d+(?:\.\d+)?)|(\d+)/(\d+)|\\[dt]?frac\{(\d+)\}\{(\d+)\})$")


class AnswerTimeout(BaseException):
    """A math_verify call ran past VERIFY_TIMEOUT_S. A BaseException, so math_verify's own `except Exception`
    cannot turn it into "not equivalent"."""


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed")
    while start >= 0:
        content = _braced(text, start + len("\\boxed"))
        if content is not None:
            return content
        start = text.rfind("\\boxed", 0, start)
    return None


def _braced(text: str, i: int) -> str | None:
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced: a response cut off inside its answer


def extract_answer(text: str) -> str | None:
    """The final answer of a response: the last \\boxed{...}, else what follows the last "answer is" on its
    line; None when there is none (or it is empty)."""
    answer = last_boxed(text)
    if answer is None:
        matches = list(ANSWER_IS.finditer(text))
        if not matches:
            return None
        line = text[matches[-1].end() :].split("\n", 1)[0]
        answer = line.strip().lstrip(":").strip().rstrip(".").strip().strip("$")
    return answer.strip() or None


def normalize_answer(answer: str) -> str:
    """What string equality compares: no whitespace, no math delimiters or trailing period, case-folded."""
    text = re.sub(r"\s+", "", answer).replace("\\!", "").replace("\\,", "").replace("\\;", "")
    return text.strip("$").rstrip(".").casefold()


def equivalent(a: str | None, b: str | None) -> bool:
    """Two final answers are the same: equal after normalisation, or math_verify says so either way round.
    A missing answer is equivalent to nothing (not even another missing one)."""
    if a is None or b is None:
        return False
    na, nb = normalize_answer(a), normalize_answer(b)
    if na == nb:
        return True
    return _equivalent(*sorted((a, b)))  # symmetric: one cache entry per pair


def plain_number(answer: str) -> Fraction | None:
    """An integer, decimal, a/b or \\frac{a}{b} (optionally signed, no spaces), exactly; else None."""
    m = _NUMBER.match(normalize_answer(answer))
    if m is None:
        return None
    sign, decimal, num, den, fnum, fden = m.groups()
    try:
        value = Fraction(decimal) if decimal else Fraction(int(num or fnum), int(den or fden))
    except ZeroDivisionError:
        return None
    return -value if sign == "-" else value


@lru_cache(maxsize=1 << 16)
def _equivalent(a: str, b: str) -> bool:
    fa, fb = plain_number(a), plain_number(b)
    if fa is not None and fb is not None:
        if fa == fb:
            return True
        if abs(fa - fb) > _NEAR * max(abs(fa), abs(fb), 1):
            return False
    pa, pb = _parsed(a), _parsed(b)
    if not pa or not pb:
        return False
    verify = _math_verify()[1]
    with _deadline(a, b):
        return bool(verify(list(pa), list(pb), timeout_seconds=None)
                    or verify(list(pb), list(pa), timeout_seconds=None))


@lru_cache(maxsize=1 << 16)
def _parsed(answer: str) -> tuple[Any, ...]:
    if len(answer) > MAX_SYMBOLIC_CHARS:
        return ()
    with _deadline(answer):
        return tuple(_math_verify()[0](f"${answer}$", parsing_timeout=None))


@contextlib.contextmanager
def _deadline(*answers: str) -> Iterator[None]:
    """Raise AnswerTimeout if the block runs past VERIFY_TIMEOUT_S (a real-time timer: only in the main thread,
    where signals are delivered; elsewhere the block runs unbounded)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise AnswerTimeout(f"math_verify ran past {VERIFY_TIMEOUT_S:g} s on {' vs '.join(map(repr, answers))}; "
                            "the shard fails rather than guess (a timeout would make the answer depend on speed)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, VERIFY_TIMEOUT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@lru_cache(maxsize=1)
def _math_verify() -> tuple[Any, Any]:
    try:
        from math_verify import parse, verify
    except ImportError as exc:  # a silent fallback would change outputs: refuse instead
        raise ImportError("answer equivalence needs math-verify: pip install 'scalequest-dataset[stages]'") from exc
    # Timeouts are off on purpose (see the module docstring); its warning about that is noise to users.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return parse, verify


def largest_agreement(answers: list[str | None]) -> int:
    """The size of the largest group of equivalent answers (missing answers join no group). Groups are
    formed in order: an answer joins the first group whose first member it is equivalent to."""
    groups: list[list[str]] = []
    for answer in answers:
        if answer is None:
            continue
        for group in groups:
            if equivalent(group[0], answer):
                group.append(answer)
                break
        else:
            groups.append([answer])
    return max((len(g) for g in groups), default=0)


def agreement_shares(answers: list[str | None]) -> list[float]:
    """For each answer, the share of the OTHER answers equivalent to it; 0 for a missing answer or a lone one."""
    n = len(answers)
    if n < 2:
        return [0.0] * n
    same = [[False] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            same[i][j] = same[j][i] = equivalent(answers[i], answers[j])
    return [sum(same[i]) / (n - 1) if answers[i] is not None else 0.0 for i in range(n)]


class GroupedAnswers:
    """The answers of k completions per row, and a value per row from its k answers (`per_row`, e.g. the
    self-consistency difficulty), worked out on a thread while the engine is still generating: the engine reports
    each completion as it finishes (`add`, the `done` of `generate_guarded`), and `results` waits for the rest.
    What comes out is what the same functions give in order after the call: pure functions of the texts, each row's
    value from its answers in sample order.

    The thread gets no SIGALRM deadline (signals reach the main thread only), so the main thread keeps watch in
    `results`: one answer or row worked on past VERIFY_TIMEOUT_S raises AnswerTimeout there, failing the shard as
    before (the thread is left to finish alone; it holds nothing the shard needs)."""

    def __init__(self, rows: int, k: int, per_row: Callable[[list[str | None]], Any]) -> None:
        self.k, self.per_row = k, per_row
        self.answers: list[list[str | None]] = [[None] * k for _ in range(rows)]
        self.values: list[Any] = [None] * rows
        self._left = [k] * rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._busy: tuple[float, str] | None = None  # (since, what) of the item being worked on
        self._error: BaseException | None = None
        self.seconds = 0.0  # the thread's time on answers
        self._thread = threading.Thread(target=self._work, name="answers", daemon=True)
        self._thread.start()

    def add(self, i: int, text: str | None) -> None:
        """The i-th completion's text (row i // k, sample i % k); None for a failed one."""
        self._queue.put((i, text))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue
            i, text = item
            row, sample = divmod(i, self.k)
            started = time.perf_counter()
            self._busy = (started, f"the answer of row {row}, sample {sample}")
            try:
                self.answers[row][sample] = extract_answer(text) if text is not None else None
                self._left[row] -= 1
                if not self._left[row]:
                    self._busy = (started, f"the agreement of row {row}'s answers {self.answers[row]!r}")
                    self.values[row] = self.per_row(self.answers[row])
            except BaseException as exc:  # raised again by `results`, in the shard's thread
                self._error = exc
            finally:
                self._busy = None
                self.seconds += time.perf_counter() - started

    def results(self, poll: float = 0.2) -> tuple[list[list[str | None]], list[Any]]:
        """Every row's answers and value, once the thread has them all (every completion must have been added)."""
        self._queue.put(None)
        while self._thread.is_alive():
            self._thread.join(poll)
            busy = self._busy
            if busy is not None and time.perf_counter() - busy[0] > VERIFY_TIMEOUT_S:
                raise AnswerTimeout(f"working out {busy[1]} ran past {VERIFY_TIMEOUT_S:g} s; the shard fails rather "
                                    "than guess (a timeout would make the answer depend on speed)")
        if self._error is not None:
            raise self._error
        missing = [row for row, left in enumerate(self._left) if left]
        assert not missing, f"rows {missing[:5]} lack answers: a completion was never reported"
        return self.answers, self.values
