"""Checkpoints from elsewhere: no code runs on load, and metadata is checked before models are built.

The malicious files below carry correct SHA-256 entries (a crafted checkpoint would), so only the
weights-only loader stands between them and the payload, which would create a marker file.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from ganfuse.cli import main
from ganfuse.config import load_config
from ganfuse.errors import CheckpointError, ConfigError, UserError
from ganfuse.run import load_run
from ganfuse.train.checkpoint import UnsafeCheckpointError, checkpoint_dirs, latest_good_checkpoint
from ganfuse.train.loop import Trainer
from tests.faults.conftest import TINY, rewrite_manifest


class Payload:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(checkpoint, name, payload_bytes):
    (checkpoint / name).write_bytes(payload_bytes)
    rewrite_manifest(checkpoint, lambda m: None)


def _torch_pickle(obj, path):
    torch.save(obj, path)
    return path.read_bytes()


@pytest.fixture(params=["torch-zip", "legacy-pickle", "nested-in-state"])
def evil_state(request, tmp_path):
    marker = tmp_path / "pwned"
    payload = Payload(marker)
    if request.param == "torch-zip":
        data = _torch_pickle(payload, tmp_path / "evil.pt")
    elif request.param == "legacy-pickle":
        data = pickle.dumps(payload, protocol=2)
    else:  # a plausible training state with the payload tucked inside
        data = _torch_pickle(
            {"step": 20, "opt_g": {"state": {}, "hook": payload}}, tmp_path / "evil.pt"
        )
    assert not marker.exists()
    return marker, data


def test_pickle_that_runs_code_is_refused_everywhere(run_copy, tmp_path, evil_state, capsys):
    marker, data = evil_state
    newest = checkpoint_dirs(run_copy)[0]
    _plant(newest, "state.pt", data)
    with pytest.raises(UnsafeCheckpointError, match="could execute code"):
        latest_good_checkpoint(run_copy)
    with pytest.raises(UnsafeCheckpointError):
        Trainer(load_config("digits-dcgan", TINY), run_copy, resume=True, progress=False)
    resume = ["train", "digits-dcgan", "--out", str(run_copy), "--resume", "--no-progress"]
    for item in TINY:
        resume += ["--set", item]
    assert main(resume) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err
    assert not marker.exists(), "the payload ran"


def test_refusal_is_not_silently_skipped(run_copy, tmp_path):
    """A crafted file is not 'damage': loading stops instead of quietly using an older checkpoint."""
    marker = tmp_path / "pwned"
    newest = checkpoint_dirs(run_copy)[0]
    _plant(newest, "state.pt", _torch_pickle(Payload(marker), tmp_path / "e.pt"))
    with pytest.raises(UnsafeCheckpointError):
        load_run(run_copy)  # sampling reads weights only, but the whole checkpoint must verify
    assert not marker.exists()


def test_pickle_in_place_of_safetensors_is_rejected(run_copy, tmp_path):
    marker = tmp_path / "pwned"
    newest, previous = checkpoint_dirs(run_copy)[:2]
    _plant(newest, "weights.safetensors", _torch_pickle(Payload(marker), tmp_path / "e.pt"))
    path, *_ = latest_good_checkpoint(run_copy)  # not loadable as safetensors: damaged, skipped
    assert path == previous and not marker.exists()


def test_resume_with_a_different_model_config_is_a_readable_error(run_copy):
    config = load_config("digits-dcgan", [*TINY, "model.g_width=64"])
    with pytest.raises(ConfigError, match="model config differs"):
        Trainer(config, run_copy, resume=True, progress=False)


def test_checkpoint_of_another_architecture_is_a_readable_error(run_copy, tmp_path):
    """Weights of a tiny DCGAN under a manifest that claims a wider one (hashes made to match)."""
    for path in checkpoint_dirs(run_copy):
        rewrite_manifest(path, lambda m: m["config"]["model"].update(g_width=64))
    with pytest.raises(UserError, match="do not fit"):
        load_run(run_copy)
    assert main(["sample", str(run_copy), "--num", "1", "--out", str(tmp_path / "s")]) == 2


def test_manifest_without_config_cannot_load_mismatched_weights(run_copy):
    """No config to compare: the weights themselves must not fit silently or crash."""
    for path in checkpoint_dirs(run_copy):
        rewrite_manifest(path, lambda m: m.pop("config"))
    config = load_config("digits-dcgan", [*TINY, "model.g_width=64"])
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(config, run_copy, resume=True, progress=False)


def test_invalid_config_values_in_a_manifest_are_a_readable_error(run_copy):
    for path in checkpoint_dirs(run_copy):
        rewrite_manifest(path, lambda m: m["config"]["model"].update(g_width=-3))
    with pytest.raises(UserError, match="metadata is invalid.*model.g_width"):
        load_run(run_copy)
