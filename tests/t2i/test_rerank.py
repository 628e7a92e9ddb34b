"""Reranking a text-to-image run's candidates (``ganfuse.generate.RerankedRun``, ``--rerank``):
each image is the candidate the scorer prefers among its own, the texts reach the scorer with
their images, one candidate changes nothing, and bad requests are refused before any work."""

from __future__ import annotations

import json

import pytest
import torch

from ganfuse.cli import main
from ganfuse.errors import ConfigError, UserError
from ganfuse.generate import RerankedRun, generate
from ganfuse.inputs import MAX_IMAGES
from tests.test_export import t2i_run

PROMPTS = ["a red circle", "a blue square"]


class Brightness:
    """Scores the first prompt's images by brightness and the second's by darkness; records every
    (text, image mean) pair it is given."""

    def __init__(self):
        self.seen: list[tuple[str, float]] = []

    def __call__(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        means = images.mean((1, 2, 3))
        self.seen += [(t, float(m)) for t, m in zip(texts, means, strict=True)]
        sign = torch.tensor([1.0 if t == PROMPTS[0] else -1.0 for t in texts])
        return sign * means


def test_each_image_is_the_candidate_the_scorer_prefers_among_its_own(tmp_path):
    run = t2i_run(tmp_path, tokens=True)
    scorer = Brightness()
    picked = RerankedRun(run, scorer, candidates=4).sample(3, seed=7, prompts=PROMPTS, batch_size=5)
    # the candidates as the run draws them, in the same batches of 4 (one group of candidates each)
    candidates = run.sample(12, seed=7, prompts=PROMPTS, batch_size=4).view(2, 3, 4, *picked.shape[1:])
    means = candidates.mean((3, 4, 5))  # (prompt, image, candidate)
    best = torch.stack([means[0].argmax(1), means[1].argmin(1)])  # brightest for the first prompt, darkest after
    expected = candidates[torch.arange(2)[:, None], torch.arange(3)[None], best].flatten(0, 1)
    torch.testing.assert_close(picked, expected, rtol=0, atol=0)
    assert best.unique().numel() > 1  # the choice is not always the same candidate
    # every candidate reached the scorer once, with its own prompt
    assert [t for t, _ in scorer.seen] == [p for p in PROMPTS for _ in range(12)]
    torch.testing.assert_close(torch.tensor([m for _, m in scorer.seen]), means.flatten())
    # batches hold whole groups of candidates: the batch size changes neither the choice nor the
    # images (beyond the float rounding of another batch size)
    again = RerankedRun(run, Brightness(), candidates=4).sample(3, seed=7, prompts=PROMPTS)
    torch.testing.assert_close(again, picked, rtol=0, atol=1e-6)


def test_one_candidate_is_the_run_itself_and_generate_accepts_a_reranked_run(tmp_path):
    run = t2i_run(tmp_path, tokens=True)
    one = RerankedRun(run, Brightness(), candidates=1)
    torch.testing.assert_close(generate(one, PROMPTS, n=3, seed=2), run.sample(3, seed=2, prompts=PROMPTS),
                               rtol=0, atol=0)
    assert one.step == run.step and one.config is run.config  # the rest is the run's


def test_bad_reranking_requests_are_refused(tmp_path):
    run = t2i_run(tmp_path, tokens=True)
    with pytest.raises(UserError, match="candidates"):
        RerankedRun(run, Brightness(), candidates=0)
    with pytest.raises(UserError, match=f"at most {MAX_IMAGES}"):
        RerankedRun(run, Brightness(), candidates=64).sample(MAX_IMAGES // 64, prompts=PROMPTS)

    class OtherWorld(Brightness):
        def check_world(self, data_name: str) -> None:
            raise ConfigError(f"trained on 'scenes', the generator on {data_name!r}")

    with pytest.raises(ConfigError, match="'shapes'"):
        RerankedRun(run, OtherWorld(), candidates=2)


def test_candidates_without_a_judge_and_rerank_outside_text_to_image_are_clear_errors(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--prompt", "a red circle", "--num", "1", "--out",
                 str(tmp_path / "out"), "--candidates", "4"]) != 0
    assert "--candidates needs --rerank" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--ref", "digits", "--rerank", str(tmp_path)]) != 0
    assert "text-to-image" in capsys.readouterr().err


def test_generate_and_evaluate_rerank_from_the_command_line(tmp_path, capsys, monkeypatch):
    """A tiny shapes-t2i run reranked by a tiny shapes zeroshot run: ``generate`` writes the best
    of its candidates and records the judge; ``evaluate`` scores the reranked images."""
    from ganfuse.data import shapes
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.scoring import load_scorer
    from ganfuse.multimodal.zeroshot import train_zeroshot
    from ganfuse.run import load_run
    from tests.multimodal.conftest import TINY
    from tests.t2i.test_training import train_cli

    monkeypatch.setitem(shapes.DEFAULT_SPLIT_SIZES, "train", 96)
    gan, judge = tmp_path / "gan", tmp_path / "judge"
    train_cli(gan, "text.encoder=small", steps=2)
    train_zeroshot(make_config("zeroshot", None, TINY), judge, progress=False)
    prompt = "a large red circle in the center"
    assert main(["generate", str(gan), "--prompt", prompt, "--num", "2", "--out", str(tmp_path / "out"),
                 "--rerank", str(judge), "--candidates", "3", "--seed", "4"]) == 0
    assert "best of 3" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "out" / "prompts.jsonl").read_text().splitlines()]
    assert [(r["candidates"], r["rerank"]) for r in records] == [(3, str(judge))] * 2
    expected = RerankedRun(load_run(gan), load_scorer(judge), 3).sample(2, seed=4, prompts=[prompt])
    from PIL import Image

    written = torch.tensor(list(Image.open(tmp_path / "out" / records[1]["file"]).getdata()), dtype=torch.float32)
    reference = ((expected[1].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).reshape(-1, 3)
    assert (written - reference).abs().max() <= 1.0  # the PNG holds the reranked image (rounded)
    assert main(["evaluate", str(gan), "--num", "4", "--metrics", "attr", "--rerank", str(judge),
                 "--candidates", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["candidates"] == 2 and result["rerank"] == str(judge) and "sets" in result
