"""``ganfuse evaluate`` on text-to-image runs: attribute accuracy and R-precision (issue 5, 6)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ganfuse.cli import main
from ganfuse.data import shapes
from ganfuse.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, ShapeAttributes, parse_caption
from ganfuse.metrics.attributes import predicted_attributes
from ganfuse.metrics.t2i import evaluate_t2i

TINY_T2I = ["model.z_dim=8", "model.g_width=16", "model.d_width=8", "text.cond_dim=16",
            "train.batch_size=8", "train.log_every=2", "train.sample_every=4", "train.checkpoint_every=4",
            "text.encoder=small", "text.contrastive_weight=0", "train.precision=fp32"]
TINY_FUSE = ["train_size=64", "eval_size=24", "batch_size=8", "steps=3", "warmup_steps=1", "threads=1",
             "precision=fp32"]


def one_hot(a: ShapeAttributes) -> torch.Tensor:
    parts = [F.one_hot(torch.tensor(values.index(v)), len(values)).float()
             for values, v in ((tuple(COLORS), a.color), (SHAPES, a.shape), (SIZES, a.size),
                               (POSITIONS, a.position))]
    return F.normalize(torch.cat(parts), dim=0)


class AttributeEmbedder:
    """A 'perfect' dual encoder: the attributes a prompt states / the classifier sees, one-hot."""

    def encode_text(self, texts):
        return torch.stack([one_hot(parse_caption(t)) for t in texts])

    def encode_image(self, images):
        return torch.stack([one_hot(a) for a in predicted_attributes(images)])


def test_rprec_is_near_one_for_the_prompts_own_images_and_low_for_shuffled_ones():
    from ganfuse.metrics.t2i import shapes_prompt_sets

    sets = shapes_prompt_sets(num=64, seed=1)
    by_prompt = {p: img for s in sets.values() for p, img in zip(s.prompts, s.real_images, strict=True)}

    def own(prompts, seed):
        return torch.stack([by_prompt[p] for p in prompts]).float() / 127.5 - 1

    def shuffled(prompts, seed):
        return own(prompts, seed).roll(1, 0)

    good = evaluate_t2i(own, num=64, seed=1, rprec_model=AttributeEmbedder())
    bad = evaluate_t2i(shuffled, num=64, seed=1, rprec_model=AttributeEmbedder())
    for name in ("seen", "heldout"):
        assert good[name]["rprec"] >= 0.9, good
        assert bad[name]["rprec"] <= 0.2, bad
        assert good[name]["all"] >= 0.9


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.zeroshot import train_zeroshot

    root = tmp_path_factory.mktemp("evaluate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", 96)
        args = ["train", "shapes-t2i", "--out", str(root / "t2i"), "--steps", "4", "--no-progress"]
        for item in TINY_T2I:
            args += ["--set", item]
        assert main(args) == 0
    train_zeroshot(make_config("zeroshot", None, TINY_FUSE), root / "zs", progress=False)
    return root / "t2i", root / "zs"


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    from ganfuse.multimodal.captioning import train_captioner
    from ganfuse.multimodal.config import make_config

    out = tmp_path_factory.mktemp("caption") / "run"
    train_captioner(make_config("caption", None, TINY_FUSE), out, progress=False)
    return out


def test_caption_cycle_check_scores_both_prompt_sets(runs, caption_run, capsys):
    capsys.readouterr()
    assert main(["caption", str(caption_run), "--cycle", str(runs[0]), "--num", "12", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_per_set"] == 12 and set(result["sets"]) == {"seen", "heldout"}
    for row in result["sets"].values():
        assert 0 <= row["exact_match"] <= min(row["color_accuracy"], row["shape_accuracy"]) <= 1
        assert set(row) >= {"exact_match", "parse_rate", "color_accuracy", "shape_accuracy"}
    assert main(["caption", str(caption_run), "--cycle", str(runs[0]), "--num", "8"]) == 0
    assert "heldout" in capsys.readouterr().out


def test_caption_cycle_argument_errors(runs, caption_run, tmp_path, capsys):
    png = tmp_path / "x.png"
    assert main(["caption", str(caption_run), "--cycle", str(runs[0]), "--image", str(png)]) == 2
    assert main(["caption", str(caption_run)]) == 2
    assert main(["caption", str(caption_run), "--cycle", str(runs[1])]) == 2  # a zero-shot run
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("ganfuse: error:") for e in errors)


def test_evaluate_cli_reports_attributes_and_rprec_per_set(runs, capsys):
    t2i, zs = runs
    capsys.readouterr()
    assert main(["evaluate", str(t2i), "--metrics", "attr,rprec", "--rprec-model", str(zs),
                 "--num", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_per_set"] == 20 and result["step"] == 4
    for name in ("seen", "heldout"):
        row = result["sets"][name]
        assert 0 <= row["rprec"] <= 1 and 0 <= row["all"] <= row["color"] <= 1 and row["fd"] > 0
    assert main(["evaluate", str(t2i), "--num", "20"]) == 0
    table = capsys.readouterr().out
    assert "heldout" in table and "rprec" not in table  # attr only without --rprec-model


@pytest.mark.parametrize("argv,message", [
    (["--metrics", "rprec"], "--rprec-model"),
    (["--metrics", "fid"], "text-to-image run"),
])
def test_evaluate_cli_t2i_errors_name_the_problem(runs, argv, message, capsys):
    assert main(["evaluate", str(runs[0]), "--num", "8", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_t2i_metrics_on_a_gan_source_are_refused(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--ref", "digits", "--metrics", "rprec"]) == 2
    assert "score text-to-image runs" in capsys.readouterr().err


def test_bench_train_runs_the_text_to_image_trainer():
    from ganfuse.bench import bench_train

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", 96)
        result = bench_train("shapes-t2i", 0.0, [*TINY_T2I, "train.batch_size=4"], warmup_steps=1)
    assert result["objective"] == "TextToImageObjective" and result["batch_size"] == 4
    assert result["steps"] >= 3
    assert result["img_per_s"] == pytest.approx(4 / (result["step_ms_median"] / 1000), rel=0.01, abs=0.06)  # img_per_s is rounded to 0.1


def test_from_latents_matches_sample_and_feeds_the_report(runs, tmp_path):
    from ganfuse.run import load_run
    from tests.report.test_report import non_trivial, parse

    run = load_run(runs[0])
    prompt = "a large red circle in the center"
    z = torch.randn(1, run.z_dim, generator=torch.Generator().manual_seed(4))
    assert torch.equal(run.from_latents(z, [prompt]), run.sample(1, seed=4, prompts=[prompt]))
    out = tmp_path / "report.html"
    assert main(["report", str(runs[0]), "--out", str(out)]) == 0
    report = parse(out)
    assert len(report.images["interpolation"]) == 1 and non_trivial(report.images["interpolation"][0])
    assert "prompt" in report.text["interpolation"] and "one row per prompt" in report.text["grid"]
