"""Every value a user gives is checked once (ganfuse.inputs), before any work: a bad one is one
line on stderr starting with ``ganfuse: error:``, exit code 2, nothing written, existing files
unchanged."""

from __future__ import annotations

import errno
import math
import re

import pytest

import ganfuse.inputs
from ganfuse.cli import main
from ganfuse.inputs import (
    MAX_IMAGES,
    InputError,
    check_count,
    check_image_size,
    check_output_dir,
    check_output_file,
    check_seconds,
    check_seed,
    check_truncation,
)

TRUNCATION = "must be a finite number > 0 (latents are clamped to [-t, t]; leave it out for none)"
SEED = "must be a whole number from 0 to 4294967295"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("inputs") / "run"
    args = ["train", "digits-dcgan", "--out", str(run), "--steps", "2", "--seed", "3", "--no-progress",
            "--set", "model.g_width=32", "--set", "model.d_width=8", "--set", "train.batch_size=8",
            "--set", "train.precision=fp32"]
    assert main(args) == 0
    return run


def refused(argv, capsys) -> str:
    """Run the CLI; assert exit 2 and one ``ganfuse: error:`` line; return that line."""
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("ganfuse: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and captured.out == ""
    return err


def tree(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes() if p.is_file() else None)
                  for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--truncation", "nan"], f"--truncation {TRUNCATION}, got nan"),
        (["--truncation", "inf"], f"--truncation {TRUNCATION}, got inf"),
        (["--truncation", "-1"], f"--truncation {TRUNCATION}, got -1"),
        (["--truncation", "0"], f"--truncation {TRUNCATION}, got 0"),
        (["--seed", "-1"], f"--seed {SEED}, got -1"),
        (["--seed", "99999999999999999999999"], f"--seed {SEED}, got 99999999999999999999999"),
        (["--num", "100000000"], f"--num must be a whole number from 1 to {MAX_IMAGES}, got 100000000"),
        (["--num", "0"], f"--num must be a whole number from 1 to {MAX_IMAGES}, got 0"),
        (["--device", ""], "--device must be auto, cpu, mps, cuda or cuda:N, got ''"),
        (["--grid", "GRID"], "--grid GRID must end with one of .png, .jpg, .jpeg, .webp, .bmp (the image format); got none"),
        (["--grid", "grid.txt"], "--grid grid.txt must end with one of .png, .jpg, .jpeg, .webp, .bmp (the image format); got '.txt'"),
    ],
)
def test_sample_refuses_bad_values_before_any_work(trained_run, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    err = refused(["sample", trained_run, "--num", "2", "--out", "samples", *extra], capsys)
    assert err == f"ganfuse: error: {message}"
    assert list(tmp_path.iterdir()) == []  # neither the images nor the folder were written


def test_sample_refuses_an_existing_file_as_out(trained_run, tmp_path, capsys):
    existing = tmp_path / "existing"
    existing.write_bytes(b"keep me")
    err = refused(["sample", trained_run, "--num", "2", "--out", existing], capsys)
    assert err == f"ganfuse: error: --out {existing} is a file, not a folder; give a folder for the output"
    assert existing.read_bytes() == b"keep me"


def test_sample_keeps_an_existing_grid_unless_overwrite(trained_run, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"old grid")
    err = refused(["sample", trained_run, "--num", "2", "--out", tmp_path / "s", "--grid", grid], capsys)
    assert err == f"ganfuse: error: --grid {grid} exists; remove it, choose another name or add --overwrite"
    assert grid.read_bytes() == b"old grid" and not (tmp_path / "s").exists()
    assert main(["sample", str(trained_run), "--num", "2", "--out", str(tmp_path / "s"), "--grid", str(grid),
                 "--overwrite", "--truncation", "0.5"]) == 0
    assert grid.read_bytes()[:4] == b"\x89PNG" and len(list((tmp_path / "s").iterdir())) == 2


@pytest.mark.parametrize("command", [["sample", "RUN", "--num", "2"], ["data", "export", "digits", "--num", "2"]])
def test_out_that_cannot_be_created_is_refused(trained_run, tmp_path, capsys, command):
    """A folder under a file: the same refusal as any unwritable place, as root too."""
    blocker = tmp_path / "some_file"
    blocker.write_bytes(b"x")
    argv = [trained_run if a == "RUN" else a for a in command]
    err = refused([*argv, "--out", blocker / "out"], capsys)
    assert err == f"ganfuse: error: --out {blocker / 'out'} cannot be created: {blocker} is a file, not a folder"
    assert tree(tmp_path) == [("some_file", b"x")]


@pytest.mark.parametrize("command", [["sample", "RUN", "--num", "2"], ["data", "export", "shapes", "--num", "2"]])
def test_out_on_a_read_only_filesystem_is_refused(trained_run, tmp_path, monkeypatch, capsys, command):
    """The kernel's answer on a read-only mount (EROFS, which root gets too) to creating a file."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(ganfuse.inputs.tempfile, "mkstemp", read_only)
    argv = [trained_run if a == "RUN" else a for a in command]
    out = tmp_path / "out"
    err = refused([*argv, "--out", out], capsys)
    assert err == (f"ganfuse: error: --out {out} is not writable (in {tmp_path}): Read-only file system; "
                   "choose another folder")
    assert list(tmp_path.iterdir()) == []


def test_a_permission_denied_folder_is_refused(tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o500 folder; the read-only test covers root")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    err = refused(["data", "export", "digits", "--num", "2", "--out", locked / "out"], capsys)
    assert "is not writable" in err and "Permission denied" in err


def test_evaluate_num_is_checked_not_replaced(trained_run, capsys):
    for bad in ("0", "1", "100000000"):
        err = refused(["evaluate", trained_run, "--ref", "digits", "--num", bad], capsys)
        assert err == f"ganfuse: error: --num must be a whole number from 2 to 100000, got {bad}"
    err = refused(["evaluate", trained_run, "--ref", "digits", "--seed", "-3"], capsys)
    assert err == f"ganfuse: error: --seed {SEED}, got -3"
    err = refused(["evaluate", trained_run, "--ref", "digits", "--batch-size", "0"], capsys)
    assert err == "ganfuse: error: --batch-size must be a whole number from 1 to 4096, got 0"


@pytest.mark.parametrize("seconds", ["-1", "0", "nan", "inf", "1e9"])
def test_bench_seconds(seconds, capsys):
    err = refused(["bench", "train", "digits-dcgan", "--seconds", seconds], capsys)
    assert err == f"ganfuse: error: --seconds must be a number of seconds > 0 and at most 86400, got {float(seconds):g}"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--image-size", "0"], "--image-size must be a whole number from 8 to 1024, got 0"),
        (["--image-size", "100000"], "--image-size must be a whole number from 8 to 1024, got 100000"),
        (["--num", "0"], "--num must be a whole number from 1 to 1797, got 0"),
        (["--num", "1798"], "--num must be a whole number from 1 to 1797, got 1798"),
        (["--seed", "-1"], f"--seed {SEED}, got -1"),
    ],
)
def test_data_export_values(tmp_path, capsys, extra, message):
    args = {"--num": "2", **dict(zip(extra[::2], extra[1::2], strict=True))}
    argv = ["data", "export", "digits", "--out", tmp_path / "out"] + [x for kv in args.items() for x in kv]
    assert refused(argv, capsys) == f"ganfuse: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_data_export_shapes_num_limit(tmp_path, capsys):
    err = refused(["data", "export", "shapes", "--num", "100000000", "--out", tmp_path / "o"], capsys)
    assert err == "ganfuse: error: --num must be a whole number from 1 to 100000, got 100000000"


def test_data_pack_values(tmp_path, capsys):
    err = refused(["data", "pack", "digits", "--out", tmp_path / "o", "--shard-size", "0"], capsys)
    assert err == "ganfuse: error: --shard-size must be a whole number from 1 to 100000, got 0"
    err = refused(["data", "pack", "digits", "--out", tmp_path / "o", "--image-size", "0"], capsys)
    assert err == "ganfuse: error: --image-size must be a whole number from 8 to 1024, got 0"


def test_train_config_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"model:\n  arch: \xff\xfe\n")
    err = refused(["train", bad, "--out", tmp_path / "run"], capsys)
    assert err == f"ganfuse: error: {bad}: not UTF-8 text (byte 15); save it as UTF-8"
    assert not (tmp_path / "run").exists()


def test_train_seed_and_nproc(tmp_path, capsys):
    err = refused(["train", "digits", "--out", tmp_path / "run", "--seed", "-1"], capsys)
    assert err == f"ganfuse: error: --seed {SEED}, got -1"
    err = refused(["train", "digits", "--out", tmp_path / "run", "--nproc", "0"], capsys)
    assert err == "ganfuse: error: --nproc must be a whole number from 1 to 256, got 0"


def test_generate_checks_its_values_before_loading(tmp_path, capsys):
    base = ["generate", tmp_path / "no-run", "--prompt", "a red circle", "--out", tmp_path / "o"]
    assert refused([*base, "--num", "0"], capsys) == (
        f"ganfuse: error: --num must be a whole number from 1 to {MAX_IMAGES}, got 0")
    assert refused([*base, "--num", "2", "--truncation", "nan"], capsys) == f"ganfuse: error: --truncation {TRUNCATION}, got nan"
    assert refused([*base, "--num", "2", "--grid", "g"], capsys).startswith("ganfuse: error: --grid g must end with")
    assert list(tmp_path.iterdir()) == []


def test_info_of_a_damaged_config(tmp_path, capsys):
    (tmp_path / "config.yaml").write_bytes(b"\xff\xfe")
    err = refused(["info", tmp_path], capsys)
    assert err == f"ganfuse: error: {tmp_path / 'config.yaml'} cannot be read as YAML (UnicodeDecodeError); the run folder is damaged"


def test_the_python_api_refuses_the_same_values(trained_run):
    from ganfuse.run import load_run

    run = load_run(trained_run)
    with pytest.raises(InputError, match=re.escape(f"truncation {TRUNCATION}, got nan")):
        run.sample(2, truncation=math.nan)
    with pytest.raises(InputError, match=f"^seed {SEED}, got -1$"):
        run.sample(2, seed=-1)
    with pytest.raises(InputError, match=f"^the number of images must be a whole number from 1 to {MAX_IMAGES}"):
        run.sample(MAX_IMAGES + 1)
    assert run.sample(2, seed=2**32 - 1, truncation=1.0).shape == (2, 1, 32, 32)


def test_the_checks():
    assert check_seed(0) == 0 and check_seed(2**32 - 1) == 2**32 - 1 and check_seed(7.0) == 7
    for bad in (-1, 2**32, 2.5, math.nan, True, None, "x"):
        with pytest.raises(InputError, match="--seed"):
            check_seed(bad)
    assert check_truncation(None) is None and check_truncation(0.7) == 0.7
    for bad in (0, -0.5, math.nan, math.inf, "x"):
        with pytest.raises(InputError, match="--truncation"):
            check_truncation(bad)
    assert check_count("--num", 5, 5) == 5 and check_count("--num", "3", 5) == 3
    with pytest.raises(InputError, match="^--num is required: a whole number from 1 to 5$"):
        check_count("--num", None, 5)
    assert check_image_size(8) == 8 and check_seconds(0.5) == 0.5


def test_output_checks_write_nothing(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert check_output_file(tmp_path / "g.PNG") == tmp_path / "g.PNG"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d.png").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        check_output_file(tmp_path / "d.png", overwrite=True)
