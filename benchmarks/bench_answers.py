"""Self-consistency difficulty's answer work (extraction, math-verify agreement) beside the engine call (issue 22).

The paper preset's difficulty stage (4 samples a question) on `--questions` rows, its samples from the simulated
engine (realistic responses: boxed answers in several spellings, so math-verify works), replayed by a GPU-like
engine that spreads them over `--gpu-seconds` of waiting (sleeping releases the interpreter, as a GPU or vLLM's
engine-core process does) and reports each as it finishes. Measured: the answer work's CPU per question, and the
time from the engine call's return to the stage's result (what the GPU waits for) with the answers overlapped
(now) and computed after the call (before), each in a fresh answer cache. The two results must be identical.

    python benchmarks/bench_answers.py --questions 20000 --gpu-seconds 20 [--symbolic]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scalequest_dataset.engines.simulate import SimulateEngine  # noqa: E402
from scalequest_dataset.recipe import answers  # noqa: E402
from scalequest_dataset.recipe.config import resolve_config  # noqa: E402
from scalequest_dataset.stages import STAGES, StageContext  # noqa: E402
from scalequest_dataset.stages import difficulty as stage_module  # noqa: E402


def symbolic(question: int, sample: int) -> str:
    """A response ending in a symbolic answer: the same value in other spellings, or another value (math-verify
    parses and compares them: the expensive case, ~5 ms a question measured before caching, BENCHMARKS.md)."""
    a, b, c = question % 7 + 2, question % 5 + 3, question % 11 + 2
    forms = [f"\\frac{{{a}\\sqrt{{{c}}}}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\sqrt{{{c}}}",
             f"{a}\\sqrt{{{c}}}/{b}", f"\\frac{{{a + 1}\\sqrt{{{c}}}}}{{{b}}}"]
    return f"Reasoning step by step ... so the answer is $\\boxed{{{forms[(question + sample) % len(forms)]}}}$."


class GpuLike:
    """The simulated engine's completions, reported over `seconds` of waiting, as a GPU engine finishes them."""

    def __init__(self, engine: SimulateEngine, seconds: float, texts=None) -> None:
        self.engine, self.seconds, self.returned, self.texts = engine, seconds, 0.0, texts

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def generate(self, requests, progress=None, done=None):
        out = self.engine.generate(requests)
        if self.texts is not None:
            out = [dataclasses.replace(c, text=self.texts(i // 4, i % 4)) for i, c in enumerate(out)]
        chunk = 64
        for start in range(0, len(out), chunk):
            time.sleep(self.seconds * min(chunk, len(out) - start) / len(out))
            if done:
                for i in range(start, min(start + chunk, len(out))):
                    done(i, out[i])
        self.returned = time.perf_counter()
        return out


class AfterTheCall(answers.GroupedAnswers):
    """The old way: nothing before the engine returns; every answer and agreement in `results`."""

    def __init__(self, rows, k, per_row) -> None:
        self.k, self.per_row = k, per_row
        self.answers = [[None] * k for _ in range(rows)]
        self.values = [None] * rows
        self.seconds = 0.0
        self._texts: list = []

    def add(self, i, text) -> None:
        self._texts.append((i, text))

    def results(self, poll: float = 0.2):
        started = time.perf_counter()
        for i, text in self._texts:
            row, sample = divmod(i, self.k)
            self.answers[row][sample] = answers.extract_answer(text) if text is not None else None
        self.values = [self.per_row(a) for a in self.answers]
        self.seconds = time.perf_counter() - started
        return self.answers, self.values


def measure(rows, config, gpu_seconds: float, way, texts=None) -> tuple[object, float, float, float]:
    answers._equivalent.cache_clear()
    answers._parsed.cache_clear()
    stage = STAGES["difficulty"](config)
    engine = GpuLike(SimulateEngine("simulated/sampler"), gpu_seconds, texts)
    made: list = []

    class Recorded(way):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            made.append(self)

    stage_module.GroupedAnswers = Recorded
    started = time.perf_counter()
    result = stage.process([dict(r) for r in rows], StageContext(config, lambda model, **kw: engine))
    ended = time.perf_counter()
    return result, ended - started, ended - engine.returned, made[0].seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=20_000)
    ap.add_argument("--gpu-seconds", type=float, default=20.0)
    ap.add_argument("--symbolic", action="store_true", help="symbolic answers (math-verify's expensive case)")
    args = ap.parse_args()
    config = resolve_config("scalequest-math", engine="simulate")
    answers._math_verify()  # imported once, outside the measurements
    generator = config.stages.questions.generators[0].name  # its keep table applies
    rows = [{"id": f"{generator}-{i:08d}", "generator": generator, "index": i,
             "query": f"A shop sells {i % 97 + 3} pencils for ${i % 13 + 2}. How much do {i % 7 + 2} pencils cost?"}
            for i in range(args.questions)]
    found = {}
    for name, way in (("after the call (before)", AfterTheCall), ("overlapped (now)", answers.GroupedAnswers)):
        result, total, residual, answer_s = measure(rows, config, args.gpu_seconds, way,
                                                    symbolic if args.symbolic else None)
        found[name] = result
        print(f"{name}: {args.questions:,} questions x {config.stages.difficulty.samples} samples, engine "
              f"{args.gpu_seconds:g} s: stage {total:.2f} s; after the engine returned {residual:.2f} s "
              f"({1000 * residual / args.questions:.3f} ms/question); answer work {answer_s:.2f} s "
              f"({1000 * answer_s / args.questions:.3f} ms/question)", flush=True)
    a, b = found.values()
    same = a.rows == b.rows and a.dropped == b.dropped
    print(f"results {'identical' if same else 'DIFFER'} ({len(a.rows):,} kept, {len(a.dropped):,} dropped)")


if __name__ == "__main__":
    main()
