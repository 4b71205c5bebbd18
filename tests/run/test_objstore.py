"""Run directories on object storage, against a real S3 API server on 127.0.0.1 (moto's, tests/support/s3_server.py)
reached through the usual environment (AWS_ENDPOINT_URL and keys): the `tiny` stages with their run directory on
S3, run by 2 local worker processes, write the local run's bytes, as whole objects, with the plan claimed by an
exclusive create; `status`, `finalize`, `diff`, `load` and `publish` read such a run directory; a URL whose
filesystem is not installed exits 2 naming the package, and no local folder named after a URL ever appears."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.runs import CLI, cli_env, data_files

from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.run import RunLayout, Runner
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.plan import plan_stage
from scalequest_dataset.run.records import Manifest, Plan, ShardRecord
from scalequest_dataset.run.urlpath import UrlPath, as_path

pytest.importorskip("s3fs")
STAGES = ["questions", "language", "dedup", "solvability"]


@pytest.fixture(scope="module")
def reference(tiny_runs) -> Path:
    return tiny_runs(stages=STAGES)  # shared by the session (read only)


@pytest.fixture(scope="module")
def bucket(s3) -> str:
    return s3.make_bucket("runs")


def s3_files(url: str) -> dict[str, bytes]:
    """Every Parquet object of a run directory on S3, by path relative to it (as `data_files` names them)."""
    root = as_path(url)
    assert isinstance(root, UrlPath)
    names = root.fs.find(f"{root.path}/data")
    return {n[len(root.path) + 1:]: root.fs.cat_file(n) for n in sorted(names) if n.endswith(".parquet")}


def url_folders(where: Path) -> list[Path]:
    """Local folders named after a URL scheme ("s3:", "gs:") anywhere under `where`."""
    return [p for p in where.rglob("*") if p.is_dir() and p.name.endswith(":")]


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=cli_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def main(capfd, monkeypatch, tmp_path):
    """`main(*argv)`: the CLI in this process (no start-up cost), in an empty working folder -> (code, out, err)."""
    from scalequest_dataset import cli as entry

    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        capfd.readouterr()
        code = entry.main(list(argv))
        out, err = capfd.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def s3_run(bucket, tmp_path_factory) -> tuple[str, Path]:
    """The tiny stages run by 2 local worker processes into s3://runs/w2 (from the CLI, in a fresh folder)."""
    cwd = tmp_path_factory.mktemp("cwd")
    url = f"{bucket}/w2"
    res = cli("run", "--preset", "tiny", "--out", url, "--workers", "2", "--no-progress",
              *[a for s in STAGES for a in ("--stage", s)], cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    return url, cwd


def test_two_local_workers_on_s3_write_the_local_bytes_as_objects(s3_run, reference):
    url, cwd = s3_run
    assert s3_files(url) == data_files(reference)
    layout = RunLayout(url)
    for stage in STAGES:
        assert rec.read(Manifest, layout.manifest(stage)).identity() == \
            rec.read(Manifest, RunLayout(reference).manifest(stage)).identity()
    workers = {rec.read(ShardRecord, p).execution.worker for p in layout.state_dir("questions").glob("shard-*.json")}
    assert workers == {"local-0", "local-1"}  # both processes wrote shards to S3
    root = layout.root
    leftovers = [n for n in root.fs.find(root.path) if n.endswith(".tmp") or "/." in n.split(root.path, 1)[1]]
    assert leftovers == []  # no temporary objects: every object was written once, whole
    assert url_folders(cwd) == [] and not (cwd / "s3:").exists()
    assert (layout.local / "logs" / "worker-0.log").is_file()  # this machine's logs: under its cache, by digest


def test_status_and_finalize_read_an_s3_run(s3_run, main, tmp_path):
    url, _ = s3_run
    layout = RunLayout(url)
    manifest = layout.manifest("solvability")
    blob = manifest.read_bytes()
    manifest.unlink()  # as after a Slurm array: every shard done, no manifest yet
    code, out, err = main("status", url)
    assert code == 0, err
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert lines["questions"][1:] == ["5/5", "40", "complete"]
    assert lines["solvability"][-1] == "partial" and lines["solvability"][1] == "5/5"
    code, out, err = main("finalize", url)
    assert code == 0, err
    assert manifest.read_bytes() == blob  # the same manifest, byte for byte
    assert url_folders(tmp_path) == []


def test_diff_load_and_publish_read_an_s3_run(s3_run, reference, main, tmp_path):
    url, _ = s3_run
    code, out, err = main("diff", str(reference), url)
    assert code == 0, out[-2000:] + err[-2000:]  # 0: the same data
    rows = rec.read(Manifest, RunLayout(reference).manifest("solvability")).rows()
    code, out, err = main("load", url, "solvability", "--head", "1")
    assert code == 0, err[-2000:]
    assert f"num_rows: {rows}" in out
    store = tmp_path / "store"
    code, out, err = main("publish", url, "--to", str(store))
    assert code == 0, err[-2000:]
    assert "solvability" in out and "committed" in out
    code, out, err = main("diff", f"{store}@v1-solvability", str(reference), "--stage", "solvability")
    assert code == 0, out[-2000:] + err[-2000:]
    assert url_folders(tmp_path) == []


def test_the_datasets_builder_and_run_from_read_an_s3_run(s3_run, reference, main, tmp_path):
    """The `datasets` builder over an S3 run directory gives the local run's rows; `run --from` an S3 run into an S3
    run directory takes every stage from it (no engine call) and writes the same objects."""
    from scalequest_dataset.revisions.builder import ScaleQuest

    url, _ = s3_run
    rows = {}
    for name, data_dir in (("s3", url), ("local", str(reference))):
        builder = ScaleQuest(config_name="solvability", data_dir=data_dir, cache_dir=str(tmp_path / f"cache-{name}"))
        builder.download_and_prepare()
        rows[name] = builder.as_dataset(split="train").to_list()
    assert rows["s3"] == rows["local"] and rows["s3"]
    derived = f"{url}-derived"
    code, _, err = main("run", "--from", url, "--out", derived, "--no-progress",
                          *[a for s in STAGES for a in ("--stage", s)])
    assert code == 0, err[-2000:]
    assert s3_files(derived) == data_files(reference)
    for stage in STAGES:  # taken whole from the S3 run: nothing computed
        reuse = rec.read(Manifest, RunLayout(derived).manifest(stage)).execution.reuse
        assert reuse is not None and (reuse.mode, reuse.computed, reuse.source) == ("stage", 0, url), stage
    assert url_folders(tmp_path) == []


def test_folders_that_must_be_local_refuse_a_url(s3_run, main, capfd, tmp_path):
    """regenerate's scratch space and the demo's run and store are local folders: a URL exits 2 naming the option,
    and no folder named 's3:' appears."""
    url, _ = s3_run
    for args, option in ((["regenerate", url, "--stage", "questions", "--scratch", "s3://runs/scratch"], "--scratch"),
                         (["demo", "--out", "s3://runs/demo"], "--out"), (["demo", "--store", "s3://runs/st"], "--store")):
        with pytest.raises(SystemExit) as exit_:
            main(*args)
        assert exit_.value.code == 2
        err = capfd.readouterr().err
        assert f"{option} must be a local folder, not a URL" in err, err
    assert url_folders(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_a_damaged_object_is_refused_by_the_readers(s3_run, main, tmp_path):
    """A byte changed in an object after its stage completed: diff, load and publish name the file (each fetches
    the object again: a copy fetched before says nothing about it now); publish writes nothing."""
    url, _ = s3_run
    layout = RunLayout(url)
    info = rec.read(Manifest, layout.manifest("questions")).split_files("train")[0]
    obj = layout.data_dir("questions") / info.file
    blob = obj.read_bytes()
    try:
        obj.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
        for args in (["load", url, "questions"], ["publish", url, "--to", str(tmp_path / "store")]):
            code, _, err = main(*args)
            assert code == 2, err[-2000:]
            assert info.file in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "store").exists()
    finally:
        obj.write_bytes(blob)


def test_a_plan_on_s3_is_claimed_by_an_exclusive_create(bucket):
    """Concurrent planners agree: the first plan object wins, a later planner adopts it (an exclusive create
    refuses to overwrite, where a plain PUT would have replaced it)."""
    url = f"{bucket}/claim"
    layout = RunLayout(url)
    config = resolve_config("tiny")
    from scalequest_dataset.run.plan import adopt_config

    adopt_config(layout, config)
    first = plan_stage(layout, config, "questions")
    planted = first.model_copy(update={"shards": first.shards[:1]})  # another planner's (different) plan
    layout.plan("questions").unlink()
    layout.plan("questions").create(rec.to_bytes(planted))
    with pytest.raises(FileExistsError):
        layout.plan("questions").create(rec.to_bytes(first))
    assert plan_stage(layout, config, "questions") == planted
    assert rec.read(Plan, layout.plan("questions")) == planted


def test_a_url_whose_filesystem_is_not_installed_exits_2_naming_the_package(main, tmp_path):
    for url, package in (("gs://bucket/run", "gcsfs"), ("az://container/run", "adlfs")):
        for args in (["run", "--preset", "tiny", "--out", url, "--no-progress"], ["status", url], ["finalize", url],
                     ["publish", url, "--to", "store"], ["load", url, "questions"]):
            code, _, err = main(*args)
            assert code == 2, err
            assert f"pip install {package}" in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written, least of all a folder named "gs:"


def test_a_url_that_lost_a_slash_in_a_local_path_is_refused():
    with pytest.raises(ConfigError, match="s3://bucket/run"):
        as_path(Path("s3://bucket/run"))  # pathlib makes it "s3:/bucket/run": never a local folder "s3:"
    assert as_path("file:///tmp/x") == Path("/tmp/x")
    assert str(as_path("s3://bucket/run/")) == "s3://bucket/run"


def test_two_ray_actors_on_s3_write_the_local_bytes(ray_cluster, s3, bucket, reference, tmp_path, monkeypatch):
    """The actors reach S3 with the credentials of their own environment (here: the job's runtime_env, as on a
    cluster this driver did not start), and check the driver's marker object before their first shard."""
    pytest.importorskip("ray")
    from scalequest_dataset.run.backends.ray import RayBackend

    monkeypatch.chdir(tmp_path)
    url, stages = f"{bucket}/ray", STAGES[:2]
    with RayBackend(workers=2, runtime_env={"env_vars": s3.env()}) as backend:
        Runner(url, resolve_config("tiny"), backend, show_progress=False, say=lambda _: None).run(stages)
    assert s3_files(url) == {k: v for k, v in data_files(reference).items() if k.split("/")[1] in stages}
    layout = RunLayout(url)
    runs = [rec.read(ShardRecord, p).execution for s in stages for p in layout.state_dir(s).glob("shard-*.json")]
    assert {e.worker for e in runs} == {"ray-actor-0", "ray-actor-1"}
    assert layout.root.fs.find(f"{layout.root.path}/.cache") == []  # the driver's marker went with the backend
    assert url_folders(tmp_path) == []


def test_slurm_slices_on_s3_then_finalize_write_the_local_bytes(bucket, reference, tmp_path):
    """tools/slurm/submit.sh's chain with the run directory on S3 and no shared POSIX mount: a plan job resolves
    the config into RUN/config.yaml (an object), two array tasks run their slices as separate processes from that
    object at once, and a finalize job writes the manifest; the objects are the local run's bytes."""
    url, stages = f"{bucket}/slurm", STAGES[:2]
    source = ["--preset", "tiny"]
    for stage in stages:
        res = cli("run", *source, "--out", url, "--stage", stage, "--plan-only", "--no-progress", cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        source = ["--config", f"{url}/config.yaml"]
        procs = [subprocess.Popen([*CLI, "run", *source, "--out", url, "--stage", stage, "--shard", f"{i}/2",
                                   "--no-progress"], env=cli_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
        RunLayout(url).manifest(stage).unlink(missing_ok=True)  # the last slice may have finalized: the job does
        res = cli("finalize", url, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
    layout = RunLayout(url)
    assert s3_files(url) == {k: v for k, v in data_files(reference).items() if k.split("/")[1] in stages}
    for stage in stages:
        assert rec.read(Manifest, layout.manifest(stage)).identity() == \
            rec.read(Manifest, RunLayout(reference).manifest(stage)).identity()
    pids = {rec.read(ShardRecord, p).execution.pid for p in layout.state_dir("questions").glob("shard-*.json")}
    assert len(pids) == 2  # both slices ran shards
    assert url_folders(tmp_path) == []
