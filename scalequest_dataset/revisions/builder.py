"""A `datasets` builder over a run directory or a store revision: one BuilderConfig per stage, each with
the Features its stage declares (the same object the Parquet writer embeds), so every way of loading
gives the same types.

    from scalequest_dataset.revisions.builder import ScaleQuest
    builder = ScaleQuest(config_name="questions", data_dir="runs/demo")             # a run directory
    builder = ScaleQuest(config_name="default", data_dir="store", revision="v1")   # a local store revision
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")

It is imported, never published: datasets >= 4 no longer runs loading scripts, so published repositories
carry Parquet files and YAML `configs:` only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.parquet as pq

from ..run.urlpath import is_url
from ..stages import STAGE_ORDER, STAGES
from .load import verified_files
from .locator import Source, open_source


@dataclass
class ScaleQuestConfig(datasets.BuilderConfig):
    revision: str | None = None  # for a store: a tag, branch or commit (default: main)


class ScaleQuest(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = ScaleQuestConfig
    BUILDER_CONFIGS = [  # noqa: RUF012 - the class attribute datasets reads
        ScaleQuestConfig(name=s, description=STAGES[s].description) for s in STAGE_ORDER
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> datasets.DatasetInfo:
        stage = STAGES[self.config.name]
        return datasets.DatasetInfo(description=stage.description, features=stage.features,
                                    homepage="https://arxiv.org/abs/2410.18693", license="apache-2.0")

    def _source(self) -> Source:
        if not self.config.data_dir:
            raise ValueError("ScaleQuest needs data_dir: a run directory or a local store path")
        data_dir = self.config.data_dir  # a URL (s3://...) stays a string: a Path would fold its '//'
        return open_source(data_dir if is_url(data_dir) else Path(data_dir).expanduser(), self.config.revision)

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        """Only verified files of the version (`load.verified_files`), never a folder's listing."""
        src, stage = self._source(), self.config.name
        splits = []
        manifest = src.manifests().get(stage)
        for split in manifest.splits() if manifest else ["train"]:  # a missing stage: verified_files says so
            if split != "train" and STAGES[stage].dropped_features is None:
                continue
            files = [str(src.file(stage, f).path) for f in verified_files(src, stage, split)]
            splits.append(datasets.SplitGenerator(name=split, gen_kwargs={"files": files, "split": split}))
        return splits

    def _generate_examples(self, files: list[str], split: str):
        features = STAGES[self.config.name].features if split == "train" else \
            STAGES[self.config.name].dropped_features
        for path in files:  # streamed batch by batch: a stage never sits in memory whole
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    yield row["id"], features.encode_example(row) if features else row

