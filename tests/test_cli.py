import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.runs import CLI, cli_env

import scalequest_dataset
from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.revisions.stores import StoreError
from scalequest_dataset.run.plan import ShardFailed


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=cli_env())


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--stage", "nosuchstage"], ["nosuchstage", "questions"]),
        (["--set", "stages.questions.max_tokens=lots"], ["stages.questions.max_tokens", "lots"]),
        (["--set", "stages.questions.generators.0.model=/no/such/model"], ["/no/such/model", "stages.questions.generators.tiny-a.model"]),
        (["--preset", "nosuchpreset"], ["nosuchpreset", "tiny"]),
        (["--shard", "3/2"], ["--shard"]),
    ],
)
def test_bad_config_exits_nonzero_naming_the_problem(tmp_path, args, needles):
    if "--preset" not in args:
        args = ["--preset", "tiny", *args]
    res = run_cli("run", "--out", str(tmp_path / "run"), "--no-progress", *args)
    assert res.returncode == 2, res.stderr  # an input error, not an unexpected failure (3)
    for needle in needles:
        assert needle in res.stderr, res.stderr
    assert not list((tmp_path / "run").rglob("*.parquet"))


def test_status_of_a_non_run_dir(tmp_path):
    res = run_cli("status", str(tmp_path))
    assert res.returncode == 2
    assert "not a run directory" in res.stderr


# ---------------------------------------------------------------------------------------------- a whole run's terminal

# What engines and libraries print (vLLM's logger, transformers, Python warnings): none of it on the terminal.
ENGINE_NOISE = ("INFO", "WARNING", "LOAD REPORT", "FutureWarning", "DeprecationWarning", "Loading weights",
                "Writing model shards", "Traceback")
FAIL_ON_SECOND_SHARD = '''
import errno, os
import scalequest_dataset.run.worker as worker
real = worker.write_rows
def write_rows(path, rows, features):
    if path.name == "train-00001-of-00005.parquet" and "questions" in str(path):
        if os.environ["SCALEQUEST_TEST_FAIL"] == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        raise RuntimeError("injected failure")
    return real(path, rows, features)
worker.write_rows = write_rows
'''


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env or cli_env(), timeout=timeout)


def terminal_lines(res: subprocess.CompletedProcess) -> list[str]:
    """What a person sees: progress bars redraw a line with \\r, so the last state of each line counts."""
    return [line.split("\r")[-1] for line in (res.stdout + res.stderr).splitlines()]


@pytest.fixture(scope="module")
def tiny_cli_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("cli") / "run"
    return out, cli("run", "--preset", "tiny", "--out", str(out))


def test_a_run_shows_progress_and_the_funnel_and_logs_the_engines(tiny_cli_run):
    out, res = tiny_cli_run
    assert res.returncode == 0, res.stderr[-3000:]
    terminal = res.stdout + res.stderr
    for noise in ENGINE_NOISE:
        assert noise not in terminal, noise
    lines = terminal_lines(res)
    bars = [x for x in lines if re.match(r"\w+\s+: +\d+%\|", x)]
    assert {x.split()[0] for x in bars} == {"questions", "language", "dedup", "solvability", "difficulty",
                                            "responses", "reward", "default"}
    assert all("row" in x for x in bars)  # rows, rate and ETA
    assert "funnel:" in res.stdout
    funnel = res.stdout.split("funnel:")[1]
    responses = next(x for x in funnel.splitlines() if x.startswith("responses"))
    assert re.search(r"\d+ questions +\d+ responses +\d+ responses +\d+%", responses), responses
    log = out / "logs" / "scalequest.log"
    assert f"{log}" in terminal  # where things are
    assert "Loading weights" in log.read_text()  # transformers' load report went to the log
    others = [x for x in lines if x.strip() and x not in bars]
    assert "cost:" in res.stdout
    assert len(others) <= 30, others  # set-up, funnel, cost, where things are: nothing else


def test_exit_code_0_and_1_for_diff(tiny_cli_run, tmp_path):
    out, _ = tiny_cli_run
    same = cli("diff", str(out), str(out), "--stage", "questions")
    assert same.returncode == 0, same.stderr
    other = tampered_copy(out, tmp_path / "other")
    res = cli("diff", str(out), str(other), "--stage", "questions")
    assert res.returncode == 1 and "questions: changed" in res.stdout, res.stdout + res.stderr


def test_exit_code_1_for_a_regenerate_mismatch(tiny_cli_run, tmp_path):
    from scalequest_dataset.revisions.publish import publish

    out, _ = tiny_cli_run
    publish(tampered_copy(out, tmp_path / "other"), tmp_path / "store", ["questions"])
    res = cli("regenerate", f"{tmp_path / 'store'}@v1-questions", "--stage", "questions", "--shards", "0",
              "--scratch", str(tmp_path / "scratch"))
    assert res.returncode == 1 and "MISMATCH" in res.stdout, res.stdout + res.stderr
    assert "Loading weights" not in res.stdout + res.stderr
    assert "Loading weights" in (tmp_path / "scratch" / "logs" / "scalequest.log").read_text()


def tampered_copy(run: Path, dest: Path) -> Path:
    """The run with one question changed in shard 0 and its manifest re-recorded (a consistent other version)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scalequest_dataset.run.files import content_digest, read_json, sha256_file, write_json
    from scalequest_dataset.run.records import Manifest, stage_content

    shutil.copytree(run, dest)
    manifest = read_json(dest / "manifests" / "questions.json")
    info = manifest["shards"][0]["files"]["train"]
    path = dest / "data" / "questions" / info["file"]
    table = pq.read_table(path)
    queries = table.column("query").to_pylist()
    queries[0] = "tampered"
    pq.write_table(table.set_column(table.schema.get_field_index("query"), "query", pa.array(queries)), path)
    info["sha256"], info["bytes"] = sha256_file(path), path.stat().st_size
    info["content"] = content_digest(pq.read_table(path))
    manifest["content"] = stage_content(Manifest.model_validate(manifest).shards)
    write_json(dest / "manifests" / "questions.json", manifest)
    return dest


def failing_env(tmp_path: Path, how: str) -> dict[str, str]:
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(FAIL_ON_SECOND_SHARD)
    env = cli_env(SCALEQUEST_TEST_FAIL=how)
    env["PYTHONPATH"] = f"{hooks}:{env['PYTHONPATH']}"
    return env


def test_exit_code_3_for_an_unexpected_failure_one_line_and_the_log(tmp_path):
    out = tmp_path / "run"
    res = cli("run", "--preset", "tiny", "--out", str(out), "--stage", "questions", "--no-progress",
              env=failing_env(tmp_path, "boom"))
    assert res.returncode == 3, res.stdout + res.stderr
    log = out / "logs" / "scalequest.log"
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert errors == [f"error: RuntimeError: injected failure (an unexpected failure: the traceback is in {log}; "
                      "-v prints it here)"]
    assert "Traceback" not in res.stderr and "Traceback" in log.read_text()
    assert (out / "state" / "questions" / "shard-00000.json").is_file()  # what was written before is kept


def test_no_space_left_names_the_path_and_the_free_space_and_v_shows_the_rest(tmp_path):
    out = tmp_path / "run"
    res = cli("-v", "run", "--preset", "tiny", "--out", str(out), "--stage", "questions", "--no-progress",
              env=failing_env(tmp_path, "enospc"))
    assert res.returncode == 2, res.stdout + res.stderr
    (error,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert "no space left on the device holding" in error and "train-00001-of-00005.parquet" in error
    assert re.search(r"\d+\.\d [KMGT]B free of", error) and "run the same command again" in error
    assert "move --out elsewhere" in error
    assert "Traceback" in res.stderr and "Loading weights" in res.stdout + res.stderr  # -v: the log, here too
    assert (out / "state" / "questions" / "shard-00000.json").is_file()


@pytest.mark.parametrize(("args", "needle"), [
    (["log", "{tmp}"], "is not a scalequest store"),
    (["load", "{tmp}", "questions"], "neither a run directory nor a scalequest store"),
    (["publish", "{tmp}", "--to", "{tmp}/store"], "not a run directory"),
    (["diff", "{tmp}/nothing", "{tmp}/nothing"], "does not exist"),
    (["run", "--preset", "tiny", "--out", "{tmp}/r", "--stage", "nosuch"], "unknown stage"),
])
def test_exit_code_2_names_the_thing_in_one_line(tmp_path, args, needle):
    res = cli(*[a.format(tmp=tmp_path) for a in args])
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_the_hub_unreachable_is_one_line(tmp_path):
    res = cli("diff", "org/name@v1", "org/name@v2", env=cli_env(HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unreachable" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_version_and_help_document_the_exit_codes():
    assert cli("--version").stdout.strip() == f"scalequest {scalequest_dataset.__version__}"
    text = cli("--help").stdout
    for code in ("0 ", "1 ", "2 ", "3 "):
        assert f"\n  {code}" in text


@pytest.mark.parametrize(("exc", "code", "needle"), [
    (ConfigError("stages.x: bad"), 2, "stages.x: bad"),
    (StoreError("/x is not a scalequest store"), 2, "not a scalequest store"),
    (ShardFailed("shard 3 of 'questions' failed in worker local-1: ValueError: x"), 3, "shard 3"),
    (ShardFailed("shard 3 failed: OSError: [Errno 28] No space left on device: '/data/run/x.parquet'"), 2,
     "/data/run/x.parquet"),
    (RuntimeError("boom"), 3, "RuntimeError: boom"),
    (BrokenPipeError(32, "Broken pipe"), 3, "BrokenPipeError"),
    (FileNotFoundError(2, "No such file or directory", "/no/such"), 2, "/no/such: no such file"),
])
def test_explain(exc, code, needle):
    from scalequest_dataset.cli import explain

    got, message = explain(exc)
    assert got == code and needle in message and "\n" not in message


def test_explain_the_hub_errors():
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    from scalequest_dataset.cli import explain

    try:
        try:
            raise httpx.ConnectError("Name or service not known")
        except httpx.ConnectError as inner:
            raise OSError("could not reach the Hub") from inner
    except OSError as exc:
        assert explain(exc)[0] == 2 and "unreachable" in explain(exc)[1]
    refused = HfHubHTTPError("401 Client Error", response=httpx.Response(401, request=httpx.Request("GET", "http://x")))
    assert explain(refused)[0] == 2 and "HF_TOKEN" in explain(refused)[1]


def test_publish_draws_bytes_and_files_on_a_terminal_only(tiny_cli_run, tmp_path):
    """On a terminal (a pseudo-terminal here) publishing draws a bar in bytes and files; in a pipe it does not."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    out, _ = tiny_cli_run
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen([*CLI, "publish", str(out), "--to", str(tmp_path / "store")], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        drawn += chunk
    stdout, _ = proc.communicate(timeout=300)
    os.close(master)
    assert proc.returncode == 0 and b"committed" in stdout
    text = drawn.decode(errors="replace")
    assert "publish" in text and re.search(r"\d+ files", text) and re.search(r"[0-9.]+[kMG]?B", text), text
    piped = cli("publish", str(out), "--to", str(tmp_path / "store2"))
    assert piped.returncode == 0 and "files" not in piped.stderr, piped.stderr


def test_start_up_imports_only_what_the_command_needs():
    """`--version`, the parser and the command table import neither the stages nor `datasets`/pandas/pydantic
    (~1 s of start-up, issue 22); a command imports its own modules when it runs. The parser reads every backend's
    options from its module (issue 18): those modules import Ray, the executor and multiprocessing when they run."""
    code = ("import sys, runpy\n"
            "sys.argv = ['scalequest', '--version']\n"
            "try:\n    runpy.run_module('scalequest_dataset.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('datasets', 'pandas', 'pydantic', 'pyarrow', 'torch', 'ray', "
            "'multiprocessing', 'scalequest_dataset.stages', 'scalequest_dataset.recipe.config', "
            "'scalequest_dataset.run.worker') if m in sys.modules)\n"
            "print('heavy:', heavy)\n")
    out = subprocess.run([*CLI[:1], "-c", code], capture_output=True, text=True, env=cli_env(), check=True).stdout
    assert "scalequest 0.1" in out and "heavy: []" in out, out
