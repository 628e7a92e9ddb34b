"""The evaluation pipeline and ``ganfuse evaluate``: folders with unreadable files, runs, the
reference cache, the in-training Frechet distance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import ganfuse.metrics.evaluate as pipeline
from ganfuse.cli import main
from ganfuse.errors import ConfigError, DataError, OfflineError
from ganfuse.metrics import (
    fid_from_features,
    frechet_distance_of_generator,
    get_extractor,
    reference,
    to_uint8,
)
from ganfuse.metrics.digits import digits_inputs


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return digits_inputs()[0]  # (1797, 1, 32, 32) in [-1, 1]


def write_pngs(folder, images_uint8: torch.Tensor) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images_uint8):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")


@pytest.fixture
def folder_with_corrupt_image(tmp_path, digits):
    folder = tmp_path / "samples"
    write_pngs(folder, to_uint8(digits[1000:1060]))
    (folder / "0030_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_folder_with_a_corrupt_image_is_scored_and_the_file_reported(
    folder_with_corrupt_image, digits, capsys
):
    code = main(
        [
            "evaluate",
            str(folder_with_corrupt_image),
            "--ref",
            "digits",
            "--metrics",
            "fid,is",
            "--num",
            "300",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n_fake"], result["n_real"], result["skipped_fake"]) == (60, 300, 1)
    assert "0030_broken.png" in result["skipped_files"][0]
    assert (result["extractor"], result["resize"], result["feature_dim"]) == (
        "digits",
        "bilinear-antialias",
        64,
    )
    # The number is the Frechet distance of exactly those features: the 60 good images vs the first 300 digits.
    net = get_extractor("digits")
    expected = fid_from_features(
        net.features(to_uint8(digits[:300])), net.features(to_uint8(digits[1000:1060]))
    )
    assert result["metrics"]["fid"] == pytest.approx(expected, rel=1e-9)
    assert 5.0 < result["metrics"]["is"] <= 10.0  # ten recognisable classes

    assert (
        main(
            [
                "evaluate",
                str(folder_with_corrupt_image),
                "--ref",
                "digits",
                "--metrics",
                "fid",
                "--num",
                "300",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "skipped 1 unreadable image(s) in the source" in table and "0030_broken.png" in table
    assert "n_fake 60, n_real 300" in table and "resize bilinear-antialias" in table


def test_all_metrics_separate_real_from_noise(tmp_path, digits):
    real_folder, noise_folder = tmp_path / "real", tmp_path / "noise"
    write_pngs(real_folder, to_uint8(digits[1200:1400]))
    noise = torch.randint(
        0, 256, (200, 1, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    write_pngs(noise_folder, noise)
    good = pipeline.evaluate_source(str(real_folder), "digits", num=400).metrics
    bad = pipeline.evaluate_source(str(noise_folder), "digits", num=400).metrics
    assert set(good) == {
        "fid",
        "kid",
        "kid_std",
        "is",
        "is_std",
        "precision",
        "recall",
        "density",
        "coverage",
    }
    assert bad["fid"] > 10 * good["fid"]
    assert bad["kid"] > 10 * abs(good["kid"])
    assert good["is"] > 2 * bad["is"]
    assert good["precision"] > 0.6 > 0.1 > bad["precision"]
    assert good["coverage"] > 0.4 > 0.1 > bad["coverage"]


def test_reference_features_are_cached_on_disk(isolated_cache, digits, monkeypatch):
    net = get_extractor("digits")
    first = reference.reference_features("digits", net, 250, batch_size=100)
    files = list((isolated_cache / "reference").glob("*.safetensors"))
    assert [f.name for f in files] == [
        f"digits__digits__bilinear-antialias__{net.fingerprint}__n250.safetensors"
    ]
    monkeypatch.setattr(reference, "_MEMORY", {})

    def no_extraction(*args, **kwargs):
        raise AssertionError("the cached features should have been used")

    monkeypatch.setattr(reference, "extract_features", no_extraction)
    again = reference.reference_features("digits", net, 250, batch_size=100)
    assert torch.equal(again.features, first.features) and again.probs is first.probs is None
    assert (
        torch.equal(again.stats().cov, first.stats().cov)
        and again.stats().cov.dtype == torch.float64
    )
    # N is part of the key: another N is computed, not reused.
    with pytest.raises(AssertionError, match="cached"):
        reference.reference_features("digits", net, 200, batch_size=100)


def test_frechet_distance_of_generator_for_training(digits):
    cursor = {"at": 0}

    def real_sampler(batch: int) -> torch.Tensor:
        out = digits[cursor["at"] : cursor["at"] + batch]
        cursor["at"] += batch
        return out

    noise = torch.Generator().manual_seed(1)
    same = frechet_distance_of_generator(real_sampler, "digits", n=500, batch_size=128)
    assert cursor["at"] == 500  # n images drawn in batches
    assert same == pytest.approx(0.0, abs=1e-6)  # identical to the reference's first 500
    noisy = frechet_distance_of_generator(
        lambda b: torch.rand(b, 1, 32, 32, generator=noise) * 2 - 1, "digits", 500
    )
    assert noisy > 10.0


def test_a_loaded_run_is_sampled_in_memory_in_batches(tmp_path, digits):
    calls = []

    class StubRun:
        def sample_batches(self, n, batch_size, seed=0):
            calls.append((n, batch_size, seed))
            for start in range(0, n, batch_size):
                yield digits[start : min(start + batch_size, n)]

    StubRun.path = tmp_path / "run"
    result = pipeline.evaluate_source(
        StubRun(), "digits", metrics="fid", num=300, batch_size=64, seed=3
    )
    assert calls == [(300, 64, 3)]
    assert result.source == str(tmp_path / "run")
    assert (result.n_fake, result.n_real) == (300, 300)
    assert result.metrics["fid"] == pytest.approx(
        0.0, abs=1e-6
    )  # the stub returns the reference images


def test_default_extractor_and_user_errors(tmp_path, capsys):
    assert pipeline.choose_extractor("digits") == "digits"  # no Inception weights here
    with pytest.raises(OfflineError, match="--weights"):
        pipeline.choose_extractor(str(tmp_path))  # a folder reference has no extractor of its own
    with pytest.raises(ConfigError, match="fid,kid,is,pr,dc"):
        pipeline.parse_metrics("fid,lpips")
    with pytest.raises(ConfigError, match="inception extractor only"):
        pipeline.build_extractor("digits", resize="clean")
    assert main(["evaluate", str(tmp_path), "--ref", "digits", "--metrics", "fid,lpips"]) == 2
    assert main(["evaluate", str(tmp_path / "missing"), "--ref", "digits"]) == 2
    assert "source not found" in capsys.readouterr().err


def test_compute_metrics_on_plain_features():
    rng = np.random.default_rng(0)
    real = pipeline.ExtractedFeatures(torch.from_numpy(rng.normal(size=(80, 6))).float())
    fake = pipeline.ExtractedFeatures(torch.from_numpy(rng.normal(size=(70, 6)) + 0.2).float())
    values = pipeline.compute_metrics(real, fake, ["fid", "pr"])
    assert values["fid"] == pytest.approx(
        fid_from_features(real.features, fake.features), rel=1e-12
    )
    assert set(values) == {"fid", "precision", "recall"}
    with pytest.raises(ConfigError, match="probabilities"):
        pipeline.compute_metrics(real, fake, ["is"])


def test_shapes_is_a_reference_dataset_scored_in_its_own_features(tmp_path):
    from ganfuse.data.shapes import ShapesDataset

    real = ShapesDataset("test", num=150, seed=5).images  # unseen images of the same distribution
    folder = tmp_path / "shapes"
    folder.mkdir()
    for i, image in enumerate(real):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    noise = tmp_path / "noise"
    noise.mkdir()
    for i, image in enumerate(torch.randint(0, 256, (150, 32, 32, 3), dtype=torch.uint8)):
        Image.fromarray(image.numpy()).save(noise / f"{i:04d}.png")
    good = pipeline.evaluate_source(str(folder), "shapes", metrics="fid", num=1000)
    bad = pipeline.evaluate_source(str(noise), "shapes", metrics="fid", num=1000)
    assert good.extractor == "shapes" and good.n_real == 1000
    assert good.metrics["fid"] < 0.1 * bad.metrics["fid"]


def test_a_run_folder_must_be_loaded_by_the_caller(tmp_path):
    """Metrics see images only: a run folder given as a path names the call that loads it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("preset: digits\n")
    with pytest.raises(DataError, match=r"load_run\("):
        pipeline.evaluate_source(str(run_dir), "digits", extractor="digits", metrics="fid", num=10)
