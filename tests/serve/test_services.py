"""The app's work without a browser: limits, generation and multimodal answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ganfuse.errors import UserError
from ganfuse.inputs import InputError, check_count
from ganfuse.run_folders import gan_run_info
from ganfuse.serve.generate import GenerateService, LoadedRun
from ganfuse.serve.limits import LimitError, Limits, check_text, check_upload
from ganfuse.serve.multimodal import NO_RUN_MESSAGE, MultimodalService

LIMITS = Limits()


def test_text_and_count_limits():
    assert check_text("  a red circle ", LIMITS) == "a red circle"
    assert len(check_text("x" * 500, LIMITS)) == 500
    with pytest.raises(LimitError, match="501 characters long; the limit is 500"):
        check_text("x" * 501, LIMITS)
    assert check_count("Number of images", 64, LIMITS.max_images) == 64
    for bad in (0, 65, 2.5, None):
        with pytest.raises(InputError, match="^Number of images .*a whole number from 1 to 64"):
            check_count("Number of images", bad, LIMITS.max_images)


def test_upload_limits(tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    small = uploads / "ok.png"
    Image.new("RGB", (40, 30)).save(small)
    assert check_upload(small, LIMITS, uploads) == small
    wide = uploads / "wide.png"
    Image.new("L", (4097, 2)).save(wide)
    with pytest.raises(LimitError, match="4097x2 pixels; the limit is 4096"):
        check_upload(wide, LIMITS, uploads)
    big = uploads / "big.png"
    big.write_bytes(b"\0" * (5 * 2**20 + 1))
    with pytest.raises(LimitError, match="the limit is 5 MB"):
        check_upload(big, LIMITS, uploads)
    junk = uploads / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(LimitError, match="not an image"):
        check_upload(junk, LIMITS, uploads)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    with pytest.raises(LimitError, match="only images uploaded"):
        check_upload(outside, LIMITS, uploads)
    with pytest.raises(LimitError, match="only images uploaded"):
        check_upload(uploads / ".." / "secret.png", LIMITS, uploads)


@pytest.fixture(scope="module")
def service(cond_run):
    return GenerateService([gan_run_info(cond_run)], LIMITS)


def test_generate_gives_n_upscaled_images_deterministic_per_seed(service, cond_run):
    from ganfuse.run import load_run

    pictures = service.generate("tiny-cond", 6, 11, 0.0, "3: 3")
    assert (
        len(pictures) == 6 and pictures[0].shape == (128, 128, 3) and pictures[0].dtype == np.uint8
    )
    again = service.generate("tiny-cond", 6, 11, 0.0, "3: 3")
    assert all(np.array_equal(a, b) for a, b in zip(pictures, again, strict=True))
    # the same images as the Python API gives for class 3, upscaled 4x
    expected = load_run(cond_run).sample(6, seed=11, class_label=3)
    pixels = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0, 0].numpy()
    assert np.array_equal(pictures[0][::4, ::4, 0], pixels)
    assert service.class_choices("tiny-cond")[:2] == ["random", "0: 0"]


def test_generate_limits_and_unknown_inputs(service):
    with pytest.raises(InputError, match="1 to 64"):
        service.generate("tiny-cond", 65, 0, 0.0)
    with pytest.raises(LimitError, match="unknown class"):
        service.generate("tiny-cond", 1, 0, 0.0, "12: x")
    with pytest.raises(LimitError, match="unknown run"):
        service.generate("elsewhere", 1, 0, 0.0)


def test_interpolation_strip_size(service):
    strip = service.interpolate("tiny-cond", 5, 0, 1.5, "random")
    assert strip.shape == (36 * 3, (5 * 34 + 2) * 3, 3)
    with pytest.raises(InputError, match="^Interpolation steps must be a whole number from 2 to 16, got 17$"):
        service.interpolate("tiny-cond", 17, 0, 0.0)
    with pytest.raises(InputError, match="from 2 to 16, got 1$"):
        service.interpolate("tiny-cond", 1, 0, 0.0)


def test_text_runs_need_a_prompt_and_get_it(service):
    from tests.report.test_runs_and_images import FakeTextRun

    info = gan_run_info(service.runs["tiny-cond"].info.path)
    text_info = type(info)(info.path, "t2i", info.config, {**info.manifest, "kind": "t2i"}, "text")
    fake = FakeTextRun()
    service.runs["t2i"] = LoadedRun(text_info, fake)
    try:
        with pytest.raises(LimitError, match="type a prompt"):
            service.generate("t2i", 2, 0, 0.0)
        assert len(service.generate("t2i", 2, 9, 0.0, prompt="a red circle")) == 2
        assert fake.calls[-1] == ("sample", 2, 9, ("a red circle", "a red circle"))
    finally:
        del service.runs["t2i"]


def test_multimodal_without_runs_says_what_to_do(red_png):
    service = MultimodalService({}, LIMITS)
    assert not service.available and service.describe() == NO_RUN_MESSAGE
    with pytest.raises(UserError, match="No multimodal run was given"):
        service.answer(red_png, "a red circle")


def test_multimodal_caption_matches_the_caption_run(cap_run, red_png):
    from ganfuse.multimodal.captioning import load_captioner
    from ganfuse.multimodal.predict import load_image

    service = MultimodalService({"cap": cap_run}, LIMITS, upload_folder=red_png.parent)
    answer = service.answer(red_png, "")
    assert answer.caption == load_captioner(cap_run).caption(load_image(red_png, 32))[0]
    assert answer.match == {} and answer.labels == {}
    assert "no matching run given: no match score" in answer.notes


def test_serve_cli_rejects_bad_input_in_one_line(tmp_path, capsys):
    from ganfuse.cli import main

    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "--port must be from 1 to 65535" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "\n" not in err


def test_uploads_are_read_as_each_run_read_its_images(cap_run, tmp_path, monkeypatch):
    """A transparent upload lies on the run's own background (a folder run may use black), and
    the service decodes it once per way of reading, with each run's background and fit."""
    import ganfuse.serve.multimodal as multimodal

    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, 16:] = (255, 0, 0, 255)  # right half opaque red, left half fully transparent
    path = tmp_path / "logo.png"
    Image.fromarray(rgba, "RGBA").save(path)
    white = multimodal._decode_upload(path, 32, "white", "crop")
    black = multimodal._decode_upload(path, 32, "black", "crop")
    assert torch.allclose(white[0, :, :, :8], torch.ones(3, 32, 8))
    assert torch.allclose(black[0, :, :, :8], -torch.ones(3, 32, 8))
    assert torch.equal(white[..., 24:], black[..., 24:])  # opaque pixels do not depend on it

    service = MultimodalService({"cap": cap_run}, LIMITS, upload_folder=tmp_path)
    service.runs[0].background = "black"
    calls = []
    real_decode = multimodal._decode_upload
    monkeypatch.setattr(multimodal, "_decode_upload", lambda *a: calls.append(a[1:]) or real_decode(*a))
    service.answer(path, "")
    assert calls == [(32, "black", "crop")]
