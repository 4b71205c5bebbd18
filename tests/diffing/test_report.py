"""The diff of two full `tiny` runs (every stage, every split, the difficulty stage's list column) and its
html report opened in a real headless Chromium: the page renders, its plots load, its tables have rows,
no console errors. The page and a screenshot are kept under tests/artifacts/ (git-ignored).

Chromium comes from the distribution (tools/setup.sh installs it where it can). Without it this test skips with
the command to run; CI (.ci/run) sets SCALEQUEST_REQUIRE_BROWSER=1, so there it fails instead of skipping."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from support.runs import tiny_run

import scalequest_dataset
from scalequest_dataset.diffing.compare import DiffReport
from scalequest_dataset.diffing.report import render

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CLI = [sys.executable, "-m", "scalequest_dataset.cli"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
NO_CHROMIUM = "Chromium is not installed: run `sudo apt-get install -y chromium chromium-driver`"


@pytest.fixture(scope="module")
def seed0(tmp_path_factory, pool) -> Path:
    return tiny_run(tmp_path_factory.mktemp("seed0"), pool).root


@pytest.fixture(scope="module")
def seed1(tmp_path_factory, pool) -> Path:
    return tiny_run(tmp_path_factory.mktemp("seed1"), pool, "seed=1").root


@pytest.fixture(scope="module")
def report(seed0, seed1) -> DiffReport:
    return scalequest_dataset.diff(str(seed0), str(seed1), sample=3)


def test_two_full_runs_with_different_seeds(seed0, seed1, report):
    """Issue 11: this diff died on the difficulty stage's list<string> column (exit 2)."""
    stages = {s.stage: s for s in report.stages}
    assert list(stages) == ["questions", "language", "dedup", "solvability", "difficulty", "responses", "reward",
                            "default"]
    assert all(s.status == "changed" for s in stages.values())
    for name in ("language", "dedup", "solvability", "difficulty", "responses"):  # the filter stages
        # every split either side wrote (a split with no rows writes no file)
        written = {f.name.split("-")[0] for run in (seed0, seed1) for f in (run / "data" / name).glob("*.parquet")}
        assert set(stages[name].splits) == written and "train" in written, name
    assert stages["questions"].rows["changed_by_column"]["query"] == 40
    assert stages["dedup"].splits["dropped"].rows["added"] == 2  # seed 1 has duplicate questions
    res = subprocess.run([*CLI, "diff", str(seed0), str(seed1), "--stage", "difficulty"], capture_output=True,
                         text=True)
    assert res.returncode == 1 and "difficulty: changed" in res.stdout, res.stdout + res.stderr


def test_a_list_column_changed_on_both_sides(seed0, tmp_path, pool):
    """Three difficulty samples instead of two: the same rows, each with a longer `difficulty_answers`."""
    more = tiny_run(tmp_path / "k3", pool, "stages.difficulty.samples=3").root
    report = scalequest_dataset.diff(str(seed0), str(more))
    stages = {s.stage: s for s in report.stages}
    assert all(stages[s].status == "identical" for s in ("questions", "language", "dedup", "solvability"))
    difficulty = stages["difficulty"]
    for split in ("train", "dropped"):
        rows = difficulty.splits[split].rows
        assert rows["changed_by_column"].get("difficulty_answers") == rows["compared"] > 0, (split, rows)
    assert any(w["field"] == "config.stages.difficulty.samples" for w in difficulty.why)


def test_html_report_has_plots_tables_and_text_diffs(report):
    page = render(report, "html")
    assert page.count("<img ") >= 20 and "<svg" not in page  # plots are data: URIs, nothing inline to break
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "Columns with changed rows" in page and "<del>" in page and "<ins>" in page
    assert "Length of query" in _decoded_images(page) and "Generator mix" in _decoded_images(page)


def _decoded_images(page: str) -> str:
    import base64

    return "\n".join(base64.b64decode(m).decode() for m in re.findall(r"data:image/svg\+xml;base64,([^']+)", page))


# ---------------------------------------------------------------------------------------------- browser

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(
  e.message || ('failed to load ' + ((e.target && (e.target.src || e.target.href)) || '?')).slice(0, 120)), true);
for (const level of ['error', 'warn']) {
  const original = console[level];
  console[level] = (...args) => { window.__errors.push(level + ': ' + args.join(' ')); original(...args); };
}
window.addEventListener('load', () => {
  const images = [...document.images];
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    tables: [...document.querySelectorAll('table')].map(t => t.tBodies.length ? t.tBodies[0].rows.length : t.rows.length),
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
    height: document.documentElement.scrollHeight,
    errors: window.__errors,
  });
  document.body.appendChild(probe);
});
</script>"""


def _browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        message = NO_CHROMIUM
        if os.environ.get("SCALEQUEST_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless, offline, a fresh profile; console messages on stderr (--enable-logging)."""
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_html_report_renders_in_headless_chromium(report, tmp_path):
    browser = _browser()
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "diff-report.html"
    page.write_text(render(report, "html"), encoding="utf-8")
    probed = tmp_path / "probed.html"  # the same page with a probe that reports what the browser made of it
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")

    res = _chromium(browser, tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert found, f"no probe in the dumped DOM (exit {res.returncode}):\n{res.stderr[-3000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["images"] >= 20 and seen["broken"] == [], seen["broken"]
    assert seen["tables"] and all(n > 0 for n in seen["tables"]), seen["tables"]
    assert seen["errors"] == [], seen["errors"]
    assert seen["headings"][0] == "Summary" and any(h.startswith("difficulty") for h in seen["headings"])
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console

    shot = ARTIFACTS / "diff-report.png"
    height = min(max(int(seen["height"]), 800), 16_000)
    res = _chromium(browser, tmp_path / "profile-shot", f"--window-size=1280,{height}", f"--screenshot={shot}",
                    page.as_uri())
    assert shot.exists(), res.stderr[-3000:]
    width, png_height = struct.unpack(">II", shot.read_bytes()[16:24])  # the PNG header's IHDR
    assert (width, png_height) == (1280, height)
    print(f"\nhtml report: {page}\nscreenshot: {shot}")
