"""``world=folder`` (the user's own image-caption pairs) and ``world=emoji`` in the multimodal
tasks: splits, zero-shot retrieval, captioning, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfuse.cli import main
from ganfuse.errors import ConfigError
from ganfuse.multimodal.config import make_config
from ganfuse.multimodal.folder_world import (
    PairsData,
    evaluate_pairs,
    is_heldout_file,
    pairs_split,
    read_folder_pairs,
    relevance,
    retrieval_recall,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}
SHAPES = ("square", "disc")
UNSEEN_WORD = "zebra"  # only in held-out captions
# Small and fast: a few seconds of training per run on one thread.
TINY = [
    "image_widths=[8,16]", "image_dim=32", "embed_dim=32", "text_embed_dim=16",
    "text_hidden_dim=16", "text_dim=32", "decoder_hidden=32", "decoder_embed=16",
    "batch_size=16", "warmup_steps=2", "threads=1", "precision=fp32", "log_every=5",
    "holdout_fraction=0.2",
]  # fmt: skip


def _draw(colour: tuple[int, int, int], shape: str, offset: int) -> np.ndarray:
    image = np.full((32, 32, 3), 255, dtype=np.uint8)
    lo, hi = 6 + offset, 22 + offset
    if shape == "square":
        image[lo:hi, lo:hi] = colour
    else:
        yy, xx = np.mgrid[:32, :32]
        centre = (lo + hi) / 2
        image[(yy - centre) ** 2 + (xx - centre) ** 2 <= 64] = colour
    return image


def make_pairs_folder(root: Path, per_kind: int = 8) -> Path:
    """``per_kind`` images of each of 6 colour-shape kinds, metadata.jsonl with one caption each
    (two for every third image), a row naming a missing file and a row that is not UTF-8."""
    root.mkdir(parents=True, exist_ok=True)
    lines: list[bytes] = []
    n = 0
    for name, colour in COLOURS.items():
        for shape in SHAPES:
            for k in range(per_kind):
                file = f"img_{n:03d}.png"
                Image.fromarray(_draw(colour, shape, k % 4)).save(root / file)
                extra = f" {UNSEEN_WORD}" if is_heldout_file(file, 0.2) else ""
                captions = [f"a {name} {shape}{extra}"]
                if n % 3 == 0:
                    captions.append(f"one {name} {shape} on white{extra}")
                for text in captions:
                    row = {"file_name": file, "text": text, "label": name}
                    lines.append(json.dumps(row).encode())
                n += 1
    lines.append(json.dumps({"file_name": "gone.png", "text": "a lost picture"}).encode())
    lines.append(b'{"file_name": "img_000.png", "text": "bad \xff\xfe bytes"}')
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory) -> Path:
    return make_pairs_folder(tmp_path_factory.mktemp("pairs") / "mine")


pytestmark = pytest.mark.filterwarnings("ignore:captioned folder:UserWarning")


def folder_config(task: str, folder: Path, *extra: str):
    return make_config(task, None, [*TINY, "world=folder", f"data={folder}", *extra])


def test_the_folder_split_is_deterministic_and_keeps_each_image_on_one_side(pairs_folder):
    config = folder_config("zeroshot", pairs_folder)
    read_folder_pairs.cache_clear()
    # 48 images; the missing file and the bad-UTF-8 row are skipped, said in one warning
    with pytest.warns(UserWarning, match=r"48 images .*bad utf-8: 1, missing file: 1"):
        train = pairs_split(config, "train")
    heldout = pairs_split(config, "heldout")
    assert len(train) + len(heldout) == 48
    assert set(train.names).isdisjoint(heldout.names)
    assert len(set(train.names)) == len(train.names)  # one row per image, all its captions
    assert [len(c) for c in train.captions].count(2) + [len(c) for c in heldout.captions].count(
        2
    ) == 16
    # the split is a function of each file name alone
    assert heldout.names == sorted(f"img_{i:03d}.png" for i in range(48)
                                   if is_heldout_file(f"img_{i:03d}.png", 0.2))  # fmt: skip
    assert 4 <= len(heldout) <= 16
    assert all(UNSEEN_WORD in t for texts in heldout.captions for t in texts)
    assert not any(UNSEEN_WORD in t for texts in train.captions for t in texts)
    # "test" is the held-out split; labels come from the label column
    assert pairs_split(config, "test").names == heldout.names
    assert train.class_names == ["blue", "green", "red"]
    assert is_heldout_file("img_007.png", 0.2) == is_heldout_file("img_007.png", 0.2)
    assert sum(is_heldout_file(f"x{i}.jpg", 0.1) for i in range(2000)) in range(160, 241)


def test_recall_counts_identical_captions_of_other_images_as_right():
    data = PairsData(
        torch.zeros(3, 3, 4, 4, dtype=torch.uint8),
        [["a cat"], ["a cat", "a grey cat"], ["a dog"]],
        ["0", "1", "2"],
        torch.full((3,), -1),
        [],
    )
    texts, owners = data.flat_captions()
    right = relevance(data, texts, owners)
    assert right.tolist() == [
        [True, True, False, False],
        [True, True, True, False],
        [False, False, False, True],
    ]
    # images 0 and 2 rank a wrong caption first and a right one second
    similarity = torch.tensor([[0.5, 0.1, 0.9, 0.0], [0.0, 1.0, 0.0, 0.0], [0.9, 0.0, 0.0, 0.1]])
    recall = retrieval_recall(similarity, right, ks=(1, 2))
    assert recall == {1: pytest.approx(1 / 3), 2: 1.0}
    # perfect embeddings: every caption finds a right image first
    metrics = evaluate_pairs(
        lambda x: torch.eye(3),
        lambda t: torch.eye(3)[[{"a cat": 0, "a grey cat": 1, "a dog": 2}[s] for s in t]],
        data,
        "x",
    )
    assert metrics["x_t2i_r1"] == 1.0 and metrics["x_i2t_r1"] == 1.0
    assert metrics["x_captions"] == 4.0
    assert metrics["x_t2i_chance_r1"] == pytest.approx((2 + 2 + 1 + 1) / 4 / 3)


def test_zeroshot_on_the_folder_lowers_the_loss_and_retrieves_above_chance(
    pairs_folder, tmp_path
):
    from ganfuse.multimodal.zeroshot import train_zeroshot

    config = folder_config("zeroshot", pairs_folder, "steps=60", "lr=3e-3")
    out = tmp_path / "zs"
    result = train_zeroshot(config, out, progress=False)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0]
    metrics = result.metrics
    chance = metrics["train_t2i_chance_r1"]
    assert chance == pytest.approx(1 / 6, abs=0.05)
    assert metrics["train_t2i_r1"] > chance + 0.3
    assert metrics["train_i2t_r1"] > chance + 0.3
    assert {"heldout_t2i_r5", "heldout_i2t_r10", "modality_probe_accuracy"} <= set(metrics)
    # the small encoder's words are the training captions'; held-out words are unknown
    words = result.model.text_encoder.tokenizer.words()
    assert "red" in words and "disc" in words and UNSEEN_WORD not in words

    # evaluate reproduces the numbers; predict gives a similarity and no shapes class
    from ganfuse.multimodal.evaluate import evaluate_run
    from ganfuse.multimodal.predict import predict

    again = evaluate_run(out)
    assert again["heldout_t2i_r1"] == pytest.approx(metrics["heldout_t2i_r1"])
    assert again["train_i2t_r5"] == pytest.approx(metrics["train_i2t_r5"])
    answer = predict(out, pairs_folder / "img_000.png", "a red square")
    assert set(answer) == {"kind", "similarity", "lines"}
    red = predict(out, pairs_folder / "img_000.png", "a red square")["similarity"]
    blue = predict(out, pairs_folder / "img_000.png", "a blue disc")["similarity"]
    assert red > blue


def test_emoji_world_holds_out_the_datasets_heldout_emoji():
    from ganfuse.data.emoji import heldout_names, load_records

    config = make_config("zeroshot", None, ["world=emoji", "text_encoder=minilm"])
    train, heldout = pairs_split(config, "train"), pairs_split(config, "heldout")
    assert len(heldout) == 357 and len(train) + len(heldout) == len(load_records())
    assert heldout.names == heldout_names()
    assert set(train.names).isdisjoint(heldout.names)
    assert all(len(c) == 1 and c[0] for c in heldout.captions)
    assert train.images.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("task", ["vqa", "multitask", "scenes-vqa"])
def test_other_tasks_on_the_folder_world_are_refused_in_one_line(pairs_folder, task):
    with pytest.raises(ConfigError) as info:
        make_config(task, None, ["world=folder", f"data={pairs_folder}"])
    message = str(info.value)
    assert "\n" not in message and "zeroshot or caption" in message and "world=folder" in message


def test_folder_options_are_checked(pairs_folder):
    with pytest.raises(ConfigError, match="data"):
        make_config("zeroshot", None, ["world=folder"])
    with pytest.raises(ConfigError, match="data"):
        make_config("zeroshot", None, [f"data={pairs_folder}"])
    with pytest.raises(ConfigError, match="holdout_fraction"):
        folder_config("zeroshot", pairs_folder, "holdout_fraction=1")
    with pytest.raises(ConfigError, match="paired_fraction"):
        folder_config("zeroshot", pairs_folder, "paired_fraction=0.5")
    with pytest.raises(ConfigError, match="background"):
        folder_config("caption", pairs_folder, "background=nocolour")
    config = make_config("zeroshot", None, ["world=folder", "data=relative/dir"])
    assert Path(config.data_path).is_absolute()


def test_captioning_on_the_folder_uses_training_words_and_writes_examples(pairs_folder, tmp_path):
    from ganfuse.multimodal.captioning import train_captioner
    from ganfuse.multimodal.evaluate import evaluate_run

    config = folder_config("caption", pairs_folder, "steps=40", "lr=5e-3")
    out = tmp_path / "cap"
    result = train_captioner(config, out, progress=False)
    tokens = result.model.vocab.tokens
    assert " red" in tokens and " disc" in tokens
    assert not any(UNSEEN_WORD in t for t in tokens)
    metrics = result.metrics
    assert {"train_bleu", "train_exact_match", "heldout_bleu", "heldout_distinct"} <= set(metrics)
    assert 0.0 <= metrics["heldout_exact_match"] <= 1.0
    examples = [json.loads(x) for x in (out / "caption_examples" / "examples.jsonl").open()]
    heldout = pairs_split(config, "heldout")
    assert [e["name"] for e in examples] == heldout.names[:8]
    assert all((out / "caption_examples" / e["file"]).is_file() for e in examples)
    assert evaluate_run(out)["train_bleu"] == pytest.approx(metrics["train_bleu"])


def test_the_command_line_trains_and_scores_a_folder_run(pairs_folder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fuse", "train", "--task", "zeroshot", "--out", str(out), "--quiet",
            "--set", "world=folder", "--set", f"data={pairs_folder}", "--set", "steps=4"]
    assert main(argv + [f"--set={item}" for item in TINY]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "heldout_t2i_r1" in printed
    assert main(["fuse", "evaluate", str(out), "--json"]) == 0
    assert "train_i2t_r1" in json.loads(capsys.readouterr().out)
    assert main(["fuse", "evaluate", str(out), "--split", "heldout"]) == 2
    assert "fusion runs only" in capsys.readouterr().err
    bad = ["fuse", "train", "--task", "vqa", "--out", str(tmp_path / "v"),
           "--set", "world=folder", "--set", f"data={pairs_folder}"]  # fmt: skip
    assert main(bad) == 2
    assert "zeroshot or caption" in capsys.readouterr().err
