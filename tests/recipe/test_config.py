import pytest

from scalequest_dataset.recipe.config import ConfigError, preset_names, resolve_config


def test_presets_ship_and_validate():
    assert {"tiny", "demo", "scalequest-math"} <= set(preset_names())
    for name in ("tiny", "demo", "scalequest-math"):
        cfg = resolve_config(name)
        assert cfg.preset == name
        assert cfg.stage_names()[0] == "questions"


def test_paper_preset_question_settings():
    q = resolve_config("scalequest-math").stages.questions
    assert (q.temperature, q.top_p, q.max_tokens) == (1.0, 0.99, 1024)
    assert {g.name: (g.template, g.count) for g in q.generators} == {
        "deepseek-qgen": ("deepseek", 1_000_000), "qwen2-math-qgen": ("qwen", 1_000_000)}


def test_overrides_parse_yaml_values_and_address_generators_by_name():
    cfg = resolve_config("tiny", ["seed=7", "stages.questions.top_p=0.5", "stages.questions.generators.tiny-b.count=3",
                                  "stages.questions.generators.0.count=2"], engine="vllm")
    assert cfg.seed == 7
    assert cfg.stages.questions.top_p == 0.5
    assert [g.count for g in cfg.stages.questions.generators] == [2, 3]
    assert cfg.engine.name == "vllm"


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("stages.nonsense={}", ["stages.nonsense", "unknown field", "questions"]),
        ("seed=abc", ["seed", "'abc'"]),
        ("stages.questions.top_p=1.5", ["stages.questions.top_p", "1.5"]),
        ("engine.name=tgi", ["engine.name", "'vllm'", "'transformers'", "'tgi'"]),
        ("stages.questions.generators.0.name=Bad Name", ["generators.0.name", "Bad Name"]),
    ],
)
def test_bad_values_name_the_field_value_and_what_is_allowed(override, needles):
    with pytest.raises(ConfigError) as info:
        resolve_config("tiny", [override])
    for needle in needles:
        assert needle in str(info.value)


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="tiny"):
        resolve_config("nope")


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        resolve_config("tiny", ["seed"])
