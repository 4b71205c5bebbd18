"""Revisions you can trust (issue 11), each "why" of the issue as a test, then the whole story end to end: run,
publish, re-run independently, publish again (no commit), tamper a published blob in a copy of the store
(diff and regenerate report it), attest."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from support.runs import CLI, cli_env, data_files, tiny_run

import scalequest_dataset
from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.revisions.publish import publish
from scalequest_dataset.revisions.stores import VerificationError, open_store
from scalequest_dataset.run import RunLayout
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.files import sha256_file
from scalequest_dataset.run.records import Manifest

STAGES = ["questions", "language"]


@pytest.fixture(scope="module")
def run_a(tiny_runs) -> Path:
    return tiny_runs(stages=STAGES)  # shared by the session (read only: tests change copies)


@pytest.fixture(scope="module")
def run_b(tiny_runs) -> Path:
    """An independent re-run of the same config (another directory, another batch size)."""
    return tiny_runs("engine.batch_size=3", stages=STAGES)


def flip_a_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def tamper_git_blob(store: Path, blob_id: str) -> None:
    """Change the bytes of one object of a git store in place (its id stays: only hashing the content shows)."""
    path = store / "objects" / blob_id[:2] / blob_id[2:]
    raw = bytearray(zlib.decompress(path.read_bytes()))
    raw[len(raw) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(zlib.compress(bytes(raw)))


def test_a_flipped_byte_is_refused_at_publish_naming_the_file_and_both_digests(run_a, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_a, copy)
    manifest = rec.read(Manifest, RunLayout(copy).manifest("language"))
    info = manifest.split_files("train")[2]
    shard = RunLayout(copy).data_dir("language") / info.file
    flip_a_byte(shard)
    with pytest.raises(VerificationError) as err:
        publish(copy, tmp_path / "store")
    assert info.file in str(err.value) and info.sha256 in str(err.value) and sha256_file(shard) in str(err.value)
    assert not (tmp_path / "store").exists()  # nothing committed (not even the stage that was fine)
    res = subprocess.run([*CLI, "publish", str(copy), "--to", str(tmp_path / "store")], capture_output=True,
                         text=True, env=cli_env())
    assert res.returncode == 2 and info.file in res.stderr and "committed" not in res.stdout


def test_an_independent_rerun_publishes_no_commit_and_says_so(run_a, run_b, tmp_path):
    assert data_files(run_a) == data_files(run_b)
    store = tmp_path / "store"
    publish(run_a, store)
    before = (open_store(store).head(), open_store(store).tags())
    res = subprocess.run([*CLI, "publish", str(run_b), "--to", str(store)], capture_output=True, text=True,
                         env=cli_env())
    assert res.returncode == 0, res.stderr
    assert (open_store(store).head(), open_store(store).tags()) == before
    lines = [x for x in res.stdout.splitlines() if x.startswith(tuple(STAGES))]
    assert len(lines) == 2 and all("no commit" in x and "unchanged" in x for x in lines), res.stdout
    assert "committed" not in res.stdout and "moved" not in res.stdout and "created" not in res.stdout


def test_another_environment_is_named_when_only_the_execution_differs(run_a, tmp_path):
    """Identical data reproduced with another torch: no commit, and the message lists what differs."""
    other = tmp_path / "other"
    shutil.copytree(run_a, other)
    path = RunLayout(other).manifest("questions")
    data = json.loads(path.read_text())
    for env in data["execution"]["environments"].values():
        env["libraries"]["torch"] = "9.9.9"
    path.write_text(json.dumps(data))
    publish(run_a, tmp_path / "store", ["questions"])
    (result,) = publish(other, tmp_path / "store", ["questions"])
    assert not result.created and result.reproduced == ["environment.libraries.torch"]
    assert "reproduced in another environment" in result.describe() and "committed" not in result.describe()


def test_the_same_rows_from_another_parquet_writer_are_the_same_data(run_a, tmp_path):
    """A shard whose footer says another pyarrow wrote it: same content digest, other bytes; diff and
    regenerate say so, with the cause, and publish makes no commit."""
    other = tmp_path / "other"
    shutil.copytree(run_a, other)
    layout = RunLayout(other)
    data = json.loads(layout.manifest("questions").read_text())
    info = data["shards"][0]["files"]["train"]
    shard = layout.data_dir("questions") / info["file"]
    blob = shard.read_bytes()
    assert blob.count(b"parquet-cpp-arrow version 26.0.1") == 1, "pin the test to the writer's version string"
    shard.write_bytes(blob.replace(b"parquet-cpp-arrow version 26.0.1", b"parquet-cpp-arrow version 27.0.0"))
    info.update(sha256=sha256_file(shard), writer="parquet-cpp-arrow version 27.0.0")
    layout.manifest("questions").write_text(json.dumps(data))
    report = scalequest_dataset.diff(str(run_a), str(other), stage="questions")
    (q,) = report.stages
    assert report.identical and q.status == "files-only"
    assert q.splits["train"].file_causes == [
        "files written by parquet-cpp-arrow version 26.0.1 vs parquet-cpp-arrow version 27.0.0"]
    publish(run_a, tmp_path / "store", ["questions"])
    (again,) = publish(other, tmp_path / "store", ["questions"])
    assert not again.created and "files.writer" in again.reproduced


def test_a_local_path_that_does_not_exist_is_an_error_naming_it(run_a, tmp_path):
    for missing in (f"{tmp_path}/nostore@v1", "tests/nostore@v1"):
        with pytest.raises(ConfigError, match=missing.split("@")[0]):
            scalequest_dataset.diff(str(run_a), missing)


def test_regenerate_with_another_engine_says_why_it_cannot(run_a, tmp_path):
    publish(run_a, tmp_path / "store", ["questions"])
    with pytest.raises(ConfigError, match="made with the transformers engine"):
        scalequest_dataset.regenerate(f"{tmp_path / 'store'}@v1-questions", "questions", engine="vllm")


def test_a_manifest_from_someone_else_is_validated_strictly(run_a, tmp_path):
    publish(run_a, tmp_path / "store", ["questions"])
    store = open_store(tmp_path / "store")
    data = json.loads(store.read("manifests/questions.json", "main"))
    data["recipe"]["seed"] = "zero"
    data["execute_this"] = "rm -rf /"
    store.commit({"manifests/questions.json": json.dumps(data).encode()}, [], "edited", store.head())
    for call in (lambda: scalequest_dataset.diff(str(run_a), f"{tmp_path / 'store'}@main"),
                 lambda: scalequest_dataset.regenerate(f"{tmp_path / 'store'}@main", "questions")):
        with pytest.raises(ConfigError) as err:
            call()
        assert "manifests/questions.json" in str(err.value)
        assert "recipe.seed" in str(err.value) and "execute_this" in str(err.value)


def test_regenerate_never_runs_remote_code_because_a_manifest_asks(tmp_path, pool):
    """The reward stage asks for trust_remote_code: regenerate refuses unless the user names the model."""
    sets = ["stages.questions.generators.tiny-b.count=0", "stages.reward.trust_remote_code=true"]
    run = tiny_run(tmp_path / "run", pool, *sets).root
    publish(run, tmp_path / "store", ["questions", "language", "dedup", "solvability", "difficulty", "responses",
                                      "reward"])
    source = f"{tmp_path / 'store'}@v1-reward"
    with pytest.raises(ConfigError, match=r"builtin:tiny-reward.*--trust-remote-code builtin:tiny-reward"):
        scalequest_dataset.regenerate(source, "reward", pool=pool)
    report = scalequest_dataset.regenerate(source, "reward", pool=pool, trust_remote_code=["builtin:tiny-reward"])
    assert report.all_match, report.describe()


def test_runs_and_publishes_under_an_ascii_locale(tmp_path):
    """A DeepSeek pre-query template (U+FF5C, U+2581) with LC_ALL=C and PYTHONUTF8=0: every text file UTF-8."""
    env = cli_env(LC_ALL="C", LANG="C", PYTHONUTF8="0")
    env.pop("PYTHONIOENCODING", None)
    out, store = tmp_path / "run", tmp_path / "store"
    sets = ["--set", "stages.questions.generators.tiny-a.template=deepseek", "--set",
            "stages.questions.generators.tiny-b.count=0"]
    for cmd in ([*CLI, "run", "--preset", "tiny", "--out", str(out), "--stage", "questions", "--no-progress", *sets],
                [*CLI, "publish", str(out), "--to", str(store)], [*CLI, "status", str(out)],
                [*CLI, "diff", str(out), f"{store}@v1-questions"]):
        res = subprocess.run(cmd, env=env, capture_output=True)
        assert res.returncode == 0, res.stderr.decode("utf-8", "replace")[-3000:]
    manifest = (out / "manifests" / "questions.json").read_bytes().decode("utf-8")
    assert "<\uff5cbegin\u2581of\u2581sentence\uff5c>User: " in manifest
    assert "\uff5c" in open_store(store).read("manifests/questions.json", "v1-questions").decode("utf-8")


def test_every_command_the_card_shows_runs(run_a, tmp_path):
    """The card's commands are real: each bash line and the python block, run against the published store."""
    store = tmp_path / "store"
    publish(run_a, store)
    readme = open_store(store).read("README.md", "main").decode("utf-8")
    blocks = readme.split("```")
    python = [b.removeprefix("python") for b in blocks[1::2] if b.startswith("python")]
    bash = [line for b in blocks[1::2] if b.startswith("bash") for line in b.splitlines()[1:] if line.strip()]
    assert python and bash
    skipped = [line for line in bash if line.startswith("pip install")]
    assert skipped == ["pip install scalequest-dataset"]  # installs from PyPI: the one line not run offline
    commands = [line for line in bash if line not in skipped]
    assert {c.split()[1] for c in commands} == {"regenerate"} and len(commands) == len(STAGES)
    for command in commands:
        res = subprocess.run(command.replace("scalequest ", f"{CLI[0]} -m scalequest_dataset.cli ", 1), shell=True,
                             capture_output=True, text=True, env=cli_env())
        assert res.returncode == 0, command + "\n" + res.stdout[-2000:] + res.stderr[-2000:]
    code = "\n".join(python)
    res = subprocess.run([CLI[0], "-c", code + "\nprint(questions.num_rows, language.num_rows)"],
                         capture_output=True, text=True, env=cli_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["40", "40"]


def test_the_whole_story(run_a, run_b, tmp_path, pool):
    store = tmp_path / "store"
    first = publish(run_a, store)
    assert all(r.created for r in first)
    assert not any(r.created for r in publish(run_b, store))  # an independent re-run: no commit
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    manifest = rec.parse(Manifest, open_store(copy).read("manifests/questions.json", "v1-questions"), "m")
    target = manifest.split_files("train")[1]
    tamper_git_blob(copy, open_store(copy).files("v1-questions")[f"data/questions/{target.file}"].value)

    res = subprocess.run([*CLI, "diff", f"{store}@main", f"{copy}@main"], capture_output=True, text=True, env=cli_env())
    assert res.returncode == 1 and "CORRUPT" in res.stdout and target.file in res.stdout, res.stdout + res.stderr
    report = scalequest_dataset.regenerate(f"{copy}@v1-questions", "questions", shards=[1], pool=pool,
                                           scratch=tmp_path / "regen-bad")
    status = {f.split: f.status for f in report.shards[0].files}
    others = {split: "NOT REBUILT" for split in manifest.shards[1].files if split != "train"}  # a split with no rows has no file
    assert not report.all_match and status == {"train": "STORE CORRUPT", **others}
    assert "STORE CORRUPT" in report.describe()

    good = scalequest_dataset.regenerate(f"{store}@v1-language", "language", pool=pool, attest=True,
                                         scratch=tmp_path / "regen-good")
    assert good.all_match and good.attestation
    written = {f.name.split("-")[0] for f in (run_a / "data" / "language").glob("*.parquet")}
    assert {f.split for s in good.shards for f in s.files} == written  # every split written is compared
    s = open_store(store)
    after = s.files(good.attestation)
    before = s.files(first[-1].commit)
    added = sorted(set(after) - set(before))
    assert len(added) == 1 and added[0].startswith("attestations/language/")
    assert {p: d for p, d in after.items() if p not in added and p != "README.md"} == {
        p: d for p, d in before.items() if p != "README.md"}  # nothing else in the store changed
    attestation = json.loads(s.read(added[0], "main"))
    assert attestation["shards_matched"] == attestation["shards_checked"] == len(good.shards)
    assert "Reproduced" in s.read("README.md", "main").decode() and "language" in attestation["stage"]
    assert len(s.commits()) == len(first) + 1  # its own commit
    language = rec.parse(Manifest, s.read("manifests/language.json", "main"), "language")
    loaded = scalequest_dataset.load_dataset(str(store), "language", revision="main")
    assert loaded.num_rows == language.counts.rows_out > 0  # the store still loads after the attestation
