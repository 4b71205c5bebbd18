"""Every input error a user (or someone else's file) can hand the CLI exits 2 with one line naming the file, field
or value, and no traceback (only -v prints one): bad YAML in a preset or a run's config, bytes that are not
UTF-8, a `--set` value that is not YAML, a benchmark file that is empty, not UTF-8 or not JSON. (What a
revision from someone else holds - a corrupt object, a symlink, card YAML, an attestation, absurd or oversized
manifests - goes through every reader in tests/revisions/test_hostile_store.py, with the same one-line check.)"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support.runs import tiny_run

from scalequest_dataset import cli

UPSTREAM = ["questions", "language", "dedup"]  # what decontamination reads, run once for the module


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, pool) -> Path:
    return tiny_run(tmp_path_factory.mktemp("upstream") / "run", pool, stages=UPSTREAM).root


def _preset(tmp: Path, blob: bytes) -> list[str]:
    (tmp / "p.yaml").write_bytes(blob)
    return ["run", "--preset", str(tmp / "p.yaml"), "--out", str(tmp / "out")]


def _config(tmp: Path, blob: bytes, upstream: Path) -> list[str]:
    shutil.copytree(upstream, tmp / "out")
    (tmp / "out" / "config.yaml").write_bytes(blob)
    return ["status", str(tmp / "out")]


def _benchmark(tmp: Path, blob: bytes, upstream: Path) -> list[str]:
    shutil.copytree(upstream, tmp / "out")
    (tmp / "bench.jsonl").write_bytes(blob)
    spec = f"{{benchmarks: [{{name: b, path: '{tmp / 'bench.jsonl'}', columns: [q]}}]}}"
    return ["run", "--config", str(tmp / "out" / "config.yaml"), "--out", str(tmp / "out"), "--stage",
            "decontamination", "--set", f"stages.decontamination={spec}"]


# (argv builder, what the one line must name)
CASES: dict[str, tuple[Callable[..., list[str]], list[str]]] = {
    "preset-bad-yaml": (lambda t, u: _preset(t, b"seed: [1,\n"), ["p.yaml", "not valid YAML", "line 2"]),
    "preset-not-utf8": (lambda t, u: _preset(t, b"seed: \xff\xfe\n"), ["p.yaml", "not UTF-8", "byte 7"]),
    "preset-not-a-mapping": (lambda t, u: _preset(t, b"- a\n- b\n"), ["p.yaml", "mapping"]),
    "preset-a-folder": (lambda t, u: (t / "d.yaml").mkdir() or ["run", "--preset", str(t / "d.yaml"), "--out",
                                                                  str(t / "out")], ["d.yaml", "not a file"]),
    "set-not-yaml": (lambda t, u: ["run", "--preset", "tiny", "--out", str(t / "out"), "--set", "seed=[1,"],
                     ["--set seed", "'[1,'", "not valid YAML"]),
    "set-not-utf8": (lambda t, u: ["presets", "tiny", "--set", "seed=\udcff"], ["--set seed", "not UTF-8"]),
    "run-config-not-utf8": (lambda t, u: _config(t, b"seed: \xff\n", u), ["config.yaml", "not UTF-8"]),
    "run-config-bad-yaml": (lambda t, u: _config(t, b"seed: {\n", u), ["config.yaml", "not valid YAML"]),
    "benchmark-empty": (lambda t, u: _benchmark(t, b"", u),
                        ["stages.decontamination.benchmarks.b.path", "bench.jsonl", "is empty"]),
    "benchmark-not-utf8": (lambda t, u: _benchmark(t, b'{"q": "a"}\n{"q": "\xff"}\n', u),
                           ["bench.jsonl", "line 2", "not UTF-8"]),
    "benchmark-not-json": (lambda t, u: _benchmark(t, b'{"q": "a"\n', u), ["bench.jsonl", "cannot be read as json"]),
}


@pytest.mark.parametrize("case", CASES)
def test_an_input_error_exits_2_in_one_line_naming_it(case, upstream, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, needles = CASES[case]
    argv = [*build(tmp_path, upstream), "--no-progress"]
    before = _files(tmp_path / "out")
    code = cli.main(argv)
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert "Traceback" not in out + err and len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert _files(tmp_path / "out") == before  # nothing already written is lost or changed
    code = cli.main(["-v", *argv])  # -v: the traceback too
    assert code == 2 and "Traceback" in capfd.readouterr().err


def _files(root: Path) -> dict[str, bytes]:
    """A run directory's data, plans, records and manifests (its log grows; its config.yaml may take a stage
    that has not run yet; its lock says who runs in it now)."""
    kept = [p for p in sorted(root.rglob("*")) if p.is_file() and "logs" not in p.parts
            and p.name != "config.yaml" and not p.name.startswith("lock")] if root.exists() else []
    return {str(p.relative_to(root)): p.read_bytes() for p in kept}
