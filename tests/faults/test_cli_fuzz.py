"""Every ``ganfuse`` command driven with hostile argument values, in-process.

For each command a hypothesis strategy draws an argv: every option is either a good value, a
value that must be refused (NaN, infinities, numbers past their limits, huge integers, empty and
malformed lists, missing / empty / invalid-UTF-8 files, outputs under a regular file or onto an
existing run), an edge value that may go either way, or (when optional) left out. The command runs
through ``ganfuse.cli.main(argv)`` with stdout and stderr captured as strict UTF-8 (what a UTF-8
terminal does), under a time alarm, and the outcome must be one of:

- exit 2 with stderr exactly one line ``ganfuse: error: ...``; argparse's own refusals (an
  unknown choice, a missing required option, ``--num nan``) are also exit 2 but print the usage
  first, so for those (``SystemExit(2)`` out of ``parse_args``) stderr must be usage lines followed
  by one ``ganfuse ...: error: ...`` line. Either way: no traceback;
- exit 0, only when no drawn value was one that must be refused, with sane outputs (the files
  promised, images of the right size, finite numbers);
- never an exception, another exit code or a hang past the alarm.

Every pre-existing run folder (the shared input runs, and the per-example copy given as an
output) must be byte-identical afterwards.

``serve`` and ``demo`` are driven for argument validation only: the server launch and the demo's
stages are replaced by stubs that validate what the real ones would (runs load, the device and
config are accepted) and then return.

The probes are derandomized: every run tries the same argv. ``GANFUSE_FUZZ_FINDINGS=FILE`` records
each failing probe (argv and outcome) as a JSON line and goes on, so one run lists them all;
``GANFUSE_FUZZ_SCALE=N`` draws N times as many probes per command.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from ganfuse.cli import main
from ganfuse.config import valid_keys
from tests.faults.conftest import TINY
from tests.faults.test_config_fuzz import MM_KEYS, MM_VALUES, VALUES
from tests.report.runs import TINY_FUSE, benchmark_folder, caption_run, conditional_gan_run

ALARM_S = 40  # one command; a refusal is instant, a tiny success a few seconds
ERROR_LINE = re.compile(r"^ganfuse: error: \S")
ARGPARSE_ERROR_LINE = re.compile(r"^ganfuse( [a-z-]+)*: error: \S")

# ------------------------------------------------------------------ value vocabularies
# A value is a plain string, or a ``@token`` resolved to a path in the example's own folder.

BAD_COUNT = ["0", "-1", "-7", "99999999999999999999", "9223372036854775808", str(2**63 - 1)]
NOT_INT = ["nan", "inf", "1.5", "", "1e3", "ten", "[]", "0x10"]
BAD_FLOAT = ["nan", "-nan", "inf", "-inf", "1e400", "-1", "0", "-0.0", "", "NaN", "[1]"]
EDGE_SEED = ["-1", str(2**32), str(2**63), str(2**70), "-99999999999999999999"]
BAD_DEVICE = ["cuda:x", "bogus", "cuda:-1", "", "cpu:0:1", "\udcff"]
EDGE_TEXT = [
    "é",
    "\u2028",
    "a" * 5000,
    "\udcff\udcfe",  # invalid UTF-8 in argv, as Linux hands it over (surrogateescape)
    "  ",
    "-",
    "[",
    "\t",
]
# Output locations: fresh is good; under a regular file must be refused; an existing run must
# stay byte-identical whatever the outcome.
OUT_GOOD = ["@fresh"]
OUT_BAD = ["@underfile/out", "@file"]
OUT_EDGE = ["@run", "@emptydir", "@readonly", "@nonempty"]

PICK = ["good"] * 6 + ["bad", "edge", "omit"]


@dataclass
class Case:
    """One drawn command line and what it promises."""

    argv: list[str]
    invalid: list[str] = field(default_factory=list)  # the drawn values that must be refused
    flags: dict[str, str] = field(default_factory=dict)  # option -> drawn value, for the checks


@st.composite
def _choose(
    draw, case: Case, option: str | None, good, bad=(), edge=(), required=False, name=None, always=False
):
    """Draw one option into ``case``: good, bad (must be refused), edge (either) or left out
    (``required``: leaving it out must be refused; ``always``: never left out, e.g. an output
    whose default lies in the working directory)."""
    pools = {"good": good, "bad": bad, "edge": edge, "omit": not always}
    kinds = [k for k in PICK if pools[k]]
    if required:
        kinds = [k for k in kinds if k != "omit"] + ["omit_required"]
    kind = draw(st.sampled_from(kinds))
    key = name or option
    if kind in ("omit", "omit_required"):
        if kind == "omit_required":
            case.invalid.append(f"{key} missing")
        return
    pool = {"good": good, "bad": bad, "edge": edge}[kind]
    value = draw(st.sampled_from(list(pool)) if not isinstance(pool, st.SearchStrategy) else pool)
    if kind == "bad":
        case.invalid.append(f"{key}={value!r}")
    case.flags[key] = value
    case.argv += [value] if option is None else [option, value]


def _flag(draw, case: Case, option: str) -> None:
    if draw(st.integers(0, 3)) == 0:
        case.argv.append(option)
        case.flags[option] = "1"


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


# ------------------------------------------------------------------ runs and files


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The input runs (shared, never to be changed) and the files the strategies refer to."""
    from ganfuse.data import shapes

    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("cli-fuzz")
    t2i = root / "t2i"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", 96)
        t2i_args = [
            "train", "shapes-t2i", "--out", str(t2i), "--steps", "2", "--no-progress",
            *_sets(["model.z_dim=8", "model.g_width=16", "model.d_width=8", "text.cond_dim=16",
                    "train.batch_size=8", "train.log_every=1", "train.checkpoint_every=2", "train.sample_every=1000",
                    "text.encoder=small", "text.contrastive_weight=0", "train.precision=fp32"]),
        ]  # fmt: skip
        assert main(t2i_args) == 0
    match = root / "match"
    assert main(["fuse", "train", "--task", "matching", "--out", str(match), *TINY_FUSE]) == 0
    files = root / "files"
    files.mkdir()
    images = files / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    from tests.report.runs import red_circle_png

    red_circle_png(files / "red.png")
    (files / "bad_utf8.txt").write_bytes(b"a red \xff\xfe circle\n\x80\n")
    (files / "bad_utf8.yaml").write_bytes(b"model:\n  g_width: \xff\xfe\n")
    (files / "list.yaml").write_text("- 1\n- 2\n")
    (files / "empty.txt").write_bytes(b"")
    (files / "not_image.png").write_text("this is text")
    (files / "prompts.txt").write_text("a large red circle in the center\na small blue square\n")
    (files / "tiny.yaml").write_text("preset: tiny\nmodel:\n  arch: dcgan\n")
    return {
        "cond": conditional_gan_run(base),
        "caption": caption_run(base),
        "bench": benchmark_folder(base),
        "t2i": t2i,
        "match": match,
        "files": files,
    }


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        )
        for p in sorted(folder.rglob("*"))
    }


class Sandbox:
    """The example's own folder; resolves ``@tokens`` to paths."""

    def __init__(self, runs: dict[str, Path], root: Path):
        self.runs, self.root = runs, root
        self.copies: dict[str, Path] = {}

    def path(self, token: str) -> str:
        files, root = self.runs["files"], self.root
        name = token[1:]
        if name.startswith("fresh"):
            return str(root / "new" / name)
        if name.startswith("underfile"):
            (root / "a_file").write_text("x")
            return str(root / "a_file" / name.partition("/")[2])
        if name == "file":
            (root / "a_file").write_text("x")
            return str(root / "a_file")
        if name == "emptydir":
            (root / "empty").mkdir(exist_ok=True)
            return str(root / "empty")
        if name == "nonempty":
            (root / "nonempty").mkdir(exist_ok=True)
            (root / "nonempty" / "keep.txt").write_text("keep")
            return str(root / "nonempty")
        if name == "readonly":
            (root / "readonly").mkdir(exist_ok=True)
            (root / "readonly").chmod(0o555)  # as root this does not stop writes; still an edge
            return str(root / "readonly")
        if name == "missing" or name.startswith("missing."):
            return str(root / "does-not-exist" / name)
        if name in ("run", "fuserun"):  # an existing run given as an output: a private copy
            source = self.runs["cond" if name == "run" else "match"]
            copy = root / f"existing-{name}"
            if not copy.exists():
                shutil.copytree(source, copy)
                self.copies[str(copy)] = copy
            return str(copy)
        if name == "damaged":  # a GAN run whose every manifest is garbage
            copy = root / "damaged"
            shutil.copytree(self.runs["cond"], copy)
            for manifest in copy.glob("checkpoints/*/manifest.json"):
                manifest.write_bytes(b"\xff\x00{not json")
            return str(copy)
        if name == "badyaml":  # a GAN run whose config.yaml is not UTF-8
            copy = root / "badyaml"
            shutil.copytree(self.runs["cond"], copy)
            (copy / "config.yaml").write_bytes(b"model: \xff\xfe\n")
            return str(copy)
        if name in self.runs:
            return str(self.runs[name])
        if (files / name).exists():
            return str(files / name)
        raise KeyError(token)

    def resolve(self, argv: list[str]) -> list[str]:
        return [self.path(a) if a.startswith("@") else a for a in argv]


class _Alarm(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Alarm("still running when the time alarm rang")


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    raised: str | None = None  # traceback text when the command raised
    argparse_exit: bool = False


def _capture() -> io.TextIOWrapper:
    # strict UTF-8, as a UTF-8 terminal: printing a lone surrogate raises there too
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)


def run_cli(argv: list[str], alarm_s: int = ALARM_S) -> Outcome:
    out, err = _capture(), _capture()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(alarm_s)
    raised, code, argparse_exit = None, None, False
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:
        code, argparse_exit = exc.code, True
    except BaseException:  # noqa: BLE001 - every escape is a finding, the alarm included
        raised = traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    text = [b.buffer.getvalue().decode("utf-8", "replace") for b in (out, err)]
    return Outcome(code, text[0], text[1], raised, argparse_exit)


def _head(text: str, lines: int = 6) -> str:
    rows = text.strip().splitlines()
    return "\n".join(rows[:2] + ["..."] + rows[-lines:]) if len(rows) > lines + 2 else "\n".join(rows)


def check(case: Case, sandbox: Sandbox, digests: dict[str, dict[str, str]], sane, alarm_s) -> None:
    findings = os.environ.get("GANFUSE_FUZZ_FINDINGS")
    try:
        _check(case, sandbox, digests, sane, alarm_s)
    except AssertionError as exc:
        if not findings:
            raise
        with open(findings, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": case.argv, "finding": str(exc)}) + "\n")


def _check(case: Case, sandbox: Sandbox, digests: dict[str, dict[str, str]], sane, alarm_s) -> None:
    argv = sandbox.resolve(case.argv)
    result = run_cli(argv, alarm_s)
    where = f"argv={argv!r}"
    assert result.raised is None, f"{where}\nraised:\n{_head(result.raised)}"
    assert result.code in (0, 2), f"{where}\nexit {result.code}; stderr:\n{_head(result.err)}"
    assert "Traceback" not in result.err, f"{where}\n{_head(result.err)}"
    if result.code == 2:
        lines = [line for line in result.err.splitlines() if line.strip()]
        if result.argparse_exit:  # argparse: usage lines, then one error line
            assert lines and ARGPARSE_ERROR_LINE.match(lines[-1]), f"{where}\n{result.err}"
            assert sum(": error:" in line for line in lines) == 1, f"{where}\n{result.err}"
        else:
            assert len(lines) == 1 and ERROR_LINE.match(lines[0]), (
                f"{where}\nexit 2 but stderr is not one 'ganfuse: error:' line:\n{result.err}"
            )
    else:
        assert not case.invalid, f"{where}\nexit 0 although it must refuse {case.invalid}"
        try:
            sane(argv, case, result)
        except Exception as exc:  # noqa: BLE001 - reported with the argv
            raise AssertionError(f"{where}\nexit 0 but the output is wrong: {exc!r}") from exc
    for folder, before in digests.items():
        assert _tree_digest(Path(folder)) == before, f"{where}\nchanged the existing run {folder}"
    for copy in sandbox.copies.values():
        if "--resume" not in argv:
            reference = sandbox.runs["cond" if copy.name == "existing-run" else "match"]
            assert _tree_digest(copy) == _tree_digest(reference), (
                f"{where}\nchanged the existing run given as output ({copy})"
            )


@pytest.fixture(scope="module")
def probe(runs, tmp_path_factory):
    """``probe(case, sane)``: run one drawn case in a fresh folder and check the outcome."""
    digests = {str(runs[k]): _tree_digest(runs[k]) for k in ("cond", "caption", "t2i", "match")}
    base = tmp_path_factory.mktemp("cli-fuzz-examples")

    def go(case: Case, sane=lambda argv, case, result: None, alarm_s: int = ALARM_S) -> None:
        root = Path(tempfile.mkdtemp(dir=base))
        try:
            check(case, Sandbox(runs, root), digests, sane, alarm_s)
        finally:
            ro = root / "readonly"
            if ro.exists():
                ro.chmod(0o755)
            shutil.rmtree(root, ignore_errors=True)

    return go


FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same probes on every run: a failure here is a finding, not a flake
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the argv is small and printed whole
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz(examples: int) -> settings:
    """``examples`` per command, times ``GANFUSE_FUZZ_SCALE`` (default 1) for a deeper search."""
    return settings(FUZZ, max_examples=examples * int(os.environ.get("GANFUSE_FUZZ_SCALE", "1")))


def _value(argv: list[str], option: str) -> str | None:
    return argv[argv.index(option) + 1] if option in argv else None


def _pngs(folder: str) -> list[Path]:
    return sorted(Path(folder).glob("*.png"))


def _assert_images(paths: list[Path], size: int | None = None) -> None:
    for path in paths:
        with Image.open(path) as image:
            image.load()
            if size is not None:
                assert image.size == (size, size), (path, image.size)


def _finite_numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _finite_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _finite_numbers(v)]
    return []


def _assert_finite_json(text: str) -> object:
    data = json.loads(text)
    numbers = _finite_numbers(data)
    assert all(math.isfinite(x) for x in numbers), text
    return data


# ------------------------------------------------------------------ GAN commands


@st.composite
def train_cases(draw) -> Case:
    case = Case(["train"])
    draw(_choose(case, None, ["digits-dcgan", "@tiny.yaml"],
                 ["nope", "@missing.yaml", "@bad_utf8.yaml", "@list.yaml", "@empty.txt", ""],
                 required=True, name="config"))  # fmt: skip
    case.argv += ["--no-progress", *_sets([*TINY, "train.steps=2", "train.checkpoint_every=2"])]
    # --run with existing checkpoints and no --resume must be refused
    draw(_choose(case, "--out", OUT_GOOD, [*OUT_BAD, "@run"], ["@emptydir", "@readonly"],
                 required=True))  # fmt: skip
    draw(_choose(case, "--steps", ["1", "2"], BAD_COUNT + NOT_INT))
    draw(_choose(case, "--max-minutes", ["5", "0.5"], ["nan", "-1", "0", "-inf", "", "x"], ["inf", "1e-9"]))
    draw(_choose(case, "--seed", ["0", "7"], NOT_INT, EDGE_SEED))
    draw(_choose(case, "--device", ["cpu"], BAD_DEVICE, ["cuda", "mps"]))
    draw(_choose(case, "--nproc", ["1"], ["0", "-1", *NOT_INT]))
    draw(_choose(case, "--logger", ["jsonl"], ["csv", ""]))
    if draw(st.integers(0, 3)) == 0:
        key, value = draw(st.sampled_from(valid_keys())), draw(VALUES)
        case.argv += ["--set", f"{key}={value}"]  # edge: accepted or rejected naming the key
    _flag(draw, case, "--resume")
    return case


def _train_sane(argv, case, result):
    from tests.faults.conftest import assert_every_checkpoint_verifies

    run = Path(_value(argv, "--out"))
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file(), argv
    assert_every_checkpoint_verifies(run)


@fuzz(6)
@given(case=train_cases())
def test_train_answers_every_input(probe, case):
    probe(case, _train_sane)


@st.composite
def sample_cases(draw) -> Case:
    case = Case(["sample"])
    draw(_choose(case, None, ["@cond"], ["@missing", "@emptydir", "@caption", "@file", "@damaged"],
                 required=True, name="run"))  # fmt: skip
    draw(_choose(case, "--num", ["1", "3"], BAD_COUNT + NOT_INT, required=True))
    draw(_choose(case, "--out", OUT_GOOD, OUT_BAD, OUT_EDGE, required=True))
    draw(_choose(case, "--seed", ["0", "5"], NOT_INT, EDGE_SEED))
    draw(_choose(case, "--class", ["0", "9"], ["10", "-1", "99999999999999999999", *NOT_INT]))
    draw(_choose(case, "--grid", ["@fresh-grid.png"], ["@underfile/grid.png"], ["@emptydir"]))
    draw(_choose(case, "--truncation", ["0.5", "1", "2"], ["nan", "inf", "-inf", "-1", "1e400"], ["0"]))
    draw(_choose(case, "--psi", ["0", "0.5", "1"], ["nan", "-0.1", "1.5", "x", ""]))
    draw(_choose(case, "--device", ["cpu"], BAD_DEVICE))
    return case


def _sample_sane(argv, case, result):
    files = _pngs(_value(argv, "--out"))
    assert len(files) >= int(_value(argv, "--num")), (argv, files)
    _assert_images(files, 32)
    if "--grid" in argv:
        _assert_images([Path(_value(argv, "--grid"))])


@fuzz(12)
@given(case=sample_cases())
def test_sample_answers_every_input(probe, case):
    probe(case, _sample_sane)


@st.composite
def export_cases(draw) -> Case:
    case = Case(["export"])
    draw(_choose(case, None, ["@cond", "@t2i"], ["@missing", "@emptydir", "@file", "@damaged"],
                 required=True, name="run"))  # fmt: skip
    draw(_choose(case, "--format", ["onnx", "torchscript", "hf"], ["tflite", "", "onnx2"], ["ONNX", " hf "],
                 required=True))  # fmt: skip
    fmt = case.flags.get("--format", "onnx").strip().lower()
    good = {"onnx": ["@fresh-g.onnx"], "torchscript": ["@fresh-g.pt"], "hf": ["@fresh-hub"]}.get(fmt, ["@fresh"])
    draw(_choose(case, "--out", good, OUT_BAD, OUT_EDGE, required=True))
    draw(_choose(case, "--which", ["latest"], ["oldest", ""], ["best"]))
    _flag(draw, case, "--no-check")
    _flag(draw, case, "--overwrite")
    return case


def _export_cli_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    if _value(argv, "--format").strip().lower() == "hf":
        assert (out / "model.safetensors").is_file() and (out / "README.md").is_file(), out
    else:
        assert out.is_file() and out.stat().st_size > 0, out


@fuzz(8)
@given(case=export_cases())
def test_export_answers_every_input(probe, case):
    probe(case, _export_cli_sane)


@st.composite
def project_cases(draw) -> Case:
    case = Case(["project"])
    draw(_choose(case, None, ["@cond"], ["@missing", "@emptydir", "@file", "@damaged", "@caption"],
                 required=True, name="run"))  # fmt: skip
    draw(_choose(case, "--image", ["@red.png"], ["@missing.png", "@not_image.png", "@emptydir"], required=True))
    draw(_choose(case, "--out", OUT_GOOD, OUT_BAD, OUT_EDGE, required=True))
    draw(_choose(case, "--steps", ["1", "3"], BAD_COUNT + NOT_INT))
    draw(_choose(case, "--restarts", ["1", "2"], BAD_COUNT + NOT_INT))
    draw(_choose(case, "--class", ["0", "9"], ["10", "-1", "99999999999999999999", *NOT_INT]))
    draw(_choose(case, "--prompt", [], ["a red circle"], EDGE_TEXT))
    draw(_choose(case, "--seed", ["0", "5"], NOT_INT, EDGE_SEED))
    draw(_choose(case, "--device", ["cpu"], BAD_DEVICE))
    return case


def _project_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    _assert_images([out / "projected.png"], 32)
    summary = json.loads((out / "projection.json").read_text())
    assert math.isfinite(summary["pixel_mse"]) and math.isfinite(summary["feature_error"]), summary


@fuzz(8)
@given(case=project_cases())
def test_project_answers_every_input(probe, case):
    probe(case, _project_sane)


@st.composite
def finetune_cases(draw) -> Case:
    case = Case(["finetune"])
    draw(_choose(case, None, ["@cond"], ["@missing", "@emptydir", "@file", "@damaged", "@caption"],
                 required=True, name="source"))  # fmt: skip
    draw(_choose(case, "--data", ["digits"], ["@missing", "@file", "nonsense", ""], ["@images", "@emptydir"],
                 required=True))  # fmt: skip
    draw(_choose(case, "--out", OUT_GOOD, OUT_BAD, OUT_EDGE, required=True))
    draw(_choose(case, "--steps", ["1"], BAD_COUNT + NOT_INT, always=True))
    draw(_choose(case, "--freeze-d", ["0", "1"], ["-1", "99999999999999999999", *NOT_INT], ["2", "3"]))
    draw(_choose(case, "--lr-scale", ["0.5", "1"], BAD_FLOAT + ["1.5"]))
    draw(_choose(case, "--max-minutes", ["5"], BAD_FLOAT))
    draw(_choose(case, "--seed", ["0", "5"], NOT_INT, EDGE_SEED))
    draw(_choose(case, "--device", ["cpu"], BAD_DEVICE))
    _flag(draw, case, "--no-progress")
    return case


def _finetune_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    assert (out / "config.yaml").is_file() and list((out / "checkpoints").glob("step_*")), out


@fuzz(6)
@given(case=finetune_cases())
def test_finetune_answers_every_input(probe, case):
    probe(case, _finetune_sane)


@st.composite
def generate_cases(draw) -> Case:
    case = Case(["generate"])
    draw(_choose(case, None, ["@t2i"], ["@cond", "@missing", "@emptydir", "@match"], required=True, name="run"))
    draw(_choose(case, "--prompt", ["a large red circle in the center", "a small blue square"],
                 ["", " "], EDGE_TEXT))  # fmt: skip
    draw(_choose(case, "--prompts-file", ["@prompts.txt"],
                 ["@bad_utf8.txt", "@empty.txt", "@missing.txt", "@emptydir"]))  # fmt: skip
    if "--prompt" not in case.flags and "--prompts-file" not in case.flags:
        case.invalid.append("no prompt")
    draw(_choose(case, "--num", ["1", "2"], BAD_COUNT + NOT_INT, required=True))
    draw(_choose(case, "--out", OUT_GOOD, OUT_BAD, OUT_EDGE, required=True))
    draw(_choose(case, "--seed", ["0"], NOT_INT, EDGE_SEED))
    draw(_choose(case, "--grid", ["@fresh-grid.png"], ["@underfile/grid.png"]))
    draw(_choose(case, "--truncation", ["0.7"], ["nan", "inf", "-1"], ["0"]))
    draw(_choose(case, "--device", ["cpu"], BAD_DEVICE))
    return case


def _generate_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    index = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert len(index) >= int(_value(argv, "--num")), argv
    _assert_images([out / r["file"] for r in index], 32)


@fuzz(10)
@given(case=generate_cases())
def test_generate_answers_every_input(probe, case):
    probe(case, _generate_sane)


@st.composite
def info_cases(draw) -> Case:
    case = Case(["info"])
    draw(_choose(case, None, ["@cond", "@t2i"], ["@missing", "@file", "@emptydir", "@match", "@badyaml"],
                 ["@damaged"], name="run"))  # fmt: skip
    _flag(draw, case, "--presets")
    if "--presets" in case.flags:
        case.invalid.clear()  # --presets lists the presets whatever the run
    return case


def _info_sane(argv, case, result):
    assert result.out.startswith(("run:", "presets:")), result.out


@fuzz(10)
@given(case=info_cases())
def test_info_answers_every_input(probe, case):
    probe(case, _info_sane)


@st.composite
def evaluate_cases(draw) -> Case:
    case = Case(["evaluate"])
    t2i = draw(st.integers(0, 3)) == 0
    if t2i:
        case.argv.append("@t2i")
        draw(_choose(case, "--metrics", ["attr"], ["fid", "nope", "rprec"]))
        draw(_choose(case, "--rprec-model", ["@caption"], [], ["@cond", "@missing"]))
        draw(_choose(case, "--num", ["4"], BAD_COUNT + NOT_INT, required=True))
    else:
        draw(_choose(case, None, ["@cond", "@images"], ["@missing", "@emptydir", "@file"],
                     required=True, name="source"))  # fmt: skip
        draw(_choose(case, "--ref", ["digits", "@images"], ["nope", "@missing", "@emptydir", ""],
                     required=True))  # fmt: skip
        draw(_choose(case, "--metrics", ["fid", "kid", "pr", "dc", "fid,kid"],
                     ["nope", "attr", "fid,nope"], [",", ",,", " "]))  # fmt: skip
        draw(_choose(case, "--extractor", ["digits"], ["nope", ""], ["inception"]))
        draw(_choose(case, "--num", ["12", "20"], BAD_COUNT + NOT_INT, required=True))
        draw(_choose(case, "--batch-size", ["8"], ["0", "-1", *NOT_INT], ["99999999999999999999"]))
        draw(_choose(case, "--resize", ["tf", "clean"], ["nope"]))
        draw(_choose(case, "--weights", [], ["@missing.pth", "@bad_utf8.txt", "@emptydir"]))
    draw(_choose(case, "--seed", ["0"], NOT_INT, EDGE_SEED))
    case.argv.append("--json")
    return case


def _evaluate_sane(argv, case, result):
    _assert_finite_json(result.out)


@fuzz(8)
@given(case=evaluate_cases())
def test_evaluate_answers_every_input(probe, case):
    probe(case, _evaluate_sane)


# ------------------------------------------------------------------ data and bench


@st.composite
def data_export_cases(draw) -> Case:
    case = Case(["data", "export"])
    draw(_choose(case, None, ["digits", "shapes"], ["mnist", "", "@images"], required=True, name="name"))
    draw(_choose(case, "--num", ["1", "3"], BAD_COUNT + NOT_INT + ["1798"], required=True))
    draw(_choose(case, "--out", OUT_GOOD, OUT_BAD, OUT_EDGE, required=True))
    draw(_choose(case, "--seed", ["0"], NOT_INT, EDGE_SEED))
    draw(_choose(case, "--image-size", ["8", "32"], ["0", "-1", "100000", *BAD_COUNT[3:], *NOT_INT], ["1"]))
    return case


def _export_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    num, size = int(_value(argv, "--num")), int(_value(argv, "--image-size") or 32)
    files = _pngs(out)
    assert len(files) == num, (argv, len(files))
    _assert_images(files, size)
    index = "labels.jsonl" if argv[2] == "digits" else "captions.jsonl"
    assert len((out / index).read_text().splitlines()) == num


@fuzz(10)
@given(case=data_export_cases())
def test_data_export_answers_every_input(probe, case):
    probe(case, _export_sane)


@st.composite
def data_pack_cases(draw) -> Case:
    case = Case(["data", "pack"])
    draw(_choose(case, None, ["digits", "shapes", "@images"], ["@missing", "@file", "@emptydir"],
                 required=True, name="source"))  # fmt: skip
    draw(_choose(case, "--out", OUT_GOOD, [*OUT_BAD, "@nonempty", "@run"], ["@emptydir"], required=True))
    draw(_choose(case, "--shard-size", ["2", "1000"], ["0", "-1", *NOT_INT], ["99999999999999999999"]))
    draw(_choose(case, "--image-size", ["8"], ["0", "-1", "100000", *BAD_COUNT[3:], *NOT_INT]))
    folder = case.flags.get("source") == "@images"
    if folder:
        draw(_choose(case, "--num", [], ["4", "0", "-1"]))  # a folder is packed whole
    else:
        draw(_choose(case, "--num", ["4", "6"], BAD_COUNT + NOT_INT, required=True))
    draw(_choose(case, "--seed", ["0"], NOT_INT, EDGE_SEED))
    return case


def _pack_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    index = _assert_finite_json((out / "shards.json").read_text())
    assert index and list(out.glob("*.tar")), (argv, index)


@fuzz(8)
@given(case=data_pack_cases())
def test_data_pack_answers_every_input(probe, case):
    probe(case, _pack_sane)


@st.composite
def data_check_cases(draw) -> Case:
    case = Case(["data", "check"])
    draw(_choose(case, None, ["@images"], ["@missing", "@file", "@emptydir"], required=True, name="folder"))
    draw(_choose(case, "--image-size", ["8", "64"], ["0", "-1", "100000", *NOT_INT]))
    draw(_choose(case, "--background", ["black", "#102030", "rgb(1,2,3)"], ["rgb(300,0,0)", "nope", ""]))
    draw(_choose(case, "--fit", ["crop", "pad"], ["squash", ""]))
    draw(_choose(case, "--caption-column", ["text", "caption"], ["", " "], EDGE_TEXT))
    draw(_choose(case, "--label-column", ["", "label"], [], EDGE_TEXT))  # no metadata: refused
    if case.flags.get("--label-column", "").strip():
        case.invalid.append("a label column without metadata")
    return case


def _check_sane(argv, case, result):
    assert "image files: 12, usable: 12" in result.out, result.out


@fuzz(8)
@given(case=data_check_cases())
def test_data_check_answers_every_input(probe, case):
    probe(case, _check_sane)


@st.composite
def data_preview_cases(draw) -> Case:
    case = Case(["data", "preview"])
    draw(_choose(case, None, ["@images"], ["@missing", "@file", "@emptydir"], required=True, name="folder"))
    draw(_choose(case, "--out", ["@fresh.png"], ["@underfile/grid.png", "@fresh.txt", "@emptydir"],
                 required=True))  # fmt: skip
    draw(_choose(case, "--image-size", ["8", "16"], ["0", "-1", "100000", *NOT_INT]))
    draw(_choose(case, "--num", ["1", "3"], ["0", "-1", "65", *NOT_INT]))
    draw(_choose(case, "--augment", ["translation", "cutout,color", ""], ["flip", "translation,x"]))
    draw(_choose(case, "--config", ["digits"], ["nope", "@bad_utf8.yaml", "@missing.yaml"]))
    draw(_choose(case, "--background", ["white"], ["rgb(1,2)"]))
    draw(_choose(case, "--seed", ["0"], NOT_INT, EDGE_SEED))
    return case


def _preview_sane(argv, case, result):
    size, num = int(_value(argv, "--image-size") or 64), int(_value(argv, "--num") or 8)
    with Image.open(_value(argv, "--out")) as grid:
        assert grid.size == (8 * (size + 2) + 2, min(num, 12) * (size + 2) + 2), grid.size


@fuzz(8)
@given(case=data_preview_cases())
def test_data_preview_answers_every_input(probe, case):
    probe(case, _preview_sane)


@st.composite
def bench_cases(draw) -> Case:
    case = Case(["bench", "train"])
    draw(_choose(case, None, ["digits-dcgan"], ["nope", "@bad_utf8.yaml", "@missing.yaml"],
                 required=True, name="preset"))  # fmt: skip
    # the default is 20 s of training: always give one here
    draw(_choose(case, "--seconds", ["0.3"], ["0", "-1", "nan", "inf", "1e400", "", "x"], always=True))
    case.argv += _sets(TINY)
    if draw(st.integers(0, 2)) == 0:
        case.argv += ["--set", f"{draw(st.sampled_from(valid_keys()))}={draw(VALUES)}"]
    case.argv.append("--json")
    return case


def _bench_sane(argv, case, result):
    data = _assert_finite_json(result.out)
    rates = [v for k, v in data.items() if "img" in k and isinstance(v, (int, float))]
    assert rates and all(r > 0 for r in rates), data


@fuzz(4)
@given(case=bench_cases())
def test_bench_train_answers_every_input(probe, case):
    probe(case, _bench_sane)


# ------------------------------------------------------------------ multimodal commands


def _mm_set(draw, case: Case) -> None:
    if draw(st.integers(0, 2)) == 0:
        case.argv += ["--set", f"{draw(st.sampled_from(MM_KEYS))}={draw(MM_VALUES)}"]


@st.composite
def fuse_train_cases(draw) -> Case:
    case = Case(["fuse", "train"])
    draw(_choose(case, "--task", ["matching", "color"], ["nope", "", "MATCHING"], required=True))
    draw(_choose(case, "--fusion", ["film", "early", "late-mean"], ["nope", ""]))
    draw(_choose(case, "--out", OUT_GOOD, [*OUT_BAD, "@fuserun", "@run"], ["@emptydir", "@nonempty"],
                 required=True))  # fmt: skip
    draw(_choose(case, "--max-minutes", ["5"], ["0", "-1", "nan", "-inf", "", "x"], ["inf", "1e-9"]))
    case.argv += TINY_FUSE
    _mm_set(draw, case)
    return case


def _fuse_train_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    assert (out / "run.json").is_file() and list(out.glob("checkpoints/step_*")), argv
    values = [float(line.split()[-1]) for line in result.out.splitlines()[1:] if line.strip()]
    assert values and all(math.isfinite(v) for v in values), result.out


@fuzz(6)
@given(case=fuse_train_cases())
def test_fuse_train_answers_every_input(probe, case):
    probe(case, _fuse_train_sane)


@st.composite
def fuse_evaluate_cases(draw) -> Case:
    case = Case(["fuse", "evaluate"])
    draw(_choose(case, None, ["@match", "@caption"], ["@cond", "@missing", "@emptydir", "@file", "@bench"],
                 required=True, name="run"))  # fmt: skip
    case.argv.append("--json")
    return case


@fuzz(5)
@given(case=fuse_evaluate_cases())
def test_fuse_evaluate_answers_every_input(probe, case):
    probe(case, lambda argv, case, result: _assert_finite_json(result.out))


@st.composite
def fuse_predict_cases(draw) -> Case:
    case = Case(["fuse", "predict"])
    draw(_choose(case, None, ["@match"], ["@cond", "@missing", "@emptydir"], required=True, name="run"))
    draw(_choose(case, "--image", ["@red.png"],
                 ["@missing.png", "@not_image.png", "@empty.txt", "@emptydir", "@bad_utf8.txt"],
                 required=True))  # fmt: skip
    draw(_choose(case, "--text", ["a small red circle in the center"], [], ["", *EDGE_TEXT]))
    if "--text" not in case.flags:
        case.invalid.append("a matching run needs --text")
    case.argv.append("--json")
    return case


def _predict_sane(argv, case, result):
    data = _assert_finite_json(result.out)
    probabilities = [v for k, v in data.items() if "prob" in k]
    assert all(0 <= p <= 1 for p in _finite_numbers(probabilities)), data


@fuzz(8)
@given(case=fuse_predict_cases())
def test_fuse_predict_answers_every_input(probe, case):
    probe(case, _predict_sane)


@st.composite
def fuse_benchmark_cases(draw) -> Case:
    case = Case(["fuse", "benchmark"])
    draw(_choose(case, "--out", OUT_GOOD, [*OUT_BAD, "@fuserun", "@run"], ["@emptydir", "@nonempty"],
                 required=True))  # fmt: skip
    draw(_choose(case, "--max-minutes", ["1"], ["0", "-1", "nan", "-inf", "", "x"], ["inf"]))
    # an empty list is refused, not read as "every task" (minutes of training)
    draw(_choose(case, "--tasks", ["matching"], ["nope", "matching,nope", "MATCHING", ",", " ", ""]))
    draw(_choose(case, "--fusions", ["early"], ["nope", "early,nope", ",", ""]))
    if "--tasks" not in case.flags or "--fusions" not in case.flags:
        # every task with every fusion is minutes of training: keep success paths small
        case.argv += ["--tasks", "matching"] if "--tasks" not in case.flags else ["--fusions", "early"]
    case.argv += [a for a in TINY_FUSE if a != "--quiet"] + ["--quiet"]
    _mm_set(draw, case)
    return case


def _benchmark_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    rows = _assert_finite_json((out / "results.json").read_text())
    assert rows, argv


@pytest.mark.slow
@fuzz(6)
@given(case=fuse_benchmark_cases())
def test_fuse_benchmark_answers_every_input(probe, case):
    probe(case, _benchmark_sane)


@fuzz(8)
@given(case=fuse_benchmark_cases().filter(lambda c: bool(c.invalid)))
def test_fuse_benchmark_refuses_bad_values_before_training(probe, case):
    probe(case, _benchmark_sane, alarm_s=10)  # a refusal is instant; training is what takes long


@st.composite
def caption_cases(draw) -> Case:
    case = Case(["caption"])
    draw(_choose(case, None, ["@caption"], ["@match", "@cond", "@missing", "@emptydir"], required=True, name="run"))
    mode = draw(st.sampled_from(["image", "image", "cycle", "both", "neither"]))
    if mode in ("image", "both"):
        draw(_choose(case, "--image", ["@red.png"], ["@missing.png", "@not_image.png", "@empty.txt", "@emptydir"],
                     required=True))  # fmt: skip
        if draw(st.booleans()):
            draw(_choose(case, "--image", ["@red.png"], ["@not_image.png"], required=True))
    if mode in ("cycle", "both"):
        draw(_choose(case, "--cycle", ["@t2i"], ["@cond", "@missing", "@match"], required=True))
        draw(_choose(case, "--num", ["2", "3"], ["1", *BAD_COUNT, *NOT_INT]))
    if mode in ("both", "neither"):
        case.invalid.append("give either --image or --cycle")
    draw(_choose(case, "--seed", ["0"], NOT_INT, EDGE_SEED))
    case.argv.append("--json")
    return case


def _caption_sane(argv, case, result):
    if "--cycle" in argv:
        _assert_finite_json(result.out)
        return
    records = [json.loads(line) for line in result.out.splitlines() if line.strip()]
    assert len(records) == argv.count("--image"), result.out
    assert all(isinstance(r["caption"], str) for r in records), records


@fuzz(8)
@given(case=caption_cases())
def test_caption_answers_every_input(probe, case):
    probe(case, _caption_sane)


# ------------------------------------------------------------------ report, serve, demo


@st.composite
def report_cases(draw) -> Case:
    case = Case(["report"])
    draw(_choose(case, None, ["@cond", "@caption", "@bench"], ["@missing", "@emptydir", "@file"],
                 required=True, name="run"))  # fmt: skip
    if draw(st.booleans()):
        draw(_choose(case, None, ["@match"], ["@missing"], name="run2"))
    # without --out a single run's report goes into the run folder: always give one here
    draw(_choose(case, "--out", ["@fresh.html"], ["@underfile/r.html", "@emptydir"], always=True))
    draw(_choose(case, "--seed", ["0"], NOT_INT, EDGE_SEED))
    draw(_choose(case, "--device", ["cpu"], BAD_DEVICE))
    return case


def _report_sane(argv, case, result):
    out = Path(_value(argv, "--out"))
    page = out.read_text(encoding="utf-8")
    assert "<html" in page.lower(), argv


@fuzz(4)
@given(case=report_cases())
def test_report_answers_every_input(probe, case):
    probe(case, _report_sane)


@pytest.fixture
def no_launch(monkeypatch, tmp_path):
    """``serve`` validates its runs and device as the real one does, then returns unlaunched."""
    import ganfuse.serve.app as app
    from ganfuse.serve.generate import GenerateService
    from ganfuse.serve.multimodal import MultimodalService

    def serve(paths, host="127.0.0.1", port=7860, limits=None, device="cpu", block=True):
        gans, multimodal = app.classify_runs([Path(p) for p in paths])
        GenerateService(gans, limits, device)
        MultimodalService(multimodal, limits, tmp_path)

    monkeypatch.setattr(app, "serve", serve)


@st.composite
def serve_cases(draw) -> Case:
    case = Case(["serve"])
    draw(_choose(case, None, ["@cond", "@caption", "@bench"], ["@missing", "@emptydir", "@file"],
                 required=True, name="run"))  # fmt: skip
    draw(_choose(case, "--host", ["127.0.0.1", "localhost"], [], ["0.0.0.0", "", "::1"]))
    draw(_choose(case, "--port", ["7860", "1", "65535"], ["0", "-1", "65536", *BAD_COUNT[3:], *NOT_INT]))
    draw(_choose(case, "--concurrency", ["1", "2"], ["0", "-1", *NOT_INT], ["99999999999999999999"]))
    draw(_choose(case, "--max-queue", ["1", "32"], ["0", "-1", *NOT_INT], ["99999999999999999999"]))
    draw(_choose(case, "--device", ["cpu"], BAD_DEVICE))
    return case


@fuzz(10)
@given(case=serve_cases())
def test_serve_validates_every_argument(probe, no_launch, case):
    probe(case)


@pytest.fixture
def no_stages(monkeypatch):
    """``demo`` validates its arguments and each stage's config, then skips the stage's work."""
    import ganfuse.cli.demo as demo
    from ganfuse.config import load_config

    def train(preset, out, minutes, seed, device, extra):
        assert minutes > 0 and math.isfinite(minutes), minutes  # the budget given to a stage
        load_config(preset, [f"train.seed={seed}", f"train.device={device}", *extra])
        return out

    def finish(out, digits_run, reported, seed, say):
        page = out / "report.html"
        page.write_text("<html></html>")
        return page

    monkeypatch.setattr(demo, "_train", train)
    monkeypatch.setattr(demo, "_fusion", lambda out, minutes, seed, say: out)
    monkeypatch.setattr(demo, "_finish", finish)


@st.composite
def demo_cases(draw) -> Case:
    case = Case(["demo"])
    # the default --out is runs/demo in the working directory: always give one here
    draw(_choose(case, "--out", OUT_GOOD, [*OUT_BAD, "@run", "@nonempty"], ["@emptydir"], always=True))
    draw(_choose(case, "--minutes", ["1", "15"], ["0", "-1", "nan", "inf", "-inf", "1e400", "", "x"]))
    draw(_choose(case, "--seed", ["0"], NOT_INT, EDGE_SEED))
    draw(_choose(case, "--device", ["cpu", "auto"], BAD_DEVICE))
    return case


@fuzz(12)
@given(case=demo_cases())
def test_demo_validates_every_argument(probe, no_stages, case):
    probe(case, lambda argv, case, result: None)


def test_every_command_is_fuzzed():
    """A new command fails this test until it has a strategy above."""
    from ganfuse.cli import build_parser

    fuzzed = {
        "train", "sample", "export", "generate", "info", "evaluate", "data export", "data pack", "data check",
        "project", "finetune",
        "data preview",
        "bench train", "fuse train", "fuse evaluate", "fuse predict", "fuse benchmark",
        "caption", "report", "serve", "demo",
    }  # fmt: skip
    commands = set()

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
                    if nested:
                        walk(sub, f"{prefix}{name} ")
                    else:
                        commands.add(f"{prefix}{name}")

    walk(build_parser(), "")
    assert commands == fuzzed
