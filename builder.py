"""The ScaleQuest `datasets` builder, as the entry point a user of `datasets` looks for.

`datasets` >= 4 runs no loading scripts, so published revisions carry Parquet files and YAML `configs:`
only, and `datasets.load_dataset(repo, stage, revision=...)` needs no code at all. This file is for the other
two places a stage lives - a run directory and a local store (a git repository) - and for anyone who wants
a builder object: the implementation is `scalequest_dataset.revisions.builder.ScaleQuest` (one BuilderConfig per
stage, with the Features the stage declares), and this module only re-exports it and gives it a command:

    python builder.py runs/demo --config questions                       # a run directory
    python builder.py runs/demo-store --config default --revision v1     # a local store revision

    from builder import ScaleQuest
    builder = ScaleQuest(config_name="default", data_dir="runs/demo-store", revision="v1")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
"""

from __future__ import annotations

import argparse

from scalequest_dataset.revisions.builder import ScaleQuest, ScaleQuestConfig

__all__ = ["ScaleQuest", "ScaleQuestConfig"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build one stage of a run directory or local store revision.")
    parser.add_argument("data_dir", help="a run directory or a local store (git repository)")
    parser.add_argument("--config", default="default", help="the stage (dataset config) to build")
    parser.add_argument("--revision", help="for a store: a tag, branch or commit (default: main)")
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)
    builder = ScaleQuest(config_name=args.config, data_dir=args.data_dir, revision=args.revision)
    builder.download_and_prepare()
    print(builder.as_dataset(split=args.split))


if __name__ == "__main__":
    main()
