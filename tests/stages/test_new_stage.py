"""A stage owns what is said about it: adding one is one file in stages/ and one name in STAGE_ORDER, and the card
then shows it - its config, its notes (exact / gap / departure) and its figure - and a diff counts the column it
declares, with no other module edited.
The package is copied to a temporary folder, the stage added there, and the card rendered in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXTRA = '''"""A throwaway stage: the default stage's rows with a note."""

from __future__ import annotations

from typing import Any

import datasets

from ..recipe.params import Strict
from .base import DEPARTURE, GAP, Figure, Note, ShardResult, Stage, StageContext


class Params(Strict):
    pass


class ExtraStage(Stage):
    name = "extra"
    version = "1"
    Params = Params
    reads = ("id",)
    description = "A throwaway stage for a test."
    features = datasets.Features({"id": datasets.Value("string"), "note_score": datasets.Value("float64")})
    figures = (Figure("note-score", "number", "note_score", "Note score"),)
    statistics = {"note_score": "number"}

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        return [(GAP, "a rule the paper leaves open, chosen by the extra stage"),
                (DEPARTURE, "the extra stage departs on purpose")]

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        return ShardResult([{"id": r["id"], "note_score": 0.5} for r in rows])
'''

CLIENT = '''
import json, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from scalequest_dataset.revisions.card import render_card
from scalequest_dataset.revisions.figures import stage_figures
from scalequest_dataset.run import records
from scalequest_dataset.run.records import Manifest
from scalequest_dataset.stages import STAGE_ORDER

fixtures, tmp = Path(sys.argv[1]), Path(sys.argv[2])
manifests = {s: records.read(Manifest, fixtures / f"{s}.json") for s in STAGE_ORDER if (fixtures / f"{s}.json").is_file()}
manifests["extra"] = manifests["default"].model_copy(update={"stage": "extra", "description": "A throwaway stage."})
shard = tmp / "train-00000-of-00001.parquet"
pq.write_table(pa.table({"id": ["a", "b"], "note_score": [0.25, 0.75]}), shard)
drawn = stage_figures("extra", {"train": [shard]})
from scalequest_dataset.diffing.stats import Distributions
dist = Distributions()
dist.add(pq.read_table(shard))
card = render_card("ORG/NAME", manifests, {s: f"v1-{s}" for s in manifests}, images=sorted(drawn))
print(json.dumps({"order": list(STAGE_ORDER), "drawn": sorted(drawn), "card": card, "numbers": sorted(dist.numbers)}))
'''


def test_a_new_stage_is_one_file_and_one_line_and_the_card_shows_it(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "scalequest_dataset", pkg / "scalequest_dataset", ignore=shutil.ignore_patterns("__pycache__"))
    stages = pkg / "scalequest_dataset" / "stages"
    (stages / "extra.py").write_text(EXTRA)  # the one file
    registry = (stages / "__init__.py").read_text()
    assert registry.count('"default")') == 1
    (stages / "__init__.py").write_text(registry.replace('"default")', '"default", "extra")'))  # the one line
    res = subprocess.run([sys.executable, "-c", CLIENT, str(ROOT / "tests" / "fixtures" / "card" / "manifests"),
                          str(tmp_path)], capture_output=True, text=True, env={"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin",
                                                                               "HOME": str(tmp_path)}, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["order"][-1] == "extra" and out["drawn"] == ["images/extra/note-score.png"]
    assert out["numbers"] == ["note_score"]  # the diff's statistics count the column the stage declared
    card = out["card"]
    assert "config_name: extra" in card
    assert 'load_dataset("ORG/NAME", "extra", revision="v1-extra"' in card
    section = card.split("## How this follows the paper")[1].split("\n## ")[0]
    gap, departure = (section.split(heading)[1].split("###")[0] for heading in (
        "### Where we chose a rule the paper leaves open", "### Where we depart, and why"))
    assert "`extra`: a rule the paper leaves open, chosen by the extra stage." in gap
    assert "`extra`: the extra stage departs on purpose." in departure
    figures = card.split("## Figures")[1].split("\n## ")[0]
    assert "(images/extra/note-score.png)" in figures and "extra: Note score" in figures
