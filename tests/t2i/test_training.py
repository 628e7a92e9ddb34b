"""Training, checkpoints, ``load_run``/``generate`` and the ``ganfuse generate`` command, on tiny
networks and a 96-image ``shapes`` training split."""

from __future__ import annotations

import hashlib
import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from ganfuse.cli import main
from ganfuse.config import load_config
from ganfuse.data import shapes
from ganfuse.errors import UserError
from ganfuse.generate import generate
from ganfuse.run import TextToImageRun, load_run
from ganfuse.text.prompts import PromptEncoder, PromptError
from ganfuse.train.loop import Trainer
from ganfuse.train.objectives import Batch, TextToImageObjective

TINY_T2I = ["model.z_dim=8", "model.g_width=16", "model.d_width=8", "text.cond_dim=16",
            "train.batch_size=8", "train.log_every=2", "train.sample_every=4", "train.checkpoint_every=4",
            "train.r1_every=2", "train.ema_decay=0.9", "train.precision=fp32"]
PROMPT = "a large red circle in the center"


@pytest.fixture(autouse=True)
def small_train_split(monkeypatch):
    monkeypatch.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", 96)


class FakeSentenceEncoder:
    """Stands in for MiniLM: a deterministic 12-d embedding per text, counting what it encodes."""

    dim = 12

    def __init__(self):
        self.encoded: list[str] = []

    def encode_cached(self, texts):
        self.encoded += list(texts)
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        return SimpleNamespace(pooled=torch.stack(rows))


@pytest.fixture
def fake_minilm(monkeypatch, tmp_path_factory):
    # its 12-d embeddings go to a cache of their own, never to the session's "minilm" entries
    monkeypatch.setenv("GANFUSE_CACHE", str(tmp_path_factory.mktemp("fake-minilm-cache")))
    encoder = FakeSentenceEncoder()
    monkeypatch.setattr(PromptEncoder, "sentence_encoder", property(lambda self: encoder))
    return encoder


def train_cli(out, *extra: str, steps: int = 4) -> None:
    args = ["train", "shapes-t2i", "--out", str(out), "--steps", str(steps), "--no-progress"]
    for item in TINY_T2I + list(extra):
        args += ["--set", item]
    assert main(args) == 0


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", 96)
        run = tmp_path_factory.mktemp("t2i") / "run"
        train_cli(run, "text.encoder=small", "text.contrastive_weight=0.5", "text.magp_weight=2.0")
    return run


def test_tiny_run_writes_checkpoint_grid_and_statistics(small_run):
    assert sorted(p.name for p in (small_run / "checkpoints").glob("step_*")) == ["step_00000004"]
    assert (small_run / "samples" / "step_00000004.png").is_file()
    records = [json.loads(line) for line in (small_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for key in ("acc_mismatch", "d_mismatch", "magp", "con_d", "con_g"):
        assert key in records[-1], key
    config = load_config(str(small_run / "config.yaml"))
    assert "circle" in config.text.vocab and "triangle" in config.text.vocab


def test_generate_is_deterministic_for_a_seed(small_run):
    run = load_run(small_run)
    assert isinstance(run, TextToImageRun)
    prompts = [PROMPT, "a tiny blue disk, top left"]
    a = generate(run, prompts, n=3, seed=5)
    assert a.shape == (6, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, generate(run, prompts, n=3, seed=5))
    # batch size changes only float rounding (convolution algorithms), not the images
    assert (a - generate(run, prompts, n=3, seed=5, batch_size=2)).abs().max() < 1e-5
    assert (a - generate(run, prompts, n=3, seed=6)).abs().max() > 1e-3
    # a prompt's images do not depend on the prompts after it; Run.sample is the same call
    assert (a[:3] - run.sample(3, seed=5, prompts=[PROMPT])).abs().max() < 1e-5


def test_bad_prompts_give_clear_errors_or_warnings(small_run):
    run = load_run(small_run)
    with pytest.raises(PromptError, match="empty"):
        generate(run, [""], n=1)
    with pytest.raises(UserError, match="needs prompts"):
        run.sample(2)
    with pytest.raises(UserError, match="prompts, not a class"):
        run.sample(2, class_label=1, prompts=[PROMPT])
    with pytest.warns(UserWarning, match="truncated"):
        long = generate(run, ["a large red circle " * 200], n=1)
    with pytest.warns(UserWarning, match="no word"):
        other = generate(run, ["大きな赤い円", "🙂"], n=1)
    assert long.isfinite().all() and other.isfinite().all() and other.shape == (2, 3, 32, 32)


def test_generate_cli_writes_n_files_per_prompt(small_run, tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", str(small_run), "--prompt", PROMPT, "--num", "5", "--out", str(out),
                 "--seed", "1", "--grid", str(tmp_path / "grid.png")]) == 0
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == [f"{i:05d}.png" for i in range(5)]
    assert Image.open(out / files[0]).size == (32, 32)
    index = [json.loads(line) for line in (out / "prompts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in index] == [PROMPT] * 5
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("# shapes\na small green square in the top left\n\nun cercle rouge\n", encoding="utf-8")
    out2 = tmp_path / "gen2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["generate", str(small_run), "--prompts-file", str(prompts_file), "--num", "2",
                     "--out", str(out2)]) == 0
    assert len(list(out2.glob("*.png"))) == 4


def test_generate_cli_errors_exit_2(small_run, tmp_path, capsys):
    assert main(["generate", str(small_run), "--prompt", "  ", "--num", "2", "--out", str(tmp_path / "x")]) == 2
    assert "empty" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00red")
    assert main(["generate", str(small_run), "--prompts-file", str(bad), "--num", "1", "--out", str(tmp_path / "y")]) == 2
    assert "UTF-8" in capsys.readouterr().err
    assert main(["sample", str(small_run), "--num", "2", "--out", str(tmp_path / "z")]) == 2
    assert "ganfuse generate" in capsys.readouterr().err


def test_held_out_pairs_never_reach_training_batches(tmp_path, fake_minilm):
    held = ["red circle", "blue triangle"]
    config = load_config("shapes-t2i", TINY_T2I + [f"data.holdout={held}"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    objective = trainer.objective
    assert isinstance(objective, TextToImageObjective)
    attributes = shapes.ShapesDataset("train", holdout=(("red", "circle"), ("blue", "triangle"))).attributes
    assert [shapes.parse_caption(c) for c in objective.captions] == attributes
    seen_rows, real_rows = [], []
    spy_real = objective.real_conditions

    def record(labels):
        real_rows.extend(labels.tolist())
        return spy_real(labels)

    objective.real_conditions = record
    for _ in range(30):
        seen_rows.append(objective.fake_conditions(8, None, 1, trainer.noise_gen))
        seen_rows.append(trainer._draw(keep_graph=False).fake_cond)
    pairs = {attributes[i].color_shape for i in real_rows}
    assert len(real_rows) == 30 * trainer.batch_size and not pairs & {("red", "circle"), ("blue", "triangle")}
    # fakes are conditioned on rows of the training captions' table only
    table = {tuple(row.tolist()) for row in objective.conditions}
    assert all(tuple(row.tolist()) in table for batch in seen_rows for row in batch)


def test_embedding_run_encodes_captions_once_and_samples_through_load_run(tmp_path, fake_minilm):
    run_dir = tmp_path / "run"
    train_cli(run_dir, steps=2)
    encoded = len(fake_minilm.encoded)
    assert encoded >= 96  # every distinct training caption once, plus the grid prompts
    train_cli(tmp_path / "again", steps=2)  # the caption embeddings now come from the disk cache
    assert len(fake_minilm.encoded) == encoded
    config = load_config(str(run_dir / "config.yaml"))
    assert config.text.embed_dim == FakeSentenceEncoder.dim
    run = load_run(run_dir)
    images = run.sample(2, seed=0, prompts=[PROMPT, PROMPT])
    assert images.shape == (4, 3, 32, 32)
    assert not torch.equal(images[:2], images[2:])  # a repeated prompt draws new latents


def test_t2i_evaluation_reports_seen_and_held_out_attributes(small_run):
    from ganfuse.metrics.t2i import evaluate_t2i_run, format_t2i

    result = evaluate_t2i_run(load_run(small_run), num=16, seed=0)
    assert set(result) == {"seen", "heldout"}
    for row in result.values():
        assert set(row) == {"color", "shape", "size", "position", "all", "fd"}
        assert all(0 <= row[k] <= 1 for k in ("color", "shape", "size", "position", "all"))
        assert row["fd"] > 0  # an untrained generator is far from the real images
    assert "heldout" in format_t2i(result)


def test_real_images_of_the_prompts_score_perfectly():
    from ganfuse.metrics.t2i import score_images, shapes_prompt_sets

    sets = shapes_prompt_sets(num=64, seed=3)
    assert not {a.color_shape for a in sets["seen"].attributes} & set(shapes.DEFAULT_HOLDOUT)
    assert {a.color_shape for a in sets["heldout"].attributes} <= set(shapes.DEFAULT_HOLDOUT)
    for prompt_set in sets.values():
        row = score_images(prompt_set.real_images, prompt_set)
        assert row["all"] >= 0.95 and abs(row["fd"]) < 1e-6
        shuffled = score_images(prompt_set.real_images.roll(1, 0), prompt_set)
        assert shuffled["all"] < 0.3  # images of other prompts do not pass


def test_pixel_term_is_the_l1_to_the_paired_real_image(tmp_path, fake_minilm):
    config = load_config("shapes-t2i", TINY_T2I + ["text.pixel_weight=2.0", "text.feature_matching_weight=0",
                                                   "text.contrastive_weight=0"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    real, cond, _ = trainer._next_batch()  # images, their captions' conditions, dataset indices
    d_state = {k: v.clone() for k, v in trainer.D.state_dict().items()}  # spectral-norm vectors too
    fake = (real + 0.5).requires_grad_()
    trainer.stats.flush()
    trainer.aug_gen.manual_seed(0)  # the same augmentation draws for both calls
    trainer.objective.loss("Gmain", Batch(real, cond, fake, cond), trainer.nets).backward()
    assert trainer.stats.flush()["pixel"] == pytest.approx(0.5, rel=1e-5)
    # the term's gradient points from the fake to its paired real image, scaled by the weight
    adversarial = (real + 0.5).requires_grad_()
    trainer.config.text.pixel_weight = 0.0  # the adversarial term alone
    trainer.D.load_state_dict(d_state)  # D is the same function in both calls
    trainer.aug_gen.manual_seed(0)
    trainer.objective.loss("Gmain", Batch(real, cond, adversarial, cond), trainer.nets).backward()
    assert "pixel" not in trainer.stats.flush()
    difference = fake.grad - adversarial.grad
    assert torch.allclose(difference, torch.full_like(difference, 2.0 / real.numel()), rtol=1e-3, atol=1e-7)
