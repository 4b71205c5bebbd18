"""The stage registry: the diff's column statistics are read from the stage modules' source (no import of the
stages, nor of `datasets`) and must be what the imported classes declare."""

from __future__ import annotations

import subprocess
import sys

from scalequest_dataset.stages import REGISTRY, STAGE_ORDER, declared_statistics
from scalequest_dataset.stages.base import Stage


def test_statistics_read_from_source_equal_the_imported_classes():
    declared = declared_statistics()
    assert declared["*"] == Stage.statistics
    assert list(declared) == ["*", *STAGE_ORDER]
    for stage in REGISTRY:
        own = {k: v for k, v in stage.statistics.items() if stage.__dict__.get("statistics") is not None}
        assert declared[stage.name] == own, stage.name
    assert declared["difficulty"] == {"difficulty": "unit", "keep_draw": "unit"}  # the reading finds something


def test_reading_them_imports_neither_the_stages_nor_datasets():
    code = ("import sys; from scalequest_dataset.diffing.stats import column_kinds; k = column_kinds(); "
            "assert k['reward'] == 'number' and k['drop_reason'] == 'category', k; "
            "print(sorted(m for m in sys.modules if m == 'datasets' or m.startswith('scalequest_dataset.stages.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
