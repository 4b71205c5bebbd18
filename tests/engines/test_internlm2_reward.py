"""The paper's reward model (internlm/internlm2-7b-reward) on vLLM's pooling runner, checked on a tiny random model
of the same architecture (`build_tiny_internlm2_reward_model`: InternLM2's config keys, weight names, packed wqkv,
v_head, reward token and chat template).

InternLM2-Reward's `get_score` renders the conversation with the tokenizer's chat template, encodes it without
added special tokens, appends `config.reward_token_id` unless the ids already end with it, runs the model and
reads `v_head` at the last position (`attention_mask.cumsum(1).argmax(1)`). transformers has no InternLM2 class:
the real model runs InternLM's remote code, which is not ours to ship. So the scores are checked against
- `reference_scores`: that computation written out in float64 torch from the same weights (embedding, RMSNorm,
  the packed wqkv split per KV head, rotate-half RoPE, causal GQA, SwiGLU, final norm, v_head at the last token);
- transformers' own Llama (the same maths under other names) with the weights unpacked into it, scored by our
  TransformersEngine.
All of them run in fp32 (float64 for the reference) and are compared within SCORE_TOLERANCE: different kernels
(vLLM's CPU attention and fused RMSNorm, torch's SDPA) round differently, so bit equality across engines is not
expected. Scores here are up to ~10; the fp32 differences measured were at most 2.5e-5 (vLLM vs transformers
2.1e-5), while reading the position before the reward token moved every score by more than 0.028, and a doubled
reward token by more than 0.12."""

from __future__ import annotations

import filecmp
import json
import math
from pathlib import Path

import pytest
from test_score import check_batch_invariance, conversations

from scalequest_dataset.engines import load_engine
from scalequest_dataset.engines.base import score_token_ids
from scalequest_dataset.recipe.models import build_tiny_internlm2_reward_model, build_tiny_internlm2_tokenizer

SCORE_TOLERANCE = 2e-4


@pytest.fixture(scope="session")
def internlm2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_internlm2_reward_model(tmp_path_factory.mktemp("internlm2") / "model")


@pytest.fixture(scope="session")
def vllm_internlm2(internlm2_path: Path):
    """One vLLM engine (~25 s to start on 2 cores), closed with the session's other engines: closing a vLLM
    engine tears down vLLM's process-wide parallel state, which the session's engines still use."""
    pytest.importorskip("vllm")
    engine = load_engine("vllm", str(internlm2_path), dtype="float32", batch_size=64, task="score",
                         trust_remote_code=True)
    yield engine
    engine.close()


def get_score_ids(tokenizer, conversation: list[dict[str, str]], reward_token_id: int) -> list[int]:
    """The ids InternLM2-Reward's `get_score` builds (written out here, apart from `score_token_ids`)."""
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids if ids[-1] == reward_token_id else [*ids, reward_token_id]


def reference_scores(model_dir: Path, all_ids: list[list[int]]) -> list[float]:
    """InternLM2ForRewardModel's forward and get_score's read-out, in float64 from the checkpoint's tensors."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((model_dir / "config.json").read_text())
    w = {k: v.double() for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, groups = config["hidden_size"] // heads, heads // kv_heads
    eps, theta = config["rms_norm_eps"], config["rope_theta"]

    def rms_norm(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rope(x, positions):  # x: [tokens, heads, head_dim]; rotate-half (GPT-NeoX) style, as InternLM2
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.cat([positions[:, None] * inv_freq] * 2, dim=-1)[:, None, :]
        half = head_dim // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * angles.cos() + rotated * angles.sin()

    scores = []
    for ids in all_ids:
        n = len(ids)
        positions = torch.arange(n, dtype=torch.float64)
        x = w["model.tok_embeddings.weight"][torch.tensor(ids)]
        for i in range(config["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = rms_norm(x, w[p + "attention_norm.weight"])
            # wqkv's rows, per KV head: its `groups` query heads, then its key head, then its value head.
            qkv = (h @ w[p + "attention.wqkv.weight"].T).view(n, kv_heads, groups + 2, head_dim)
            q = rope(qkv[:, :, :groups].reshape(n, heads, head_dim), positions)
            k = rope(qkv[:, :, groups], positions).repeat_interleave(groups, dim=1)  # query head j -> KV j // groups
            v = qkv[:, :, groups + 1].repeat_interleave(groups, dim=1)
            logits = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
            logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
            attn = torch.einsum("hqk,khd->qhd", logits.softmax(-1), v).reshape(n, heads * head_dim)
            x = x + attn @ w[p + "attention.wo.weight"].T
            h = rms_norm(x, w[p + "ffn_norm.weight"])
            gate = torch.nn.functional.silu(h @ w[p + "feed_forward.w1.weight"].T)
            x = x + (gate * (h @ w[p + "feed_forward.w3.weight"].T)) @ w[p + "feed_forward.w2.weight"].T
        values = rms_norm(x, w["model.norm.weight"]) @ w["v_head.weight"].T  # [tokens, 1]
        ends = torch.ones(1, n, dtype=torch.long).cumsum(dim=1).argmax(dim=1)  # get_score: the last position
        scores.append(float(values[ends.item(), 0]))
    return scores


def as_llama(model_dir: Path, out: Path) -> Path:
    """The same weights as a transformers LlamaForSequenceClassification (one label): wqkv unpacked into
    q/k/v_proj, w1/w3/w2 as gate/up/down_proj, v_head as the score head, read at the last non-pad token."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = json.loads((model_dir / "config.json").read_text())
    w = load_file(str(model_dir / "model.safetensors"))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, groups, hidden = config["hidden_size"] // heads, heads // kv_heads, config["hidden_size"]
    llama = LlamaConfig(
        vocab_size=config["vocab_size"], hidden_size=hidden, intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim, rms_norm_eps=config["rms_norm_eps"], max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": float(config["rope_theta"])},
        tie_word_embeddings=False, num_labels=1, pad_token_id=config["pad_token_id"],
        bos_token_id=config["bos_token_id"], eos_token_id=config["eos_token_id"], torch_dtype="float32",
    )
    llama.reward_token_id = config["reward_token_id"]  # score_token_ids appends it as for InternLM2
    state = {"model.embed_tokens.weight": w["model.tok_embeddings.weight"], "model.norm.weight": w["model.norm.weight"],
             "score.weight": w["v_head.weight"]}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."  # the same prefix in both layouts
        qkv = w[p + "attention.wqkv.weight"].view(kv_heads, groups + 2, head_dim, hidden)
        state |= {
            p + "self_attn.q_proj.weight": qkv[:, :groups].reshape(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": qkv[:, groups].reshape(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": qkv[:, groups + 1].reshape(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": w[p + "attention.wo.weight"],
            p + "mlp.gate_proj.weight": w[p + "feed_forward.w1.weight"],
            p + "mlp.up_proj.weight": w[p + "feed_forward.w3.weight"],
            p + "mlp.down_proj.weight": w[p + "feed_forward.w2.weight"],
            p + "input_layernorm.weight": w[p + "attention_norm.weight"],
            p + "post_attention_layernorm.weight": w[p + "ffn_norm.weight"],
        }
    model = LlamaForSequenceClassification(llama).to(torch.float32)
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    model.save_pretrained(out, safe_serialization=True)
    build_tiny_internlm2_tokenizer().save_pretrained(out)
    return out


def test_tiny_internlm2_reward_model_is_byte_identical_per_seed(tmp_path: Path) -> None:
    a, b = build_tiny_internlm2_reward_model(tmp_path / "a"), build_tiny_internlm2_reward_model(tmp_path / "b")
    c = build_tiny_internlm2_reward_model(tmp_path / "c", seed=3)
    names = sorted(p.name for p in a.iterdir())
    assert {"config.json", "configuration_internlm2.py", "model.safetensors", "tokenizer.json"} <= set(names)
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == []
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    config = json.loads((a / "config.json").read_text())
    assert config["architectures"] == ["InternLM2ForRewardModel"] and config["model_type"] == "internlm2"


@pytest.mark.parametrize("template_ends_with_reward_token", [True, False])
def test_score_ids_are_the_ids_get_score_builds(template_ends_with_reward_token: bool) -> None:
    """The Hub's template ends with <|reward|> (get_score then appends nothing); an older one did not. Either way
    the ids end with exactly one reward token, after the BOS-led ChatML text."""
    tokenizer = build_tiny_internlm2_tokenizer()
    if not template_ends_with_reward_token:
        tokenizer.chat_template = tokenizer.chat_template.replace("{{ '<|reward|>' }}", "")
    reward = tokenizer.convert_tokens_to_ids("<|reward|>")
    for conversation in conversations()[:5]:
        ids = score_token_ids(tokenizer, conversation, reward)
        assert ids == get_score_ids(tokenizer, conversation, reward)
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == reward and ids[-2] != reward


def test_transformers_llama_computes_the_internlm2_reference(internlm2_path: Path, tmp_path: Path) -> None:
    """The unpacked Llama copy is the same model: our transformers score path gives the reference's scores."""
    engine = load_engine("transformers", str(as_llama(internlm2_path, tmp_path / "llama")), dtype="float32",
                         task="score")
    convs = conversations()
    tokenizer = build_tiny_internlm2_tokenizer()
    reward = tokenizer.convert_tokens_to_ids("<|reward|>")
    expected = reference_scores(internlm2_path, [get_score_ids(tokenizer, c, reward) for c in convs])
    assert engine.score(convs) == pytest.approx(expected, abs=SCORE_TOLERANCE)


@pytest.mark.vllm
def test_vllm_needs_trust_remote_code_for_internlm2(internlm2_path: Path) -> None:
    """Like the real model, its config class ships with the weights: without trust_remote_code vLLM refuses."""
    pytest.importorskip("vllm")
    with pytest.raises(Exception, match=r"trust_remote_code|trust-remote-code"):
        load_engine("vllm", str(internlm2_path), dtype="float32", task="score", trust_remote_code=False)


@pytest.mark.vllm
def test_vllm_reads_the_reward_token_position(vllm_internlm2, internlm2_path: Path) -> None:
    """vLLM serves it as InternLM2ForRewardModel for token_classify: v_head at every position. The score is the
    raw value at the last one, the reward token get_score appends, and equals the reference computation."""
    from vllm import PoolingParams

    llm = vllm_internlm2.llm
    assert type(llm.llm_engine.model_config.hf_config).__name__ == "InternLM2Config"
    assert llm.llm_engine.model_config.architectures == ["InternLM2ForRewardModel"]
    assert llm.pooling_task == "token_classify"
    convs = conversations()
    tokenizer = build_tiny_internlm2_tokenizer()
    reward = tokenizer.convert_tokens_to_ids("<|reward|>")
    ids = [get_score_ids(tokenizer, c, reward) for c in convs]
    per_token = llm.encode([{"prompt_token_ids": i} for i in ids], pooling_params=PoolingParams(use_activation=False),
                           pooling_task="token_classify", use_tqdm=False)
    at_reward_token = [float(r.outputs.data[len(i) - 1, 0]) for r, i in zip(per_token, ids, strict=True)]
    scores = vllm_internlm2.score(convs)
    assert scores == at_reward_token
    assert scores == pytest.approx(reference_scores(internlm2_path, ids), abs=SCORE_TOLERANCE)


@pytest.mark.vllm
def test_vllm_matches_transformers_and_is_batch_invariant(vllm_internlm2, internlm2_path: Path,
                                                           tmp_path: Path) -> None:
    scores = check_batch_invariance(vllm_internlm2)
    transformers = load_engine("transformers", str(as_llama(internlm2_path, tmp_path / "llama")), dtype="float32",
                               task="score")
    assert scores == pytest.approx(transformers.score(conversations()), abs=SCORE_TOLERANCE)
    info = vllm_internlm2.info().as_dict()
    assert info["pooling_task"] == "token_classify" and info["head_dtype"] == "float32"
    assert info["prefix_caching"] is False and info["chunked_prefill"] is False


OWN_TOKENIZER = '''from tokenizers import normalizers
from transformers import PreTrainedTokenizerFast


class OwnTokenizer(PreTrainedTokenizerFast):
    """A model's own (remote-code) tokenizer that encodes unlike its tokenizer.json alone."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend_tokenizer.normalizer = normalizers.Lowercase()
'''


@pytest.mark.vllm
def test_vllm_scores_the_ids_of_the_models_own_tokenizer(internlm2_path: Path, tmp_path: Path) -> None:
    """A reward model's input ids come from the model's own (remote-code) tokenizer, as InternLM2-Reward's get_score
    loads it, not from the one vLLM loads: for model_type internlm2, vLLM 0.32 replaces the repository's tokenizer
    class with a generic TokenizersBackend read from tokenizer.json (tokenizers/registry.py). Checked with a tiny
    InternLM2 whose own tokenizer encodes unlike its tokenizer.json, scored by VLLMEngine's own tokenizer choice
    (`own_score_tokenizer`, without starting an engine). Not checked: InternLM's real sentencepiece tokenizer (its files
    are not offline), and whether the generic one actually differs from it on real text."""
    from transformers import AutoTokenizer
    from vllm.tokenizers import get_tokenizer

    from scalequest_dataset.engines.vllm import own_score_tokenizer

    model = tmp_path / "own-tokenizer"
    model.mkdir()
    for file in internlm2_path.iterdir():
        if file.suffix != ".safetensors":
            (model / file.name).write_bytes(file.read_bytes())
    (model / "tokenization_own.py").write_text(OWN_TOKENIZER)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config |= {"auto_map": {"AutoTokenizer": [None, "tokenization_own.OwnTokenizer"]}, "tokenizer_class": "OwnTokenizer"}
    (model / "tokenizer_config.json").write_text(json.dumps(config))

    own = AutoTokenizer.from_pretrained(model, trust_remote_code=True)  # what get_score uses
    vllms = get_tokenizer(str(model), trust_remote_code=True, runner_type="pooling")  # what LLM.get_tokenizer() gives
    reward = own.convert_tokens_to_ids("<|reward|>")
    conv = [{"role": "user", "content": "What IS 2 + 2?"}, {"role": "assistant", "content": "It Is 4."}]
    assert score_token_ids(vllms, conv, reward) != get_score_ids(own, conv, reward), "vLLM's generic tokenizer differs"

    chosen = own_score_tokenizer(str(model), None, "score", trust_remote_code=True)  # the engine's choice
    assert chosen is not None and score_token_ids(chosen, conv, reward) == get_score_ids(own, conv, reward)
    assert own_score_tokenizer(str(model), None, "generate", trust_remote_code=True) is None
