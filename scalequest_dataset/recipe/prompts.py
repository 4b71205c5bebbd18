"""The paper's templates and prompts, verbatim, by name (reference/scalequest-paper.md)."""

from __future__ import annotations

from dataclasses import dataclass

QWEN_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class PreQueryTemplate:
    """A bare chat prefix that ends where the user's turn begins: the model writes the question."""

    name: str
    prefix: str
    stop: tuple[str, ...]


def qwen_pre_query(system: str = QWEN_SYSTEM) -> PreQueryTemplate:
    """Qwen2-Math-QGen's pre-query template (ChatML). The system text is the paper's unless a preset
    overrides it (the `demo` preset asks a small model for math word problems this way)."""
    return PreQueryTemplate(
        name="qwen",
        prefix=f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
        stop=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    )


# DeepSeekMath-QGen: the bars are U+FF5C, the underscores U+2581; note the trailing space.
DEEPSEEK_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
DEEPSEEK_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"


def deepseek_pre_query() -> PreQueryTemplate:
    return PreQueryTemplate(name="deepseek", prefix=f"{DEEPSEEK_BOS}User: ", stop=(DEEPSEEK_BOS, DEEPSEEK_EOS))


def pre_query_template(family: str, system: str | None = None) -> PreQueryTemplate:
    if family == "qwen":
        return qwen_pre_query(QWEN_SYSTEM if system is None else system)
    if family == "deepseek":
        if system is not None:
            raise ValueError("the deepseek pre-query template has no system prompt")
        return deepseek_pre_query()
    raise ValueError(f"unknown pre-query template {family!r}: allowed are 'qwen', 'deepseek'")


RESPONSE_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{input}\n"
    "Please reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
    "<|im_start|>assistant\n"
)

# The characters after "1." and "2." are TABs; the released code strips the string.
SOLVABILITY_PROMPT = """
Please act as a professional math teacher.
Your goal is to determine if the given problem is a valuable math problem. You need to consider two aspects:
1.\tThe given problem is a math problem.
2.\tThe given math problem can be solved based on the conditions provided in the problem (You can first try to solve it and then judge its solvability).

Please reason step by step and conclude with either 'Yes' or 'No'.

Given Problem: {problem}
""".strip()


# The user turn of RESPONSE_PROMPT alone, for a model rendered with its own chat template (DeepSeekMath-RL's
# model card asks for exactly this instruction).
RESPONSE_INSTRUCTION = "{input}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def response_prompt(question: str) -> str:
    return RESPONSE_PROMPT.format(input=question)


def response_instruction(question: str) -> str:
    return RESPONSE_INSTRUCTION.format(input=question)


def solvability_prompt(problem: str) -> str:
    return SOLVABILITY_PROMPT.replace("{problem}", problem)
