"""Render the dataset card as a published revision shows it, from fixture manifests, into dataset_card.md at
the top of the repository (tests/revisions/test_card.py keeps the two equal).

    python tools/render_card.py                    # render tests/fixtures/card/manifests/*.json -> dataset_card.md
    python tools/render_card.py --check            # exit 1 if dataset_card.md is stale
    python tools/render_card.py --refresh          # re-make the fixtures from a fresh `tiny` run, then render

The fixtures are the manifests of a real `tiny` run (every stage), so the card shows what a published store's
README.md shows, with the Hub's loading code (`datasets.load_dataset("ORG/NAME", ...)`)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "card" / "manifests"
CARD = ROOT / "dataset_card.md"
REPO = "ORG/scalequest-math-regenerated"
PREFIX = "v1"


def render(fixtures: Path = FIXTURES) -> str:
    from scalequest_dataset.revisions.card import render_card
    from scalequest_dataset.run import records
    from scalequest_dataset.run.records import Manifest
    from scalequest_dataset.stages import STAGE_ORDER

    manifests = {s: records.read(Manifest, fixtures / f"{s}.json") for s in STAGE_ORDER
                 if (fixtures / f"{s}.json").is_file()}
    if not manifests:
        raise SystemExit(f"no fixture manifests in {fixtures}: run with --refresh")
    return render_card(REPO, manifests, {s: f"{PREFIX}-{s}" for s in manifests}, "datasets")


def refresh(fixtures: Path = FIXTURES) -> None:
    """Run the `tiny` preset and keep its manifests (as published: with the input's tag and commit unset)."""
    from scalequest_dataset.recipe.config import resolve_config
    from scalequest_dataset.run import Runner
    from scalequest_dataset.run.files import write_bytes

    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(tmp, resolve_config("tiny"), show_progress=False)
        try:
            runner.run()
        finally:
            runner.backend.close()
        fixtures.mkdir(parents=True, exist_ok=True)
        for old in fixtures.glob("*.json"):
            old.unlink()
        for path in sorted(Path(tmp, "manifests").glob("*.json")):
            write_bytes(fixtures / path.name, path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if dataset_card.md differs from a fresh rendering")
    ap.add_argument("--refresh", action="store_true", help="re-make the fixture manifests from a tiny run first")
    args = ap.parse_args(argv)
    if args.refresh:
        refresh()
    text = render()
    if args.check:
        if CARD.read_text(encoding="utf-8") != text:
            print(f"{CARD} is stale: run `python tools/render_card.py`", file=sys.stderr)
            return 1
        return 0
    CARD.write_text(text, encoding="utf-8")
    print(f"wrote {CARD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
