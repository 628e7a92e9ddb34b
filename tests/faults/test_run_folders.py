"""No command silently overwrites or mixes runs: ``ganfuse train``, ``ganfuse fuse train`` and
``ganfuse fuse benchmark`` refuse a folder that already holds a run of any kind (or a benchmark's
results) with one line and exit code 2, before any work, leaving the folder byte-for-byte as it was;
``--resume`` continues only a run of its own kind; a read-only ``--out`` is refused up front."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from ganfuse.cli import main
from ganfuse.errors import UserError
from ganfuse.multimodal.benchmark import write_reports
from ganfuse.train.checkpoint import prepare_run_folder, run_folder_contents
from tests.faults.conftest import cli_args, start_cli_with_mounts

FUSE_TINY = [
    "train_size=64",
    "eval_size=24",
    "batch_size=8",
    "steps=3",
    "warmup_steps=1",
    "threads=1",
    "precision=fp32",
]
UNAVAILABLE = 97


def fuse_args(task: str, out: Path) -> list[str]:
    args = ["fuse", "train", "--task", task, "--out", str(out), "--quiet"]
    for item in FUSE_TINY:
        args += ["--set", item]
    return args


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: relative path -> SHA-256 (``"dir"`` for folders)."""
    return {
        str(p.relative_to(folder)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fusion") / "run"
    before = torch.get_num_threads()
    assert main(fuse_args("matching", run)) == 0
    torch.set_num_threads(before)
    return run


@pytest.fixture
def runs(run_copy, fusion_run, tmp_path) -> dict[str, Path]:
    """A GAN run and a fusion run, private copies."""
    fusion = tmp_path / "fusion"
    shutil.copytree(fusion_run, fusion)
    return {"gan": run_copy, "fusion": fusion}


def _refused(argv: list[str], folder: Path, capsys) -> str:
    before = tree(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert tree(folder) == before, "a refused command changed the run folder"
    return err


# ------------------------------------------------------------------ what a folder holds


def test_what_a_folder_holds(runs, tmp_path):
    gan, fusion = runs["gan"], runs["fusion"]
    assert run_folder_contents(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert run_folder_contents(tmp_path / "empty") is None
    assert run_folder_contents(gan) == ("gan", "checkpoints/step_00000020")
    assert run_folder_contents(fusion) == ("fusion", "run.json")
    # a fusion run killed between its checkpoint and run.json: the manifest names the kind
    (fusion / "run.json").unlink()
    assert run_folder_contents(fusion) == ("fusion", "checkpoints/step_00000003")
    # a GAN run killed before its first checkpoint
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(gan / "config.yaml", started / "config.yaml")
    assert run_folder_contents(started) == ("gan", "config.yaml")
    # checkpoints whose manifests are all unreadable
    for path in (gan / "checkpoints").glob("step_*"):
        (path / "manifest.json").write_text("{not json")
    (gan / "config.yaml").unlink()
    assert run_folder_contents(gan) == ("unknown", "checkpoints/step_00000020")
    bench = tmp_path / "bench"
    write_reports([], bench)
    assert run_folder_contents(bench) == ("benchmark", "results.json")


# ------------------------------------------------------------------ refusals on the command line


@pytest.mark.parametrize("held", ["gan", "fusion"])
@pytest.mark.parametrize("task", ["matching", "zeroshot", "caption"])
def test_fuse_train_refuses_any_existing_run(runs, held, task, capsys):
    folder = runs[held]
    err = _refused(fuse_args(task, folder), folder, capsys)
    holds = "a GAN run (checkpoints/step_00000020)" if held == "gan" else "a fusion run (run.json)"
    assert err.startswith(f"ganfuse: error: {folder} already holds {holds}; choose another --out")


def test_train_refuses_a_fusion_run_with_and_without_resume(runs, capsys):
    folder = runs["fusion"]
    err = _refused(cli_args(folder), folder, capsys)
    assert err == (
        f"ganfuse: error: {folder} already holds a fusion run (run.json); "
        "choose another --out for a GAN run"
    )
    err = _refused(cli_args(folder, resume=True), folder, capsys)
    assert err == (
        f"ganfuse: error: --resume: {folder} holds a fusion run (run.json), not a GAN run; "
        "choose another --out for a GAN run"
    )


def test_train_refuses_its_own_kind_without_resume(runs, tmp_path, capsys):
    folder = runs["gan"]
    err = _refused(cli_args(folder), folder, capsys)
    assert err == (
        f"ganfuse: error: {folder} already holds a GAN run (checkpoints/step_00000020); "
        "pass --resume to continue it or choose another --out"
    )
    # a run killed before its first checkpoint holds its config.yaml: it needs --resume too
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(folder / "config.yaml", started / "config.yaml")
    err = _refused(cli_args(started), started, capsys)
    assert "already holds a GAN run (config.yaml); pass --resume" in err
    assert main(cli_args(started, resume=True, steps=5)) == 0
    assert [p.name for p in (started / "checkpoints").glob("step_*")] == ["step_00000005"]


def test_fuse_train_refuses_its_own_kind(runs, capsys):
    folder = runs["fusion"]
    err = _refused(fuse_args("matching", folder), folder, capsys)
    assert err == (
        f"ganfuse: error: {folder} already holds a fusion run (run.json); "
        "choose another --out, or delete the folder to replace it"
    )


def test_benchmark_refuses_earlier_results_and_runs(runs, tmp_path, capsys):
    bench = tmp_path / "bench"
    write_reports([{"task": "matching", "fusion": "early", "metric": "match_accuracy",
                    "value": 0.75, "params": 10, "train_seconds": 1.0}], bench)
    argv = ["fuse", "benchmark", "--out", str(bench), "--max-minutes", "0.1", "--quiet"]
    err = _refused(argv, bench, capsys)
    assert err == (
        f"ganfuse: error: {bench} already holds the results of a fusion benchmark (results.json); "
        "choose another --out, or delete the folder to replace it"
    )
    for kind, folder in runs.items():
        argv = ["fuse", "benchmark", "--out", str(folder), "--max-minutes", "0.1", "--quiet"]
        err = _refused(argv, folder, capsys)
        assert "choose another --out for the results of a fusion benchmark" in err, kind
    # and the other commands leave a benchmark folder alone
    assert "already holds the results of a fusion benchmark" in _refused(cli_args(bench), bench, capsys)
    assert "already holds the results" in _refused(fuse_args("caption", bench), bench, capsys)


def test_a_folder_without_a_run_is_used(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(fuse_args("caption", out)) == 0
    assert run_folder_contents(out) == ("caption", "run.json")
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ before any work


def test_refused_before_any_training(runs, monkeypatch):
    """The check comes before the data and the model are built, not at save time."""
    import ganfuse.multimodal.captioning as captioning
    import ganfuse.multimodal.train as fusion_train
    import ganfuse.multimodal.zeroshot as zeroshot
    from ganfuse.multimodal.config import make_config

    def no_work(*_args, **_kwargs):
        raise AssertionError("work started before the output folder was checked")

    for module in (fusion_train, zeroshot, captioning):
        monkeypatch.setattr(module, "config_split", no_work)
        monkeypatch.setattr(module, "optimise", no_work)
    for train, task in (
        (fusion_train.train_fusion, "matching"),
        (zeroshot.train_zeroshot, "zeroshot"),
        (captioning.train_captioner, "caption"),
    ):
        with pytest.raises(UserError, match="already holds a GAN run"):
            train(make_config(task, None, FUSE_TINY), runs["gan"], progress=False)


def test_save_run_refuses_a_run_of_another_kind(runs):
    from ganfuse.multimodal.checkpoint import save_run
    from ganfuse.multimodal.config import make_config

    before = tree(runs["gan"])
    with pytest.raises(UserError, match="already holds a GAN run .*not a fusion run"):
        save_run(runs["gan"], "fusion", nn.Linear(2, 2), make_config("matching", "early", []),
                 {}, {}, step=1)
    assert tree(runs["gan"]) == before


def test_unwritable_fuse_output_is_refused_before_training(tmp_path, monkeypatch, capsys):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    assert main(fuse_args("matching", tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ganfuse: error: cannot write to the run directory {tmp_path / 'run'}: Read-only file system"


def test_prepare_run_folder_resumes_only_its_kind(runs, tmp_path):
    assert prepare_run_folder(runs["gan"], "gan", resume=True, resumable=True) == (
        "gan",
        "checkpoints/step_00000020",
    )
    assert prepare_run_folder(tmp_path / "new" / "run", "fusion") is None
    assert (tmp_path / "new" / "run").is_dir() and not any((tmp_path / "new" / "run").iterdir())
    with pytest.raises(UserError, match="--resume: .* holds a GAN run .*not a zero-shot run"):
        prepare_run_folder(runs["gan"], "zeroshot", resume=True)


def test_real_read_only_folder_for_fuse_train(forkserver, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    child = start_cli_with_mounts(
        forkserver,
        fuse_args("matching", mnt / "run"),
        tmp_path / "child.log",
        [["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)]],
    )
    code = child.wait()
    if code == UNAVAILABLE:
        pytest.skip("this machine does not allow mounting a tmpfs in a private mount namespace")
    out = child.output()
    assert code == 2, out
    assert f"ganfuse: error: cannot write to the run directory {mnt / 'run'}: Read-only file system" in out
    assert "Traceback" not in out


def test_a_refused_fusion_run_keeps_its_scores(runs, capsys):
    """The probe's data loss: a second ``fuse train`` over a finished run used to replace its
    weights and metrics; now the run still evaluates to its own saved scores."""
    folder = runs["fusion"]
    saved = json.loads((folder / "metrics.json").read_text())["test"]
    _refused(fuse_args("matching", folder), folder, capsys)
    assert main(["fuse", "evaluate", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(saved)
