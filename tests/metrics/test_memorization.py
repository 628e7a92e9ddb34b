"""The memorisation audit: nearest training images in an extractor's features, ratios against
real held-out images, near copies; and ``ganfuse evaluate RUN --metrics memorization``."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ganfuse.config import load_config
from ganfuse.data.digits import load_digits_tensors
from ganfuse.errors import DataError
from ganfuse.metrics.extractors import get_extractor
from ganfuse.metrics.memorization import (
    MEMORIZATION_FILE,
    MEMORIZATION_PICTURE,
    closest_pairs,
    image_features,
    memorization_audit,
    nearest_neighbours,
)
from ganfuse.models.build import build_gan
from ganfuse.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def digits_split():
    """Real digits features in four disjoint parts: 1000 training, 400 held-out, 397 fresh, and
    200 'overfit samples': 4 lightly noised copies (sigma 0.1 in [-1, 1]) of 50 training images."""
    images, _ = load_digits_tensors(32)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, held, fresh = images[perm[:1000]], images[perm[1000:1400]], images[perm[1400:]]
    copies = train[:50].repeat(4, 1, 1, 1)
    noise = 0.1 * torch.randn(copies.shape, generator=torch.Generator().manual_seed(1))
    overfit = (copies + noise).clamp(-1, 1)
    extractor = get_extractor("digits")
    feats = {
        name: image_features(x, extractor)
        for name, x in (("train", train), ("held", held), ("fresh", fresh), ("overfit", overfit))
    }
    return feats, train, overfit


def test_nearest_neighbours_match_brute_force_and_exclusion():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(7, 3, generator=gen), torch.randn(11, 3, generator=gen)
    d, i = nearest_neighbours(q, k, chunk=3)
    full = ((q[:, None, :].double() - k[None].double()) ** 2).sum(-1).sqrt()
    assert torch.equal(i, full.argmin(1))
    assert torch.allclose(d, full.min(1).values)
    # leave-one-out: a key is never its own neighbour
    d_self, i_self = nearest_neighbours(k, k, exclude=torch.arange(11))
    assert (i_self != torch.arange(11)).all() and (d_self > 0).all()


def test_the_audit_separates_copies_of_50_training_images_from_fresh_real_images(digits_split):
    feats, _, _ = digits_split
    copied = memorization_audit(feats["overfit"], feats["train"], feats["held"])
    normal = memorization_audit(feats["fresh"], feats["train"], feats["held"])
    assert copied.reference == normal.reference == "held-out"
    # copies: every sample closer than 95% of held-out reals, nearly all under a third of the
    # typical real distance; fresh reals: about the 5% the quantile lets through, no near copies
    assert copied.closer_share > 0.95 and copied.near_copy_share > 0.9
    assert copied.median_ratio < 0.3
    assert normal.closer_share < 0.12 and normal.near_copy_share < 0.02
    assert 0.8 < normal.median_ratio < 1.25
    # each copy's nearest training image is the one it was copied from
    assert torch.equal(copied.nearest, torch.arange(50).repeat(4))


def test_leave_one_out_reference_without_held_out_images(digits_split):
    feats, _, _ = digits_split
    copied = memorization_audit(feats["overfit"], feats["train"], None, max_reference=300)
    normal = memorization_audit(feats["fresh"], feats["train"], None, max_reference=300)
    assert copied.reference == "leave-one-out" and copied.n_reference == 300
    assert copied.near_copy_share > 0.9 and normal.near_copy_share < 0.02
    assert normal.closer_share < 0.15


def test_held_out_images_inside_the_training_set_are_refused(digits_split):
    feats, _, _ = digits_split
    with pytest.raises(DataError, match="median distance 0"):
        memorization_audit(feats["fresh"], feats["train"], feats["train"][:100])
    with pytest.raises(DataError, match="quantile"):
        memorization_audit(feats["fresh"], feats["train"], feats["held"], quantile=1.5)


def test_closest_pairs_put_each_sample_above_its_training_image(digits_split):
    feats, train, overfit = digits_split
    audit = memorization_audit(feats["overfit"], feats["train"], feats["held"], pairs=5)
    grid = closest_pairs(overfit, train, audit)
    assert grid.shape == (10, 1, 32, 32)
    ratios = [r for _, _, r in audit.pairs]
    assert ratios == sorted(ratios) and len(ratios) == 5
    for k, (s, t, _) in enumerate(audit.pairs):
        assert torch.equal(grid[k], overfit[s]) and torch.equal(grid[5 + k], train[t])
    assert json.loads(audit.to_json())["pairs"][0][:2] == list(audit.pairs[0][:2])


def _untrained_run_folder(folder):
    """A digits run folder as training leaves it (config.yaml and a checkpoint), at step 0."""
    config = load_config("digits", ["model.g_width=32", "model.d_width=8", "train.precision=fp32"])
    torch.manual_seed(0)
    g, _ = build_gan(config, 1, 0)
    meta = {"config": config.to_dict(), "channels": 1, "num_classes": 0, "class_names": []}
    save_checkpoint(folder, 0, {f"G.{k}": v for k, v in g.state_dict().items()}, {}, meta)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    return folder


def test_evaluate_memorization_writes_the_audit_into_the_run(tmp_path, capsys):
    from ganfuse.cli import main

    run = _untrained_run_folder(tmp_path / "run")
    assert main(["evaluate", str(run), "--metrics", "memorization", "--num", "64", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads((run / MEMORIZATION_FILE).read_text())
    assert printed == stored
    assert stored["n_samples"] == 64 and stored["n_train"] == 1797
    assert stored["reference"] == "leave-one-out" and stored["extractor"] == "digits"
    # an untrained generator draws noise: nothing near a training image
    assert stored["near_copy_share"] == 0.0 and stored["median_ratio"] > 1.0
    assert (run / MEMORIZATION_PICTURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the report shows it
    from ganfuse.report.build import memorization_part
    from ganfuse.run_folders import gan_run_info

    part = memorization_part([gan_run_info(run)])
    assert "Memorisation audit" in part and "data:image/png;base64," in part
    # mixing the audit with other metrics is refused in one line
    assert main(["evaluate", str(run), "--metrics", "memorization,fid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "on its own" in err
