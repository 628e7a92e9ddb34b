"""Saved runs (the GAN runs' checkpoint format: safetensors + hashed manifest, no pickle),
``ganfuse fuse evaluate/predict``, ``ganfuse caption``, and the clear errors a user gets for bad
input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ganfuse.cli import main
from ganfuse.errors import CheckpointError
from ganfuse.multimodal.checkpoint import read_run
from ganfuse.multimodal.evaluate import evaluate_run
from ganfuse.multimodal.weighting import LossWeighting
from ganfuse.train.checkpoint import MANIFEST, STATE, WEIGHTS, verify_checkpoint


def test_a_run_is_a_verified_checkpoint_plus_json_and_reloads_to_the_same_scores(matching_run):
    run = matching_run.run_dir
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.json",
        "metrics.json",
        "metrics.jsonl",
        "run.json",
    ]
    step = run / "checkpoints" / "step_00000003"  # the three steps of TINY
    assert sorted(p.name for p in step.iterdir()) == sorted([MANIFEST, STATE, WEIGHTS])
    assert (run / "checkpoints" / "latest").read_text().strip() == step.name
    manifest = verify_checkpoint(step)  # every file matches its SHA-256
    assert manifest["kind"] == "fusion" and manifest["step"] == 3
    assert manifest["config"] == json.loads((run / "config.json").read_text())
    assert manifest["task_sizes"] == {"match": 2}
    assert json.loads((run / "run.json").read_text()) == {"kind": "fusion", "format": 2}
    saved = json.loads((run / "metrics.json").read_text())["test"]
    assert saved == matching_run.test_metrics
    assert evaluate_run(run) == pytest.approx(saved)


def test_cli_evaluate_json(matching_run, capsys):
    assert main(["fuse", "evaluate", str(matching_run.run_dir), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["match_accuracy"] == pytest.approx(matching_run.test_metrics["match_accuracy"])


def test_cli_predict_prints_the_answer_and_its_probability(matching_run, shape_png, capsys):
    code = main(
        [
            "fuse",
            "predict",
            str(matching_run.run_dir),
            "--image",
            str(shape_png),
            "--text",
            "a small red circle in the center",
        ]
    )
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("match: ") and line.split()[1] in ("yes", "no")
    probability = float(line.split("(")[1].rstrip(")"))
    assert 0.5 <= probability <= 1.0


@pytest.mark.parametrize(
    "make_image, text, message",
    [
        (lambda tmp: tmp / "missing.png", "a red circle", "does not exist"),
        (
            lambda tmp: (tmp / "notes.png").write_text("not an image") and tmp / "notes.png",
            "a red circle",
            "not a readable image",
        ),
        (lambda tmp: tmp, "a red circle", "not a file"),
        (None, "   ", "text is empty"),
        (None, None, "text is empty"),
    ],
)
def test_predict_bad_input_exits_2_with_a_clear_message(
    matching_run, shape_png, tmp_path, capsys, make_image, text, message
):
    image = shape_png if make_image is None else make_image(tmp_path)
    argv = ["fuse", "predict", str(matching_run.run_dir), "--image", str(image)]
    if text is not None:
        argv += ["--text", text]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ganfuse: error:") and message in err and err.count("\n") == 1


def test_predict_on_a_missing_or_broken_run_exits_2(tmp_path, shape_png, capsys, matching_run):
    assert (
        main(["fuse", "predict", str(tmp_path / "nope"), "--image", str(shape_png), "--text", "x"])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(matching_run.run_dir, broken)
    (broken / "checkpoints" / "step_00000003" / WEIGHTS).write_bytes(b"\x00" * 16)
    assert (
        main(["fuse", "predict", str(broken), "--image", str(shape_png), "--text", "a red circle"])
        == 2
    )
    err = capsys.readouterr().err
    assert "weights.safetensors does not match its recorded SHA-256" in err
    assert err.count("\n") == 1
    old = tmp_path / "old"  # a run folder of the first format: weights without a manifest
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"\x00" * 16)
    (old / "run.json").write_text('{"kind": "fusion", "format": 1}')
    assert main(["fuse", "predict", str(old), "--image", str(shape_png), "--text", "x"]) == 2
    assert "train it again" in capsys.readouterr().err


def test_train_rejects_unknown_task_fusion_and_key(tmp_path, capsys):
    assert main(["fuse", "train", "--task", "sorting", "--out", str(tmp_path / "r")]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert (
        main(
            ["fuse", "train", "--task", "matching", "--fusion", "sum", "--out", str(tmp_path / "r")]
        )
        == 2
    )
    assert "fusion must be one of" in capsys.readouterr().err
    assert (
        main(
            [
                "fuse",
                "train",
                "--task",
                "matching",
                "--out",
                str(tmp_path / "r"),
                "--set",
                "stepz=3",
            ]
        )
        == 2
    )
    assert "unknown multimodal config key 'stepz'" in capsys.readouterr().err


def test_caption_cli_writes_a_caption(caption_run, shape_png, capsys):
    assert main(["caption", str(caption_run.run_dir), "--image", str(shape_png)]) == 0
    caption = capsys.readouterr().out.strip()
    assert caption and "\n" not in caption
    # The run saved its vocabulary and its test scores.
    record = read_run(caption_run.run_dir)
    assert record.kind == "caption" and "<eos>" in record.meta["vocab"]
    assert 0.0 <= record.metrics["test"]["exact_match"] <= 1.0


def test_caption_cli_refuses_a_fusion_run(matching_run, shape_png, capsys):
    assert main(["caption", str(matching_run.run_dir), "--image", str(shape_png)]) == 2
    assert "needs a caption run" in capsys.readouterr().err


def test_zeroshot_predict_gives_similarity_and_class(zeroshot_run, shape_png, capsys):
    assert (
        main(
            [
                "fuse",
                "predict",
                str(zeroshot_run.run_dir),
                "--image",
                str(shape_png),
                "--text",
                "a red circle",
                "--json",
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert -1.0 <= answer["similarity"] <= 1.0
    assert answer["class"].split()[1] in ("circle", "square", "triangle")


def test_load_rejects_a_run_of_the_wrong_kind(zeroshot_run):
    from ganfuse.multimodal.train import load_fusion_run

    with pytest.raises(CheckpointError, match="not a fusion run"):
        load_fusion_run(zeroshot_run.run_dir)


def test_uncertainty_weighting_formula():
    weighting = LossWeighting(["a", "b"], "uncertainty")
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([0.0, 1.0]))
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    expected = 2.0 + (3.0 * torch.exp(torch.tensor(-1.0)) + 1.0)
    torch.testing.assert_close(weighting(losses), expected)
    assert weighting.weights() == pytest.approx(
        {"a": 1.0, "b": float(torch.exp(torch.tensor(-1.0)))}
    )
    fixed = LossWeighting(["a", "b"], "fixed", {"b": 0.5})
    torch.testing.assert_close(fixed(losses), torch.tensor(3.5))


def test_frozen_pretrained_image_encoder_trains_only_the_rest(zeroshot_run, tmp_path):
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.train import train_fusion
    from ganfuse.multimodal.zeroshot import load_dual_encoder

    from .conftest import TINY

    overrides = [*TINY, f"image_encoder_init={zeroshot_run.run_dir}", "freeze_image_encoder=true"]
    result = train_fusion(make_config("vqa", "film", overrides), tmp_path / "vqa", progress=False)
    pretrained = load_dual_encoder(zeroshot_run.run_dir).image_encoder.state_dict()
    for key, value in result.model.encoders["image"].state_dict().items():
        torch.testing.assert_close(value, pretrained[key])  # untouched by training
    assert result.params == sum(
        p.numel()
        for name, p in result.model.named_parameters()
        if not name.startswith("encoders.image.")
    )
    # Cached features in training, images through the encoder when reloaded: the same scores.
    assert evaluate_run(result.run_dir) == pytest.approx(result.test_metrics)


def test_text_encoder_init_copies_shared_words_and_keeps_new_ones(zeroshot_run):
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.model import build_text
    from ganfuse.multimodal.train import init_text_encoder, task_vocabulary
    from ganfuse.multimodal.zeroshot import load_dual_encoder

    torch.manual_seed(0)
    target = build_text(make_config("vqa", "early"), task_vocabulary("vqa"))
    fresh_what = target.embedding.weight[target.tokenizer.index["what"]].clone()
    init_text_encoder(target, str(zeroshot_run.run_dir))
    source = load_dual_encoder(zeroshot_run.run_dir).text_encoder
    assert "what" not in source.tokenizer.index  # a question word, new to the caption encoder
    torch.testing.assert_close(target.embedding.weight[target.tokenizer.index["what"]], fresh_what)
    for word in ("red", "triangle", "left"):
        torch.testing.assert_close(
            target.embedding.weight[target.tokenizer.index[word]],
            source.embedding.weight[source.tokenizer.index[word]],
        )
    torch.testing.assert_close(target.gru.weight_hh_l0, source.gru.weight_hh_l0)


def test_training_restores_the_callers_thread_count(tmp_path):
    import torch

    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.zeroshot import train_zeroshot
    from tests.multimodal.conftest import TINY

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        import ganfuse.multimodal.zeroshot as zs

        original = zs.optimise

        def spy(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return original(*args, **kwargs)

        zs.optimise = spy
        try:
            train_zeroshot(make_config("zeroshot", None, TINY), tmp_path / "zs", progress=False)
        finally:
            zs.optimise = original
        assert seen == [1]  # the run's threads=1 while it trains
        assert torch.get_num_threads() == 2  # and the caller's count afterwards
    finally:
        torch.set_num_threads(before)
