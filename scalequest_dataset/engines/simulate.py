"""`--engine simulate`: a zero-cost engine that answers every request at once with deterministic text of its
role's realistic shape and length, so that the paper preset (every stage, publish, diff, load) can be rehearsed
at any size on any machine or cluster before GPU-hours are spent. It loads no model and resolves nothing on the
Hub: a model is its id and revision as written (`Stage.models`), and a Hub benchmark of the decontamination
stage is simulated too (`benchmark_items`).

A request's role is read from its prompt (the paper's prompts are fixed): a bare pre-query template asks for a
question (~300 characters; ~20 % with a non-ASCII character, as the paper's language filter removes; ~3 %
near-duplicates of a few popular questions, equal once normalised, for dedup; some ending in benchmark
boilerplate); the solvability prompt for a judgment (~400 characters ending in "Yes" or "No"; ~80 % "Yes", and
a "No" reply never contains "yes", so both verdict rules read it); the response prompt for a worked solution
(~1,300 characters ending in a \\boxed{} answer, ~3 % without one). A question's answers are drawn around a
latent difficulty, in equivalent spellings (3/4, \\frac{3}{4}, 0.75), so self-consistency and math-verify
have real work. A conversation's score is a deterministic number, higher for the question's latent answer.

Everything is a function of (the request's seed, its prompt, its sampling) alone: no other request, batch,
worker or machine moves a byte. Token counts are characters / 4."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import ClassVar

from ..recipe.params import Strict
from .base import Completion, DoneFn, EngineInfo, ProgressFn, Request

VERSION = "1"
CONTEXT = 32_768
CHARS_PER_TOKEN = 4

_QUESTION_PROMPT = re.compile(r"(<\|im_start\|>user\n|User: )$")
_JUDGE_MARK = "Please act as a professional math teacher."
_JUDGE_PROBLEM = "Given Problem: "
_RESPONSE_MARK = "put your final answer within \\boxed{}"

NAMES = ("Alice", "Ben", "Carla", "Deepak", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Keiko", "Liam",
         "Maya", "Noah", "Olga", "Priya", "Quentin", "Rosa", "Sam", "Tariq")
NON_ASCII = ("José", "Zoë", "Chloé", "Søren", "Łukasz", "Renée", "Björn", "Añil", "François", "Müller")
NON_ASCII_UNITS = ("°C", "€", "×", "≤", "π", "²", "√")
OBJECTS = ("apples", "marbles", "books", "stickers", "pencils", "coins", "cookies", "tickets", "stamps", "shells")
PLACES = ("a bakery", "the school fair", "a bookstore", "the market", "a garden", "the library", "a toy shop")
# Benchmark-style boilerplate: long enough to be a 13-gram, shared by many simulated benchmark items and by
# some questions (the heavy-overlap case of decontamination).
BOILERPLATE = ("If the answer is not a whole number, express your answer as a common fraction in lowest terms "
               "and do not use a decimal.")
POPULAR = (  # near-duplicates: a few questions many generators write, in other cases and spacing
    "What is the sum of all positive integers n such that n squared plus 3n is less than 100?",
    "A rectangle has a perimeter of 36 units and an area of 80 square units. What is the length of its longer "
    "side?",
    "How many positive divisors does 360 have?",
    "If 3x + 7 = 22, what is the value of 5x - 4?",
    "The average of five consecutive integers is 17. What is the largest of these integers?",
)
_TEMPLATES = (
    "{name} has {a} {obj} and buys {b} more packs of {c} {obj} each at {place}. After giving {d} {obj} to {name2}, "
    "{name} shares the rest equally among {e} friends, keeping none. How many {obj} does each friend receive, "
    "and how many are left over?",
    "Let $f(x) = {a}x^2 - {b}x + {c}$. Find the sum of all real values of $x$ for which $f(f(x)) = {d}$, given "
    "that the equation has exactly {e} distinct real roots. Justify why no other roots exist.",
    "A bag contains {a} red, {b} blue and {c} green marbles. Two marbles are drawn at random without "
    "replacement. What is the probability that both marbles have the same color? Give the probability as a "
    "fraction.",
    "In triangle $ABC$, $AB = {a}$, $BC = {b}$ and the angle at $B$ measures {c} degrees. Point $D$ lies on "
    "$AC$ so that $BD$ bisects angle $B$. Find the length of $AD$ and the area of triangle $ABD$.",
    "{name} drives {a} kilometers to {place} at an average speed of {b} kilometers per hour and returns at {c} "
    "kilometers per hour. What is the average speed of the whole trip, in kilometers per hour?",
    "Find the smallest positive integer $n$ such that $n$ leaves a remainder of {a} when divided by {b}, a "
    "remainder of {c} when divided by {d}, and is divisible by {e}. Explain each step of the search.",
)
_LEADS = (
    "{name} is practicing for a regional math competition at {place}.",
    "While preparing a worksheet, {name} writes down the following problem.",
    "{name} and {name2} found this problem in an old contest booklet.",
    "Here is a problem that {name} posed to the class at {place}.",
)
_STEPS = (
    "First, we write down what the problem gives us: the quantities {a}, {b} and {c}, and the relation between "
    "them stated in the question.",
    "Next, we combine the first two quantities: ${a} + {b} = {s}$, which is the total before anything is removed.",
    "We multiply by the number of groups, so the product is ${s} \\times {c} = {p}$.",
    "Now we subtract what was given away or used up: ${p} - {d} = {q}$.",
    "To check the intermediate result, we divide by the common factor and confirm that ${q} / {c}$ is "
    "consistent with the conditions of the problem.",
    "Substituting back into the original relation, every condition holds, so no case has been missed and the "
    "value is unique.",
    "We can also verify the answer another way: counting the remaining part directly gives the same value, "
    "which is reassuring.",
    "Simplifying the expression step by step, we reduce the fraction to lowest terms and keep the exact form "
    "rather than a decimal approximation.",
)
_JUDGE_LINES = (
    "The problem asks for a single quantity and states every condition needed to compute it.",
    "Its numbers are consistent: the given totals and rates do not contradict each other.",
    "Trying to solve it, we set up the relation from the statement and reach a unique value.",
    "It uses standard notions from arithmetic, algebra or probability at a school level.",
    "The wording is clear about what is asked and in which units the result should be given.",
)
_JUDGE_LINES_NO = (
    "The problem leaves out a quantity that the question depends on, so the result cannot be pinned down.",
    "Trying to solve it, the conditions admit many values, and the statement gives no way to choose one.",
    "Part of the statement contradicts another part, so no value satisfies every condition.",
)


class SimulateOptions(Strict):
    """`engine.simulate` in a config: nothing to set."""

    FINGERPRINTED: ClassVar[tuple[str, ...]] = ()


def _draw(*parts: object) -> random.Random:
    """A generator seeded from the parts by BLAKE2b (never Python's hash())."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def _fill(rng: random.Random) -> dict[str, object]:
    name, name2 = rng.sample(NAMES, 2)
    return {"name": name, "name2": name2, "obj": rng.choice(OBJECTS), "place": rng.choice(PLACES),
            **{k: rng.randint(2, 60) for k in "abcde"}}


def question_text(rng: random.Random) -> str:
    """A question of ~300 characters: templated, sometimes non-ASCII, sometimes a popular near-duplicate."""
    roll = rng.random()
    if roll < 0.03:
        text = rng.choice(POPULAR)
        return rng.choice((text, text.lower(), text.upper(), "  " + text.replace(" ", "  ")))
    if roll < 0.035:  # a leak: a benchmark item, word for word
        return benchmark_item(LEAKED, rng.randrange(LEAKED_ITEMS))
    values = _fill(rng)
    if roll < 0.13:
        values["name"] = rng.choice(NON_ASCII)
    lead = rng.choice(_LEADS).format(**values)
    text = lead + " " + rng.choice(_TEMPLATES).format(**values)
    if 0.13 <= roll < 0.23:
        text += f" (Quantities are measured in {rng.choice(NON_ASCII_UNITS)} where relevant.)"
    if rng.random() < 0.1:
        text += " " + BOILERPLATE
    return text


def latent(question: str) -> tuple[int, int, float]:
    """A question's latent answer (numerator, denominator) and difficulty (share of wrong samples)."""
    rng = _draw("latent", question)
    return rng.randint(1, 99), rng.choice((1, 1, 1, 2, 4, 5)), rng.choice((0.0, 0.05, 0.15, 0.3, 0.5, 0.8))


def spell(num: int, den: int, rng: random.Random) -> str:
    """One of the equivalent spellings of num/den (math-verify tells they are the same)."""
    if den == 1:
        return rng.choice((str(num), str(num), f"{num}.0", f"{num}"))
    forms = [f"\\frac{{{num}}}{{{den}}}", f"{num}/{den}", f"\\dfrac{{{num}}}{{{den}}}"]
    if 100 % den == 0:
        forms.append(f"{num / den:g}")
    return rng.choice(forms)


def response_text(question: str, rng: random.Random) -> str:
    """A worked solution of ~1,300 characters ending in a boxed answer (the latent one, or a distractor)."""
    num, den, difficulty = latent(question)
    if rng.random() < difficulty:
        num = num + rng.choice((-2, -1, 1, 2, 10)) or 1  # wrong answers also agree with each other at times
    a, b, c, d = (rng.randint(2, 40) for _ in range(4))
    s = a + b
    values = {"a": a, "b": b, "c": c, "d": d, "s": s, "p": s * c, "q": s * c - d}
    steps = [rng.choice(_STEPS).format(**values) for _ in range(10)]
    body = "Let's reason step by step.\n\n" + "\n\n".join(f"Step {i + 1}: {t}" for i, t in enumerate(steps))
    if rng.random() < 0.03:
        return body + "\n\nSo that is the value we were looking for."
    return body + f"\n\nTherefore, the final answer is $\\boxed{{{spell(num, den, rng)}}}$."


def judgment_text(question: str, rng: random.Random) -> str:
    """~400 characters of reasoning ending in the verdict: "Yes" for ~80 % of questions (a property of the
    question, as for a real judge at temperature 0)."""
    solvable = _draw("solvable", question).random() < 0.8
    lines = rng.sample(_JUDGE_LINES if solvable else _JUDGE_LINES_NO, 3)
    head = "Let me check the two aspects in turn.\n1. It is a math problem: it asks for a quantity.\n2. "
    return head + " ".join(lines) + ("\n\nConclusion: Yes" if solvable else "\n\nConclusion: No")


_BENCH_TEMPLATES = (
    "Compute the value of ${a} \\cdot {b} - {c}$ modulo {d}.",
    "What is the greatest common divisor of {a}{b} and {c}{d}?",
    "Solve for $y$: ${a}y + {b} = {c}y - {d}$.",
    "A store sells pens at {a} cents each and notebooks at {b} cents each. Kim buys {c} pens and {d} notebooks. "
    "How many dollars does she spend?",
    "The sum of two numbers is {a} and their difference is {b}. What is their product?",
    "Evaluate $\\sum_{{k=1}}^{{{a}}} k^2$ and reduce the result modulo {b}.",
)


def benchmark_item(source: str, i: int) -> str:
    rng = _draw("benchmark", source, i)
    text = f"Problem {i + 1} of the test set, answered without a calculator. " + rng.choice(_BENCH_TEMPLATES).format(
        **_fill(rng))
    return text + " " + BOILERPLATE if rng.random() < 0.33 else text


def benchmark_items(source: str, count: int) -> list[str]:
    """Simulated benchmark test items (for the decontamination stage under this engine), in wording of their
    own: about a third end in the shared boilerplate (questions that end in it overlap thousands of items),
    and a few simulated questions copy an item of `LEAKED` word for word (a real contamination)."""
    return [benchmark_item(source, i) for i in range(count)]


LEAKED, LEAKED_ITEMS = "hf://datasets/openai/gsm8k", 1319  # the benchmark some questions copy (as resolved ids)
# Benchmark sizes as the paper preset's test sets have them; any other: 1,000 items.
BENCHMARK_SIZES = {"openai/gsm8k": 1319, "EleutherAI/hendrycks_math": 5000, "HuggingFaceH4/MATH-500": 500}


class SimulateEngine:
    name = "simulate"
    Options = SimulateOptions
    NUMERICS = f"simulate-v{VERSION}"
    LOADS_MODELS = False  # a model is its id and revision as written: nothing is resolved, downloaded or hashed

    def __init__(self, model: str, *, dtype: str = "auto", batch_size: int = 64, revision: str | None = None,
                 task: str = "generate", trust_remote_code: bool = False) -> None:
        self.model_name, self.dtype, self.task, self.batch_size = model, dtype, task, batch_size

    def generate(self, requests: Sequence[Request], progress: ProgressFn | None = None, done: DoneFn | None = None
                 ) -> list[Completion]:
        out = []
        for i, request in enumerate(requests):
            out.append(self._one(request))
            if done:
                done(i, out[-1])
        if progress:
            progress(len(out), sum(c.completion_tokens for c in out))
        return out

    def _one(self, request: Request) -> Completion:
        prompt = request.prompt
        # As a model's: max_tokens only cuts the text short, it never changes what comes before the cut.
        rng = _draw(request.seed, prompt, request.sampling.temperature, request.sampling.top_p)
        if _RESPONSE_MARK in prompt:
            question = prompt.split("user\n", 1)[-1].split("\nPlease reason step by step", 1)[0]
            text = response_text(question, rng)
        elif _JUDGE_MARK in prompt:
            text = judgment_text(prompt.rsplit(_JUDGE_PROBLEM, 1)[-1].split("<|im_end|>", 1)[0], rng)
        elif _QUESTION_PROMPT.search(prompt):
            text = question_text(rng)
        else:
            text = "Simulated reply. " * 8
        limit = request.sampling.max_tokens * CHARS_PER_TOKEN
        reason = "stop"
        if len(text) > limit:
            text, reason = text[:limit], "length"
        return Completion(text, self.prompt_length(prompt), _tokens(text), reason)

    def score(self, conversations: Sequence[list[dict[str, str]]], progress: ProgressFn | None = None
              ) -> list[float]:
        out = []
        for conversation in conversations:
            query = conversation[0]["content"]
            reply = conversation[-1]["content"]
            num, _, _ = latent(query)
            right = str(num) in reply.rsplit("boxed", 1)[-1]  # crude: the latent answer's numerator is boxed
            out.append(round(_draw("score", query, reply).gauss(1.5 if right else -0.5, 1.0), 6))
        if progress:  # scoring generates nothing: the tokens are those it read
            progress(len(out), sum(self.score_length(c) for c in conversations))
        return out

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def context_length(self) -> int:
        return CONTEXT

    def prompt_length(self, prompt: str) -> int:
        return _tokens(prompt)

    def score_length(self, conversation: list[dict[str, str]]) -> int:
        return _tokens(self.chat_prompt(conversation, add_generation_prompt=False))

    def info(self) -> EngineInfo:
        return EngineInfo("simulate", VERSION, self.model_name, self.dtype, "cpu", batch_invariant=True,
                          extra={"task": self.task}, numerics=self.NUMERICS, batch_size=self.batch_size)

    def close(self) -> None:
        pass


def _tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)
