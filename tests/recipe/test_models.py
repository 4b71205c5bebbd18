from scalequest_dataset.recipe.models import build_tiny_model


def test_tiny_model_is_byte_identical_per_seed(tmp_path):
    a = build_tiny_model(tmp_path / "a")
    b = build_tiny_model(tmp_path / "b")
    c = build_tiny_model(tmp_path / "c", seed=1)
    files = sorted(p.name for p in a.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_tiny_tokenizer_knows_verdict_and_answer_words(tiny_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    vocab = tok.get_vocab()
    assert {"Yes", "No", "\\boxed{", "TheĠanswerĠis"} <= set(vocab)  # whole tokens a random model can emit
    assert len(tok.tokenize("Yes")) == 1
    assert tok.decode(tok("x <|im_end|>")["input_ids"]) == "x <|im_end|>"
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                              add_generation_prompt=True)
