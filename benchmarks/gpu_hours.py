"""GPU-hours per stage for the full corpus (`scalequest-math` preset) beside the paper's Table 4.

AN ESTIMATE, NOT A MEASUREMENT: no GPU has run this pipeline at scale yet. Replace a rate with one measured on
your GPU (the stage manifests record `cost.gpu_seconds`) and the table becomes a measurement. Only the
decontamination rate is measured here, on this machine's CPU, on synthetic text.

Anchors - where each rate comes from:
  [T4]  the paper's Table 4 (8 x A100-40G-PCIe, vLLM, TP=1): GPU-hours per step over its sample counts are the
        release's own per-item rates, on the same models: question generation 2M in 38.4 h; solvability and
        difficulty checks in 110.6 h (one row: the judge on the questions left by the language filter, then the
        scorer, per the released language_solvability_check.py); response generation 5M in 251.0 h; reward
        scoring 5M in 112.0 h, one pair at a time (the released rm_score.py calls get_score per pair).
  [A100] NVIDIA's A100 datasheet: 312 TFLOP/s dense fp16/bf16 tensor-core peak. A batched reward pass is a
        prefill, compute-bound: pairs x tokens x 2 x parameters / (peak x MFU). MFU (model FLOPs utilisation)
        is an assumption, --mfu (default 0.3 to 0.5).
  [IL2] internlm/internlm2-7b-reward: ~7.7e9 parameters (InternLM2-7B, Cai et al., 2024).
  [LEN] mean lengths (assumptions, --question-tokens, --response-tokens): a ScaleQuest question ~70 tokens, a
        response ~360. With [T4] they imply ~2,000 generated tokens/s per A100 for response generation
        (5M x 360 / 251 h), the decode rate used below to weigh a prompt's prefill against its decode.
  [CPU] decontamination: measured by this script (one core, synthetic questions), see --questions.

What our design changes in GPU-hours (the rest of the work is the release's, on the release's rates):
  - reward: scored in large batches by vLLM's pooling runner, where the release scored one pair at a time;
  - prefix caching (vLLM V1's default): the k samples of a question share their prompt's KV cache, so the
    prompt is prefilled once, not k times (responses k=5, difficulty k=4); the release enables it for question
    generation only (gen.py), not for its 5 responses per question;
  - difficulty COSTS MORE: k=4 sampled solutions of DeepSeekMath-7B-RL per question instead of the paper's
    scorer (one forward pass of a regression head), which is not released;
  - decontamination and dedup are CPU-only (seconds to minutes); in `remove` mode decontamination drops
    overlapping questions before every GPU stage.

    python benchmarks/gpu_hours.py [--mfu 0.3 0.5] [--questions 20000]
"""

from __future__ import annotations

import argparse
import itertools
import random
import resource
import time
from dataclasses import dataclass

from scalequest_dataset.recipe.config import resolve_config

PAPER = {"questions": (2_000_000, 38.4), "checks": (2_000_000, 110.6), "responses": (5_000_000, 251.0),
         "reward": (5_000_000, 112.0)}  # [T4]: step -> (samples, A100-hours)
PAPER_TOTAL = 522.9  # [T4], with QFT (3.9 h), QPO generation (0.4 h) and QPO training (6.6 h)
A100_PEAK_FLOPS = 312e12  # [A100]
REWARD_PARAMS = 7.7e9  # [IL2]
CHAT_OVERHEAD_TOKENS = 30  # the chat template around a (question, response) pair or a prompt
FUNNEL = {"language": 0.201, "solvability": 0.194, "difficulty": 0.092}  # the paper: share of 2M removed


@dataclass
class Row:
    stage: str
    rows: float
    low: float  # A100-hours
    high: float
    paper: str
    basis: str


def prefix_saving(k: int, prompt_tokens: float, response_tokens: float, decode_rate: float,
                  prefill_rate: float) -> float:
    """Share of a k-sample question's GPU time that prefix caching saves: the prompt prefilled once, not k times."""
    prompt = prompt_tokens / prefill_rate
    request = prompt + response_tokens / decode_rate
    return (k - 1) * prompt / (k * request)


def rates(args: argparse.Namespace) -> tuple[float, list[float]]:
    """Tokens/s per A100: decode, as [T4]'s response generation implies at [LEN]'s response length; prefill at
    [A100]'s peak times the MFU range, for [IL2]'s parameter count (a 7B generator's is about the same)."""
    decode = PAPER["responses"][0] * args.response_tokens / (PAPER["responses"][1] * 3600)
    return decode, [A100_PEAK_FLOPS * m / (2 * REWARD_PARAMS) for m in sorted(args.mfu)]


def estimate(args: argparse.Namespace) -> list[Row]:
    st = resolve_config("scalequest-math").stages
    raw = sum(g.count for g in st.questions.generators)
    judged = raw * (1 - FUNNEL["language"])  # dedup and decontamination (report mode) assumed to remove ~0
    scored = raw * (1 - FUNNEL["language"] - FUNNEL["solvability"])
    final = 1_000_000  # the paper: ~1M questions after difficulty sampling (2M x (1 - 0.487) rounded)
    k = st.responses.samples
    per = {step: hours / n for step, (n, hours) in PAPER.items()}  # [T4] A100-hours per item
    decode_rate, prefill = rates(args)
    pair_tokens = args.question_tokens + args.response_tokens + CHAT_OVERHEAD_TOKENS
    prompt_tokens = args.question_tokens + CHAT_OVERHEAD_TOKENS
    rows = [Row("questions", raw, raw * per["questions"], raw * per["questions"], "38.4",
                "the release's work and rate [T4]; max_tokens 1024 as its code")]
    rows.append(Row("language, dedup", raw, 0, 0, "-", "CPU only"))
    cpu_hours = (judged * args.seconds_per_question + args.index_seconds) / 3600
    rows.append(Row("decontamination", judged, 0, 0, "-", f"CPU only: {cpu_hours:.2f} CPU-hours on one core [CPU]"))
    # The release judged the questions left by the language filter (language_solvability_check.py), as we do;
    # [T4]'s row also holds its scorer pass, so the row's hours bound our judge's from above.
    rows.append(Row("solvability", judged, PAPER["checks"][1], PAPER["checks"][1], "110.6 (with difficulty)",
                    "at most [T4]'s row: the release judged the same questions, then ran its scorer"))
    if st.difficulty.method == "self-consistency":
        m = st.difficulty.samples
        saving = [prefix_saving(m, prompt_tokens, args.response_tokens, decode_rate, p) for p in prefill]
        base = scored * m * per["responses"]  # a sampled solution costs about what a response does
        rows.append(Row("difficulty", scored, base * (1 - max(saving)), base * (1 - min(saving)), "(in 110.6)",
                        f"{m} solutions per question at the response rate [T4], prefix-cached; the paper: one "
                        "scorer pass"))
    saving = [prefix_saving(k, prompt_tokens, args.response_tokens, decode_rate, p) for p in prefill]
    base = final * k * per["responses"]
    rows.append(Row("responses", final * k, base * (1 - max(saving)), base * (1 - min(saving)), "251.0",
                    f"the release's rate [T4] less prefix caching ({100 * min(saving):.1f}-{100 * max(saving):.1f} %)"))
    reward = [final * k * pair_tokens / p / 3600 for p in prefill]
    rows.append(Row("reward", final * k, min(reward), max(reward), "112.0 (batch size 1)",
                    f"batched prefill, {pair_tokens} tokens a pair at MFU {min(args.mfu)}-{max(args.mfu)} "
                    "[A100][IL2][LEN]"))
    rows.append(Row("default (best of 5)", final * k, 0, 0, "-", "CPU only"))
    return rows


def scorer_hours(args: argparse.Namespace) -> tuple[float, float]:
    """The paper's kind of difficulty step (one forward pass of a 7B scorer per question), were it released."""
    scored = 2_000_000 * (1 - FUNNEL["language"] - FUNNEL["solvability"])
    tokens = args.question_tokens + CHAT_OVERHEAD_TOKENS
    hours = [scored * tokens * 2 * REWARD_PARAMS / (A100_PEAK_FLOPS * m) / 3600 for m in args.mfu]
    return min(hours), max(hours)


def measure_decontamination(questions: int, seed: int = 0) -> tuple[float, float, int]:
    """Seconds per question of the decontamination scan on one core, the index's build seconds and its array
    bytes, on synthetic text shaped like the preset's benchmarks (6,819 items of ~45 words) and questions
    (~55 words with numbers and punctuation)."""
    from scalequest_dataset.stages.decontamination import Benchmark, LoadedBenchmark, NgramIndex, OverlapScan

    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(30_000)]
    cumulative = list(itertools.accumulate(1 / (i + 1) for i in range(len(vocab))))  # Zipf-like, as real text

    def text(n: int) -> str:
        picked = rng.choices(vocab, cum_weights=cumulative, k=n)
        return " ".join(w if rng.random() > 0.1 else f"{w}, {rng.randint(0, 999)}." for w in picked)

    spec = Benchmark(name="synthetic", path="synthetic.jsonl", columns=["problem"])
    items = [[text(45)] for _ in range(1_319 + 5_000 + 500)]
    bench = LoadedBenchmark(spec, "synthetic", [str(i) for i in range(len(items))], items)
    started = time.perf_counter()
    index = NgramIndex([bench], 13)
    build = time.perf_counter() - started
    scan = OverlapScan([bench], index)
    batch = [text(55) for _ in range(questions)]
    started = time.perf_counter()
    for i in range(0, questions, 8192):
        scan.add([f"q-{j:08d}" for j in range(i, min(i + 8192, questions))], batch[i : i + 8192])
    per_question = (time.perf_counter() - started) / questions
    size = index.hashes.nbytes + index.unique.nbytes + index.posting_segment.nbytes + index.posting_position.nbytes
    return per_question, build, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mfu", type=float, nargs=2, default=[0.3, 0.5], help="model FLOPs utilisation, low high")
    ap.add_argument("--question-tokens", type=float, default=70)
    ap.add_argument("--response-tokens", type=float, default=360)
    ap.add_argument("--questions", type=int, default=20_000, help="synthetic questions to time decontamination on")
    args = ap.parse_args()
    per_question, build, index_bytes = measure_decontamination(args.questions)
    args.seconds_per_question, args.index_seconds = per_question, build
    rows = estimate(args)
    decode, prefill = rates(args)
    print(f"rates per A100: decode {decode:,.0f} generated tok/s ([T4] responses at [LEN]); prefill "
          f"{prefill[0]:,.0f} - {prefill[-1]:,.0f} tok/s ([A100] x MFU {min(args.mfu)} - {max(args.mfu)} / 2 x [IL2])")
    print(f"decontamination on this CPU: {1 / per_question:,.0f} questions/s on one core ({args.questions:,} "
          f"synthetic), index of 6,819 items built in {build:.1f} s, {index_bytes / 2**20:.1f} MiB of arrays; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB\n")
    print("| stage | rows | estimated A100-hours | paper Table 4 | basis |\n|---|---:|---:|---:|---|")
    for r in rows:
        hours = f"{r.low:,.1f}" if abs(r.high - r.low) < 0.05 else f"{r.low:,.1f} - {r.high:,.1f}"
        print(f"| {r.stage} | {r.rows:,.0f} | {hours} | {r.paper} | {r.basis} |")
    low, high = sum(r.low for r in rows), sum(r.high for r in rows)
    paper = sum(hours for _, hours in PAPER.values())
    scorer = scorer_hours(args)
    print(f"| total, questions to best-of-5 | | {low:,.1f} - {high:,.1f} | {paper:.1f} ({PAPER_TOTAL} with QFT/QPO) | |")
    print(f"\nWith a released scorer in place of self-consistency (`difficulty.method: scorer`, one 7B forward pass "
          f"per question) the difficulty step would take {scorer[0]:.1f} - {scorer[1]:.1f} A100-hours.")


if __name__ == "__main__":
    main()
