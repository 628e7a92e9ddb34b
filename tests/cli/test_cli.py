"""The command line: exact forms from the issue, clear one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from ganfuse.cli import main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "digits-dcgan", "--out", str(run), "--steps", "6", "--seed", "3", "--no-progress",
            "--set", "model.g_width=32", "--set", "model.d_width=8", "--set", "train.batch_size=8"]
    assert main(args) == 0
    return run


def test_sample_writes_exactly_n_files_and_a_grid(trained_run, tmp_path):
    out = tmp_path / "samples"
    assert main(["sample", str(trained_run), "--num", "7", "--out", str(out), "--grid", str(tmp_path / "g.png")]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(7)]
    assert Image.open(files[0]).size == (32, 32)
    assert Image.open(tmp_path / "g.png").size[0] > 32


def test_sampling_is_deterministic_for_a_seed(trained_run):
    from ganfuse.run import load_run

    run = load_run(trained_run)
    a, b, c = run.sample(5, seed=1), run.sample(5, seed=1, batch_size=2), run.sample(5, seed=2)
    assert a.shape == (5, 1, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert (a - b).abs().max() < 1e-5 and not (a - c).abs().max() < 1e-3


def test_info_prints_step_and_metrics(trained_run, capsys):
    assert main(["info", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert "step: 6" in out and "loss_d" in out and "arch: dcgan" in out


def test_data_export_digits(tmp_path):
    assert main(["data", "export", "digits", "--num", "5", "--out", str(tmp_path)]) == 0
    lines = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and lines[0]["file"] == "00000.png" and lines[0]["label"] in range(10)
    assert Image.open(tmp_path / "00004.png").size == (32, 32)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "nope", "--out", "x"], "unknown preset 'nope'"),
        (["train", "digits", "--out", "x", "--set", "train.lr_g=-1"], "train.lr_g"),
        (["train", "digits", "--out", "x", "--set", "train.bogus=1"], "train.bogus"),
        (["sample", "/nonexistent/run", "--num", "3", "--out", "x"], "run directory not found"),
        (["train", "digits", "--out", "x", "--set", "data.name=folder", "--set", "data.path=/no/such/dir"],
         "image folder not found: /no/such/dir"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_class_on_unconditional_run_is_an_error(trained_run, tmp_path, capsys):
    assert main(["sample", str(trained_run), "--num", "2", "--out", str(tmp_path), "--class", "3"]) == 2
    assert "not class-conditional" in capsys.readouterr().err


def test_console_script_help_has_examples():
    out = subprocess.run([sys.executable, "-m", "ganfuse", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "example:" in out.stdout and "--max-minutes" in out.stdout


def test_the_command_line_parser_loads_without_torch():
    """The command modules import their implementation when the command runs
    (docs/architecture.md), so ``ganfuse --help`` and argument errors answer at once."""
    code = (
        "import sys; from ganfuse.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'matplotlib', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
