"""Plots: every figure renders to PNG and SVG, the same input gives the same bytes (whatever the
matplotlibrc), no date or software in the metadata, and the axes carry their labels and units."""

from __future__ import annotations

import re
import struct

import matplotlib
import pytest

from scalequest_dataset.diffing import plots
from scalequest_dataset.stages.base import DIFFICULTY_FIGURE, GENERATORS_FIGURE, REWARD_FIGURE, length_figure

QUERY = length_figure("query")

FUNNEL = [{"stage": "questions", "rows_in": 1000, "rows_out": 1000}, {"stage": "language", "rows_in": 1000,
          "rows_out": 912}, {"stage": "responses", "rows_in": 400, "rows_out": 1590}]
EDGES, COUNTS = plots.bin_values({"A": [120, 300, 310, 290, 1300], "B": [110, 305, 900]}, bins=5)

FIGURES = {
    "funnel": lambda fmt: plots.funnel_chart(FUNNEL, fmt=fmt),
    "funnel comparison": lambda fmt: plots.funnel_comparison(FUNNEL, FUNNEL[:2], fmt=fmt),
    "stage": lambda fmt: plots.stage_comparison({"A": {"rows in": 10, "rows out": 8, "dropped": 2},
                                                 "B": {"rows in": 10, "rows out": 5, "dropped": 5}}, fmt=fmt),
    # a stage's declared figures (stages.base), as the card and the diff report draw them
    "lengths": lambda fmt: plots.histogram_chart(EDGES, COUNTS, title=QUERY.heading, xlabel=QUERY.axis, fmt=fmt),
    "difficulty": lambda fmt: plots.histogram_chart([0, 0.5, 1], {"A": [3, 1]}, title=DIFFICULTY_FIGURE.heading,
                                                    xlabel=DIFFICULTY_FIGURE.axis, fmt=fmt),
    "reward": lambda fmt: plots.histogram_chart([-1, 0, 1], {"A": [3, 1], "B": [0, 4]}, title=REWARD_FIGURE.heading,
                                                xlabel=REWARD_FIGURE.axis, fmt=fmt),
    "generators": lambda fmt: plots.bar_chart({"A": {"qwen": 600, "ds": 400}, "B": {"qwen": 500}},
                                              title=GENERATORS_FIGURE.heading, xlabel=GENERATORS_FIGURE.axis, fmt=fmt),
    "drops": lambda fmt: plots.drop_reasons({"v1": {"duplicate": 12, "unsolvable": 300}}, fmt=fmt),
    "empty": lambda fmt: plots.drop_reasons({"A": {}, "B": {}}, fmt=fmt),
}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def png_text_chunks(data: bytes) -> list[bytes]:
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            chunks.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("name", FIGURES)
def test_figures_are_deterministic_and_carry_no_date_or_software(name):
    svg, png = FIGURES[name]("svg"), FIGURES[name]("png")
    assert svg == FIGURES[name]("svg") and png == FIGURES[name]("png")
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    assert b"<dc:date>" not in svg and b"Matplotlib v" not in svg
    assert png_text_chunks(png) == []  # no Software (nor any other) text chunk
    width, height = png_size(png)
    assert width == plots.WIDTH * plots.DPI and height >= 200


def test_a_users_matplotlibrc_changes_nothing():
    before = FIGURES["lengths"]("svg")
    with matplotlib.rc_context({"lines.linewidth": 7, "font.size": 20, "axes.facecolor": "black",
                                "svg.hashsalt": None}):
        assert FIGURES["lengths"]("svg") == before


def svg_texts(svg: bytes) -> str:
    """matplotlib writes each text of the figure as a comment beside its glyph paths."""
    return "\n".join(re.findall(r"<!-- (.*?) -->", svg.decode()))


def test_axes_have_labels_and_units():
    texts = svg_texts(FIGURES["lengths"]("svg"))
    assert "Length of query" in texts and "query length (characters)" in texts and "rows" in texts
    assert "A (n=5)" in texts and "B (n=3)" in texts
    assert "difficulty score (0 = easiest, 1 = hardest)" in svg_texts(FIGURES["difficulty"]("svg"))
    assert "reward (reward-model score)" in svg_texts(FIGURES["reward"]("svg"))
    funnel = svg_texts(FIGURES["funnel"]("svg"))
    assert all(s in funnel for s in ("questions", "language", "responses", "rows in", "rows out", "1,590"))
    assert "rows dropped" in svg_texts(FIGURES["drops"]("svg")) and "no rows" in svg_texts(FIGURES["empty"]("svg"))


def test_bin_values_shares_buckets_and_skips_non_finite():
    edges, counts = plots.bin_values({"a": [0, 1, 2, float("nan")], "b": [2, 4, float("inf")]}, bins=4)
    assert edges == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert counts == {"a": [1, 1, 1, 0], "b": [0, 0, 1, 1]}
    assert plots.bin_values({"a": [5, 5]}, bins=2)[0] == [4.5, 5.0, 5.5]  # one value: a bucket centred on it


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="'svg' or 'png'"):
        plots.funnel_chart(FUNNEL, fmt="jpg")  # type: ignore[arg-type]
