"""metrics.jsonl and TensorBoard logging backends."""

from __future__ import annotations

import json
import math

import pytest

from ganfuse.errors import UserError
from ganfuse.logging_backends import JsonlLogger, TensorBoardLogger, make_loggers
from ganfuse.run_folders import read_metrics


def test_jsonl_appends_strict_json_lines_readable_while_open(tmp_path):
    logger = JsonlLogger(tmp_path)
    logger.log({"step": 10, "loss_d": 0.5, "fd": math.nan})
    # flushed at once: a report of a live run sees the line
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {
        "step": 10,
        "loss_d": 0.5,
        "fd": None,
    }
    logger.log({"step": 20, "loss_d": 0.25})
    logger.close()
    assert read_metrics(tmp_path) == [{"step": 10.0, "loss_d": 0.5}, {"step": 20.0, "loss_d": 0.25}]
    with pytest.raises(ValueError, match="step"):
        JsonlLogger(tmp_path).log({"loss_d": 1.0})


class FakeWriter:
    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_tensorboard_writes_numeric_fields_under_grouped_tags(tmp_path):
    writers = []
    logger = TensorBoardLogger(
        tmp_path, writer_factory=lambda d: writers.append(FakeWriter(d)) or writers[-1]
    )
    logger.log(
        {
            "step": 7,
            "loss_d": 0.5,
            "grad_norm_g": 2.0,
            "fd_best": True,
            "custom": 3,
            "bad": math.inf,
        }
    )
    logger.close()
    (writer,) = writers
    assert writer.log_dir == str(tmp_path / "tensorboard")
    assert writer.scalars == [("loss/D", 0.5, 7), ("grad_norm/G", 2.0, 7), ("other/custom", 3, 7)]
    assert writer.closed


def test_make_loggers_rejects_unknown_names_and_missing_tensorboard(tmp_path):
    with pytest.raises(UserError, match="choose from jsonl, tensorboard"):
        make_loggers(tmp_path, ["wandb"])
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"pip install -e \"\.\[tensorboard\]\""):
            make_loggers(tmp_path, ["tensorboard"])
        assert not (tmp_path / "metrics.jsonl").exists()  # nothing opened before the error
    with make_loggers(tmp_path) as loggers:
        loggers.log({"step": 1, "loss_g": 0.75})
    assert read_metrics(tmp_path) == [{"step": 1.0, "loss_g": 0.75}]
