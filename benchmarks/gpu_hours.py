"""GPU-hours per stage for the full corpus (`scalequest-math` preset), beside the paper's Table 4.

No GPU is lent to this project's CI or developer machines, so the throughputs below are DOCUMENTED
FIGURES, not measurements: vLLM offline decoding of a 7B model in bf16 on one A100-40G at large batch
(~2,500 generated tok/s; prefill ~20,000 tok/s), and mean lengths of ScaleQuest-Math text (question
~70 tokens, solution ~350 tokens; judge verdicts ~300 tokens). Row counts follow the paper's funnel
(2M raw; -20.1% language; -19.4% solvability; -9.2% difficulty; 1M x 5 responses). Change a constant, or
pass --decode-tok-s measured on your GPU, to re-estimate.

    python benchmarks/gpu_hours.py [--decode-tok-s 2500] [--prefill-tok-s 20000]
"""

from __future__ import annotations

import argparse

from scalequest_dataset.config import resolve_config

QUESTION_TOKENS = 70
SOLUTION_TOKENS = 350
VERDICT_TOKENS = 300
PAPER_GPU_HOURS = {"questions": 38.4, "solvability + difficulty": 110.6, "responses": 251.0, "reward": 112.0}


def estimate(decode: float, prefill: float) -> list[tuple[str, float, float, float | None]]:
    cfg = resolve_config("scalequest-math")
    st = cfg.stages
    raw = sum(g.count for g in st.questions.generators)
    after_language = raw * (1 - 0.201)
    after_solvable = raw * (1 - 0.201 - 0.194)
    final = 1_000_000
    rows = []
    gen_q = raw * QUESTION_TOKENS
    rows.append(("questions", raw, gen_q / decode / 3600, PAPER_GPU_HOURS["questions"]))
    judge = after_language * (VERDICT_TOKENS / decode + (QUESTION_TOKENS + 160) / prefill) / 3600
    rows.append(("solvability", after_language, judge, None))
    if st.difficulty and st.difficulty.method == "self-consistency":
        diff = after_solvable * st.difficulty.samples * (SOLUTION_TOKENS / decode) / 3600
    else:
        diff = after_solvable * (QUESTION_TOKENS / prefill) / 3600
    rows.append(("difficulty", after_solvable, diff, PAPER_GPU_HOURS["solvability + difficulty"]))
    k = st.responses.samples if st.responses else 5
    resp = final * k * (SOLUTION_TOKENS / decode) / 3600
    rows.append(("responses", final * k, resp, PAPER_GPU_HOURS["responses"]))
    reward = final * k * ((QUESTION_TOKENS + SOLUTION_TOKENS) / prefill) / 3600
    rows.append(("reward", final * k, reward, PAPER_GPU_HOURS["reward"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decode-tok-s", type=float, default=2500.0)
    ap.add_argument("--prefill-tok-s", type=float, default=20000.0)
    args = ap.parse_args()
    rows = estimate(args.decode_tok_s, args.prefill_tok_s)
    print("| stage | rows | estimated A100-hours | paper Table 4 |\n|---|---:|---:|---:|")
    for name, n, hours, paper in rows:
        print(f"| {name} | {n:,.0f} | {hours:,.1f} | {'' if paper is None else paper} |")
    print(f"| total | | {sum(r[2] for r in rows):,.1f} | 522.9 (incl. QFT/QPO 10.9) |")


if __name__ == "__main__":
    main()
