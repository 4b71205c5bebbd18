"""revisions/card.py: the card a published revision shows. dataset_card.md at the top of the repository is that
card rendered from the fixture manifests (a real `tiny` run's) by tools/render_card.py: it must equal a fresh
rendering; the card lists a config for every stage present, and says what is exact, what fills a gap in the
paper and where we depart."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from scalequest_dataset.revisions.card import configs_yaml, render_card
from scalequest_dataset.run import records
from scalequest_dataset.run.records import Manifest
from scalequest_dataset.stages import STAGE_ORDER

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "card" / "manifests"
REPO = "ORG/scalequest-math-regenerated"


def load_tool():
    spec = importlib.util.spec_from_file_location("render_card", ROOT / "tools" / "render_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    return {s: records.read(Manifest, FIXTURES / f"{s}.json") for s in STAGE_ORDER if (FIXTURES / f"{s}.json").is_file()}


def render(manifests: dict[str, Manifest]) -> str:
    return render_card(REPO, manifests, {s: f"v1-{s}" for s in manifests})


def test_dataset_card_md_equals_a_fresh_rendering():
    tool = load_tool()
    fresh = tool.render()
    assert (ROOT / "dataset_card.md").read_text(encoding="utf-8") == fresh, \
        "dataset_card.md is stale: run `python tools/render_card.py`"
    assert "config_name: default" in fresh and "## Lineage" in fresh
    assert 'load_dataset("ORG/scalequest-math-regenerated", "questions", revision="v1-questions"' in fresh


def test_card_lists_configs_for_every_stage(manifests):
    readme = render(manifests)
    front = yaml.safe_load(readme.split("---")[1])
    names = [c["config_name"] for c in front["configs"]]
    assert names == list(manifests) and len(names) >= 8
    assert front["license"] == "apache-2.0" and front["size_categories"] == ["n<1K"]
    for stage in names:
        assert f'load_dataset("{REPO}", "{stage}", revision="v1-{stage}"' in readme
    assert "2410.18693" in readme and "## Lineage" in readme and "## Funnel" in readme


def test_a_stage_not_published_is_not_on_the_card(manifests):
    some = {s: manifests[s] for s in ("questions", "language")}
    readme = render(some)
    front = yaml.safe_load(readme.split("---")[1])
    assert [c["config_name"] for c in front["configs"]] == ["questions", "language"]
    assert '"dedup"' not in readme and "`dedup`:" not in readme


def test_an_empty_dropped_split_is_left_out_of_the_configs(manifests):
    """`datasets` cannot load a split without rows: a stage that dropped nothing lists only `train`."""
    for config in configs_yaml(manifests):
        splits = [f["split"] for f in config["data_files"]]
        m = manifests[config["config_name"]]
        assert splits == (["train", "dropped"] if m.rows("dropped") else ["train"]), config
        assert config.get("default", False) == (config["config_name"] == "default")
    assert any(m.rows("dropped") for m in manifests.values()) and any(not m.rows("dropped") for m in manifests.values())


def test_card_says_what_is_exact_what_fills_a_gap_and_what_departs(manifests):
    readme = render(manifests)
    section = readme.split("## How this follows the paper")[1].split("\n## ")[0]
    exact, gap, departure = (section.split(heading)[1].split("###")[0] for heading in (
        "### As the paper or its released code", "### Where we chose a rule the paper leaves open",
        "### Where we depart, and why"))
    for needle in ("ord <= 127", "'yes'", "`response[0].strip()`"):
        assert needle in exact, needle
    for needle in ("keep table", "lowest response id wins", "dtype float32"):
        assert needle in gap, needle
    for needle in ("`dedup`: ours", "max_tokens 24 (the paper: 512", "builtin:tiny in place of",
                   "samples 4 (the paper: 5)", "wall clock"):
        assert needle in departure, needle
    assert "released selection" not in readme
    assert "Unleashing {LLM} Reasoning Capability via Scalable Question Synthesis from Scratch" in readme
    assert "2025.acl-long.658" in readme and "Unleashing Reasoning Capability of\nLLMs" in readme
