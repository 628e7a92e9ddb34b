"""Extractors: the shipped digits classifier, and the Inception weights' checks and offline path."""

from __future__ import annotations

import hashlib

import pytest
import torch

from ganfuse.errors import CheckpointError, ConfigError, OfflineError
from ganfuse.metrics import get_extractor, inception_weights, to_uint8
from ganfuse.metrics.digits import HOLDOUT_FRACTION, digits_asset_path, digits_inputs, digits_split
from ganfuse.metrics.extractors import InceptionExtractor, extractor_names


@pytest.fixture(scope="module")
def digits_uint8() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = digits_inputs()
    return to_uint8(images), labels


def test_digits_classifier_is_accurate_on_held_out_real_digits(digits_uint8):
    images, labels = digits_uint8
    _, holdout = digits_split()
    assert len(holdout) == pytest.approx(HOLDOUT_FRACTION * len(labels), abs=10)
    extractor = get_extractor("digits")
    predicted = extractor.probs(images[holdout]).argmax(dim=1)
    accuracy = (predicted == labels[holdout]).double().mean().item()
    assert accuracy > 0.97
    assert (extractor.probs(images).argmax(dim=1) == labels).double().mean().item() > 0.98


def test_digits_extractor_interface(digits_uint8):
    images = digits_uint8[0][:10]
    extractor = get_extractor("digits")
    assert (extractor.name, extractor.input_size, extractor.feature_dim, extractor.num_classes) == (
        "digits",
        32,
        64,
        10,
    )
    feats, probs = extractor.features_and_probs(images)
    assert feats.shape == (10, 64) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, extractor.features(images))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(10))
    # Features are scaled to a mean square of about 1 (KID's kernel assumes order-1 features).
    assert 0.3 < extractor.features(digits_uint8[0][:500]).square().mean().item() < 3.0
    # RGB input with equal channels gives the grey result; a larger image is resized.
    torch.testing.assert_close(extractor.features(images.repeat(1, 3, 1, 1)), feats)
    assert extractor.features(images.repeat_interleave(2, -1).repeat_interleave(2, -2)).shape == (
        10,
        64,
    )
    assert len(extractor.fingerprint) == 12


def test_asset_is_small():
    assert digits_asset_path().stat().st_size < 1_000_000


def test_extractors_take_only_uint8():
    from ganfuse.metrics import MetricInputError

    with pytest.raises(MetricInputError, match="to_uint8"):
        get_extractor("digits").features(torch.zeros(2, 1, 32, 32))


def test_unknown_extractor_lists_the_known_ones():
    with pytest.raises(ConfigError, match="digits"):
        get_extractor("vgg")
    assert {"digits", "inception"} <= set(extractor_names())


def test_wrong_hash_weights_are_refused(tmp_path, monkeypatch):
    fake = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"not the inception weights")
    with pytest.raises(CheckpointError, match="SHA-256") as info:
        get_extractor("inception", weights=fake)
    assert inception_weights.INCEPTION_SHA256 in str(info.value)
    monkeypatch.setenv("GANFUSE_INCEPTION_WEIGHTS", str(fake))
    with pytest.raises(CheckpointError, match="refusing"):
        get_extractor("inception")
    # A wrong file in the cache is refused too, not loaded.
    monkeypatch.delenv("GANFUSE_INCEPTION_WEIGHTS")
    cached = inception_weights.cached_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"corrupt")
    with pytest.raises(CheckpointError):
        get_extractor("inception")


def test_missing_explicit_weights_file_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        get_extractor("inception", weights=tmp_path / "nowhere.pth")


def test_offline_without_weights_says_which_file_goes_where(isolated_cache, monkeypatch):
    # Port 9 on localhost refuses at once: the real download path fails as it does offline.
    monkeypatch.setattr(
        inception_weights, "INCEPTION_URLS", ("http://127.0.0.1:9/pt_inception.pth",)
    )
    monkeypatch.setattr(
        inception_weights.download_inception_weights,
        "__defaults__",
        (inception_weights.INCEPTION_URLS,),
    )
    with pytest.raises(OfflineError) as info:
        get_extractor("inception")
    message = str(info.value)
    expected_place = isolated_cache / "weights" / "pt_inception-2015-12-05-6726825d.pth"
    assert str(expected_place) in message
    assert "GANFUSE_INCEPTION_WEIGHTS" in message and "--weights" in message
    assert inception_weights.INCEPTION_SHA256 in message
    assert not expected_place.exists() and not expected_place.with_suffix(".pth.part").exists()
    with pytest.raises(OfflineError, match="downloads disabled"):
        get_extractor("inception", download=False)


@pytest.fixture
def random_inception_weights(tmp_path, monkeypatch):
    """A randomly initialised torch-fidelity Inception saved as a weights file whose hash is
    accepted, so the wrapper runs end to end without the real (unavailable) weights."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    with monkeypatch.context() as patch:
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(
            tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None
        )
        torch.manual_seed(0)
        network = tf_inception.FeatureExtractorInceptionV3("init", ["2048"])
    path = tmp_path / "random_inception.pth"
    torch.save(network.state_dict(), path)
    monkeypatch.setattr(
        inception_weights, "INCEPTION_SHA256", hashlib.sha256(path.read_bytes()).hexdigest()
    )
    return path


def test_inception_wrapper_runs_and_records_resize(random_inception_weights, digits_uint8):
    images = digits_uint8[0][:2]
    tf_net = get_extractor("inception", weights=random_inception_weights)
    assert isinstance(tf_net, InceptionExtractor)
    assert (tf_net.input_size, tf_net.feature_dim, tf_net.resize) == (299, 2048, "tf")
    feats, probs = tf_net.features_and_probs(images)  # grey 32x32 in, repeated to RGB, resized
    assert feats.shape == (2, 2048) and probs.shape == (2, 1008)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    clean = InceptionExtractor(weights=random_inception_weights, resize="clean")
    assert clean.resize == "clean" and clean.fingerprint != tf_net.fingerprint
    difference = (clean.features(images) - feats).abs().max() / feats.abs().max()
    assert difference > 1e-3  # the two filters give different inputs, hence features
    with pytest.raises(ConfigError, match="resize"):
        InceptionExtractor(weights=random_inception_weights, resize="nearest")
