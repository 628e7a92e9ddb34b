"""Property tests over ``--set key=value`` overrides.

- any key and any value: the config is accepted, or a :class:`ConfigError` names the key (or,
  for a rule between two keys, the other key of the rule); never another exception;
- values inside the documented ranges are accepted;
- an accepted config never makes a run crash at start-up with something other than a UserError
  (seeds and devices reach torch's own parsers);
- no override makes training write outside its run folder. ``data.path`` is the only key that
  holds a path: it is read (``folder``, ``shards``) or, for ``mnist``/``cifar10``, the download
  cache the user named; ``preset`` is a label and never becomes part of a path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ganfuse.config import Config, load_config, valid_keys
from ganfuse.errors import ConfigError, UserError
from ganfuse.models.fusion import FUSION_LEVELS
from ganfuse.multimodal.config import TASKS as MM_TASKS
from ganfuse.multimodal.config import FuseConfig, config_from_dict, make_config
from ganfuse.multimodal.model import build_fusion_model
from ganfuse.train.loop import Trainer
from tests.faults.conftest import TINY

PRESET = "digits-dcgan"
# A rule between two keys may name the other key; these are the pairs the validator knows.
RELATED = {
    "data.name": {"data.path", "data.image_size", "model.arch"},
    "data.path": {"data.name"},
    "data.image_size": {"model.arch"},
    "model.arch": {"data.image_size", "data.name"},
    "model.conditional": {"data.name"},
    "train.augment": {"train.ada_target"},
    "train.ada_target": {"train.augment"},
    "train.log_every": {"train.eval_every", "train.monitor_every"},
}
INTERESTING = [
    "",
    "null",
    "~",
    "true",
    "false",
    "yes",
    "no",
    "0",
    "-1",
    "1",
    "7",
    "8",
    "32",
    "64",
    "2",
    "3",
    "1e-4",
    "1.0e-4",
    "0.5",
    "1.5",
    "-0.0",
    "1e6",
    "1e400",
    "-1e400",
    ".inf",
    "-.inf",
    ".nan",
    "nan",
    "inf",
    "0x10",
    "0o17",
    "1_000",
    "4294967296",
    "99999999999999999999999",
    "[]",
    "[1, 2]",
    "{a: 1}",
    "[translation]",
    "translation,cutout",
    "color",
    "cpu",
    "cuda",
    "cuda:0",
    "cuda:x",
    "cuda:-1",
    "cudax",
    "mps",
    "auto",
    "fp32",
    "bf16",
    "fp16",
    "hinge",
    "wgan-gp",
    "resnet",
    "dcgan",
    "folder",
    "digits",
    "shapes",
    "../../etc",
    "/tmp",
    "!!python/object/apply:os.system ['true']",
    "'quoted'",
    '"x"',
    "a: b",
    "- x",
    "&a",
    "*a",
    "%x",
    "\x00",
    "\u2028",
    "é",
]
VALUES = st.one_of(
    st.sampled_from(INTERESTING),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
PROPERTY = settings(max_examples=200, deadline=None)


def _names_a_key(message: str, key: str) -> bool:
    return key in message or any(other in message for other in RELATED.get(key, ()))


@PROPERTY
@given(key=st.sampled_from(valid_keys()), value=VALUES)
def test_every_override_is_accepted_or_rejected_naming_its_key(key, value):
    try:
        config = load_config(PRESET, [f"{key}={value}"])
    except ConfigError as exc:
        assert _names_a_key(str(exc), key), f"{key}={value!r}: {exc}"
        return
    assert isinstance(config, Config)


@PROPERTY
@given(key=st.text(min_size=1, max_size=20).filter(lambda k: "=" not in k), value=VALUES)
def test_unknown_keys_are_rejected_naming_them(key, value):
    assume(key.strip() not in valid_keys())
    with pytest.raises(ConfigError) as info:
        load_config(PRESET, [f"{key}={value}"])
    assert repr(key.strip())[1:-1] in str(info.value) or key.strip() in str(info.value)


@PROPERTY
@given(item=st.text(max_size=30).filter(lambda s: "=" not in s))
def test_overrides_without_equals_sign_are_rejected(item):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(PRESET, [item])


def _in_range(key: str) -> st.SearchStrategy[str] | None:
    """Values the validator documents as valid for ``key``, as override text."""
    ranges = {
        "train.lr_g": st.floats(1e-8, 1.0),
        "train.lr_d": st.floats(1e-8, 1.0),
        "train.beta1": st.floats(0, 0.999),
        "train.beta2": st.floats(0, 0.999),
        "train.ema_decay": st.floats(0, 0.9999),
        "train.augment_p": st.floats(0, 1),
        "train.r1_gamma": st.floats(0, 100),
        "train.gp_weight": st.floats(0, 100),
        "train.ada_kimg": st.floats(0.01, 100),
        "train.max_minutes": st.floats(0.01, 1e4),
        "train.seed": st.integers(0, 2**32 - 1),
        "train.batch_size": st.integers(1, 4096),
        "train.steps": st.integers(1, 10**9),
        "train.n_critic": st.integers(1, 10),
        "train.r1_every": st.integers(1, 64),
        "train.checkpoint_every": st.integers(1, 10**6),
        "train.sample_every": st.integers(1, 10**6),
        "train.keep_checkpoints": st.integers(1, 100),
        "train.ema_warmup_steps": st.integers(0, 10**6),
        "train.ada_interval": st.integers(1, 100),
        "model.z_dim": st.integers(1, 1024),
        "model.g_width": st.integers(8, 1024),
        "model.d_width": st.integers(8, 1024),
        "train.device": st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:3", "mps"]),
        "train.loss": st.sampled_from(["nonsaturating", "hinge", "wgan-gp", "lsgan"]),
        "train.precision": st.sampled_from(["auto", "fp32", "bf16", "fp16"]),
        "train.augment": st.sets(st.sampled_from(["translation", "cutout", "color"])).map(",".join),
    }
    strategy = ranges.get(key)
    return None if strategy is None else strategy.map(str)


RANGED_KEYS = [k for k in valid_keys() if _in_range(k) is not None]


@PROPERTY
@given(data=st.data(), key=st.sampled_from(RANGED_KEYS))
def test_documented_valid_values_are_accepted(data, key):
    value = data.draw(_in_range(key))
    config = load_config(PRESET, [f"{key}={value}"])
    section, name = key.split(".")
    assert getattr(getattr(config, section), name) is not None or value in ("", "null")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.one_of(
        st.integers(-(2**70), 2**70), st.sampled_from([0, 2**32 - 1, 2**32, 2**44, 2**63, -1])
    ),
    device=st.sampled_from(
        ["cpu", "auto", "cuda", "cuda:0", "cuda:x", "cudax", "cuda:-1", "mps", "cpu:0"]
    ),
)
def test_accepted_seeds_and_devices_start_a_run_or_fail_clearly(tmp_path_factory, seed, device):
    try:
        config = load_config(
            PRESET, [*TINY, f"train.seed={seed}", f"train.device={device}", "train.steps=1"]
        )
    except ConfigError as exc:
        assert "train.seed" in str(exc) or "train.device" in str(exc)
        return
    run = tmp_path_factory.mktemp("seed")
    try:
        trainer = Trainer(config, run / "run", progress=False)
    except UserError:
        return  # e.g. cuda on a machine without a GPU: a clear error
    trainer.fit()
    assert trainer.step == 1


# ------------------------------------------------------------------ writes stay in the run folder

_WRITES: list[tuple[str, str]] | None = None
_WRITE_EVENTS = {
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.truncate",
    "os.symlink",
    "os.link",
    "os.chmod",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
}


_DIR_FD_ARG = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2, "os.rename": 2}


def _audit(event: str, args: tuple) -> None:
    if _WRITES is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        )
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            _WRITES.append((event, os.fsdecode(path)))
    elif event in _WRITE_EVENTS:
        dir_fd = (
            args[_DIR_FD_ARG[event]]
            if event in _DIR_FD_ARG and len(args) > _DIR_FD_ARG[event]
            else None
        )
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, os.PathLike)):
                path = os.fsdecode(arg)
                if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
                    path = os.path.join(
                        os.readlink(f"/proc/self/fd/{dir_fd}"), path
                    )  # shutil.rmtree
                _WRITES.append((event, path))


_HOOKED = False


@contextlib.contextmanager
def recorded_writes() -> typing.Iterator[list[tuple[str, str]]]:
    """Every file-system write made through Python while active (via an audit hook)."""
    global _WRITES, _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    _WRITES = []
    try:
        yield _WRITES
    finally:
        _WRITES = None


def _inside(path: str, folders: list[Path]) -> bool:
    resolved = Path(os.path.abspath(path)).resolve()
    return any(resolved.is_relative_to(f.resolve()) for f in folders)


_PATHLIKE = st.sampled_from(
    [
        "../escape",
        "../../../../tmp/escape",
        "/tmp/escape",
        "~/escape",
        "..",
        "/",
        "a/b",
        "C:\\escape",
        "%2e%2e/escape",
        "run/../../escape",
        "\x00",
        "🙂",
    ]
)
_WRITE_OVERRIDES = st.fixed_dictionaries(
    {},
    optional={
        "preset": st.one_of(_PATHLIKE, st.text(max_size=20)),
        "train.sample_every": st.integers(1, 3),
        "train.checkpoint_every": st.integers(1, 3),
        "train.log_every": st.sampled_from([1, 2]),
        "train.keep_checkpoints": st.integers(1, 3),
        "train.ema_decay": st.sampled_from([0.0, 0.9]),
        "train.augment": st.sampled_from(["", "translation,cutout"]),
        "data.path": _PATHLIKE,  # ignored by digits: must not create anything there either
    },
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(overrides=_WRITE_OVERRIDES)
def test_no_override_makes_training_write_outside_its_run_folder(
    tmp_path_factory, monkeypatch, overrides
):
    sandbox = tmp_path_factory.mktemp("sandbox")
    run, cwd = sandbox / "runs" / "run", sandbox / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    items = [f"{k}={v}" for k, v in overrides.items()]
    try:
        config = load_config(PRESET, [*TINY, "train.log_every=1", *items, "train.steps=4"])
    except ConfigError:
        return
    cache = Path(os.environ["GANFUSE_CACHE"])  # set by tests/conftest.py: the one shared cache
    before = {p for p in sandbox.rglob("*")}
    with recorded_writes() as writes:
        Trainer(config, run, progress=False).fit()
    # creating the folders on the way to --out is fine; anything else must be inside the run
    outside = [
        (e, p)
        for e, p in writes
        if not _inside(p, [run, cache]) and not (e == "os.mkdir" and run.is_relative_to(Path(p)))
    ]
    assert outside == [], outside
    created = {p for p in sandbox.rglob("*")} - before
    assert all(p == sandbox / "runs" or p.is_relative_to(run) for p in created), sorted(created)


# Every text-valued key, and what it is. A new one fails this test until it is classified here
# (and, if it names a place to write, covered by the write test above).
TEXT_KEYS = {
    "preset": "label",
    "data.name": "choice",
    "data.path": "path read, or the download cache for mnist/cifar10",
    "data.holdout": "labels",
    "data.caption_column": "a metadata column name (only read)",
    "data.label_column": "a metadata column name (only read)",
    "data.background": "a colour",
    "data.fit": "choice",
    "model.arch": "choice",
    "model.d_norm": "choice",
    "model.slot_mask": "choice",
    "model.mask_resolution": "choice",
    "train.loss": "choice",
    "train.augment": "choices",
    "train.precision": "choice",
    "train.device": "choice",
    "train.loggers": "choices (tensorboard writes under RUN/tensorboard)",
    "train.init_from": "path read (a source run's checkpoints, at step 0 only)",
    "text.encoder": "choice, or a sentence-transformers model read from its name or path",
    "text.vocab": "words",
    "text.fusion": "choice",
    "text.d_condition": "choice",
}


def test_every_text_valued_key_is_classified():
    keys = set()
    for field in dataclasses.fields(Config):
        if field.name == "preset":
            keys.add("preset")
            continue
        section = field.default_factory()
        hints = typing.get_type_hints(type(section))
        for name, annotation in hints.items():
            if str in (annotation, *typing.get_args(annotation)) or "str" in str(annotation):
                keys.add(f"{field.name}.{name}")
    assert keys == set(TEXT_KEYS)


# ------------------------------------------------------------------ the multimodal config
# ``ganfuse fuse train --set key=value`` goes through the same coercer; a rule between two keys
# may name the other key.
MM_FIELDS = [f.name for f in dataclasses.fields(FuseConfig)]
MM_KEYS = [*MM_FIELDS, *(f"fusion_options.{name}" for name in ("rank", "heads", "dim", "hidden"))]
MM_RELATED = {
    "image_size": {"image_widths"},
    "fusion_options.dim": {"fusion_options.heads"},
    "fusion_options.heads": {"fusion_options.dim"},
}
MM_VALUES = st.one_of(
    VALUES,
    st.sampled_from(
        [
            "[0]",
            "[8, 16]",
            "[32, 64, 128]",
            "[1, 2, 3, 4, 5, 6]",
            "[.inf]",
            "matching",
            "film",
            "cross-attention",
            "small",
            "minilm",
            "uncertainty",
            "100000",
            "256",
        ]
    ),
)


@PROPERTY
@given(
    task=st.sampled_from(MM_TASKS),
    fusion=st.sampled_from([None, *FUSION_LEVELS]),
    key=st.sampled_from(MM_KEYS),
    value=MM_VALUES,
)
def test_every_multimodal_override_is_accepted_or_rejected_naming_its_key(task, fusion, key, value):
    try:
        config = make_config(task, fusion, [f"{key}={value}"])
    except ConfigError as exc:
        message = str(exc)
        assert key in message or any(k in message for k in MM_RELATED.get(key, ())), (
            f"{key}={value!r}: {exc}"
        )
        assert "\n" not in message
        return
    assert isinstance(config, FuseConfig)
    # what a run saves, it can load
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


@PROPERTY
@given(key=st.text(min_size=1, max_size=20).filter(lambda k: "=" not in k), value=MM_VALUES)
def test_unknown_multimodal_keys_are_rejected_naming_them(key, value):
    assume(key.strip() not in MM_FIELDS and not key.strip().startswith("fusion_options."))
    with pytest.raises(ConfigError) as info:
        make_config("matching", None, [f"{key}={value}"])
    assert repr(key.strip())[1:-1] in str(info.value) or key.strip() in str(info.value)


def _yaml_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@PROPERTY
@given(data=st.dictionaries(st.sampled_from(MM_KEYS[: len(MM_FIELDS)]), MM_VALUES.map(_yaml_value)))
def test_a_saved_multimodal_config_with_random_fields_loads_or_fails_clearly(data):
    """``config_from_dict`` reads a run's saved config: any content is a config or a ConfigError."""
    try:
        config = config_from_dict(data)
    except ConfigError:
        return
    assert isinstance(config, FuseConfig)


@PROPERTY
@given(
    widths=st.lists(st.integers(1, 24), min_size=1, max_size=6),
    image_dim=st.integers(1, 24),
    fused_dim=st.integers(1, 24),
    fusion=st.sampled_from(list(FUSION_LEVELS)),
    rank=st.integers(1, 4),
)
def test_accepted_multimodal_sizes_build_a_model_that_runs(
    widths, image_dim, fused_dim, fusion, rank
):
    """Sizes the validator accepts never crash the model: a forward pass gives finite logits."""
    options = [f"fusion_options.rank={rank}"] if fusion == "low-rank" else []
    overrides = [
        f"image_widths={widths}",
        f"image_dim={image_dim}",
        f"fused_dim={fused_dim}",
        "text_dim=8",
        "text_hidden_dim=8",
        "text_embed_dim=8",
        "head_hidden=8",
        *options,
    ]
    try:
        config = make_config("matching", fusion, overrides)
    except ConfigError as exc:
        assert "image_widths" in str(exc)
        return
    torch.manual_seed(0)
    model = build_fusion_model(config, {"match": 2}, vocab=["a", "red", "circle"]).eval()
    with torch.no_grad():
        logits = model({"image": torch.zeros(2, 3, 32, 32), "text": ["a red circle", "red"]})
    assert logits["match"].shape == (2, 2) and bool(torch.isfinite(logits["match"]).all())


# ------------------------------------------------------------------ YAML config files
# ``ganfuse train FILE.yaml`` and ``bench train FILE.yaml`` read the GAN config from a file: any
# content (bytes that are not UTF-8, YAML that is not a mapping, sections holding lists, any key
# and value) is a config or one ConfigError line.
_SECTIONS = sorted({key.split(".")[0] for key in valid_keys() if "." in key})
_YAML_TEXTS = st.sampled_from(
    [
        "",
        "~",
        "- 1\n- 2\n",
        "just text",
        "model: [1, 2]\n",
        "model: 3\n",
        "train: {steps: .nan}\n",
        "train:\n  steps: 1e400\n",
        "train:\n  lr_g: .inf\n",
        "{",
        "a: &x [*x]\n",
        "!!python/object/apply:os.system ['true']\n",
        "model:\n  g_width: 99999999999999999999999\n",
        "data:\n  name: folder\n",
        "\ufeffmodel:\n  g_width: 32\n",
        "model:\n  g_width: 32\nmodel:\n  g_width: 64\n",
    ]
)


@st.composite
def _yaml_mappings(draw) -> str:
    import yaml

    data: dict = {}
    for section in draw(st.lists(st.sampled_from([*_SECTIONS, "nope"]), max_size=3)):
        keys = [k.split(".", 1)[1] for k in valid_keys() if k.startswith(section + ".")]
        names = st.one_of(st.sampled_from(keys), st.text(max_size=8)) if keys else st.text(max_size=8)
        data[section] = draw(st.dictionaries(names, VALUES.map(_yaml_value), max_size=3))
    return yaml.safe_dump(data, allow_unicode=True)


@PROPERTY
@given(
    content=st.one_of(
        st.binary(max_size=200),
        _YAML_TEXTS.map(lambda t: t.encode("utf-8")),
        _yaml_mappings().map(lambda t: t.encode("utf-8")),
        _yaml_mappings().map(lambda t: t.encode("utf-8") + b"\n# \xff\xfe"),
    )
)
def test_a_yaml_config_file_with_any_content_loads_or_fails_in_one_line(
    tmp_path_factory, content
):
    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_bytes(content)
    try:
        config = load_config(str(path))
    except ConfigError as exc:
        assert str(exc).strip() and "\n" not in str(exc), repr(str(exc))
        return
    assert isinstance(config, Config)
