"""dataset_card.md at the top of the repository is the card a published revision shows, rendered from the
fixture manifests by tools/render_card.py: it must equal a fresh rendering."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("render_card", ROOT / "tools" / "render_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_dataset_card_md_equals_a_fresh_rendering():
    tool = load_tool()
    fresh = tool.render()
    assert (ROOT / "dataset_card.md").read_text(encoding="utf-8") == fresh, \
        "dataset_card.md is stale: run `python tools/render_card.py`"
    assert "config_name: default" in fresh and "## Lineage" in fresh
    assert 'load_dataset("ORG/scalequest-math-regenerated", "questions", revision="v1-questions"' in fresh
