import pytest

from ganfuse.config import Config, load_config, preset_names
from ganfuse.errors import ConfigError


def test_digits_dcgan_is_the_founding_recipe():
    c = load_config("digits-dcgan")
    assert (c.model.arch, c.model.z_dim, c.train.loss) == ("dcgan", 100, "nonsaturating")
    assert (c.train.lr_g, c.train.lr_d, c.train.beta1, c.train.beta2) == (2e-4, 2e-4, 0.5, 0.999)
    assert c.train.batch_size == 64 and c.data.name == "digits" and c.data.image_size == 32
    assert c.train.ema_decay == 0 and c.train.augment == [] and not c.model.spectral_norm_d


def test_presets_all_load():
    names = preset_names()
    assert {"digits", "digits-dcgan"} <= set(names)
    for name in names:
        assert isinstance(load_config(name), Config)


def test_overrides_are_typed():
    c = load_config("digits", ["train.lr_g=1e-4", "train.steps=7", "train.augment=translation,cutout",
                               "train.max_minutes=0.5", "model.conditional=true"])
    assert c.train.lr_g == 1e-4 and c.train.steps == 7 and c.train.max_minutes == 0.5
    assert c.train.augment == ["translation", "cutout"] and c.model.conditional is True


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config("digits", ["train.lrg=1e-4"])
    assert "train.lrg" in str(err.value) and "train.lr_g" in str(err.value)


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.lr_g=0", "train.lr_g"),
        ("train.lr_d=-1", "train.lr_d"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=2.5", "train.batch_size"),
        ("data.image_size=48", "data.image_size"),
        ("train.loss=wasserstein", "train.loss"),
        ("train.steps=abc", "train.steps"),
        ("model.conditional=maybe", "model.conditional"),
        ("train.augment=rotate", "train.augment"),
        ("train.ema_decay=1.5", "train.ema_decay"),
        ("train.lr_g=.nan", "train.lr_g"),
        ("data.path=a\x00b", "data.path"),  # a NUL in any string value, refused where values are typed
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("digits", [override])
    assert key in str(err.value)


def test_user_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  name: digits\ntrain:\n  lr_g: 0.001\n  loss: hinge\n")
    c = load_config(str(path))
    assert c.train.lr_g == 0.001 and c.train.loss == "hinge" and c.preset == "mine"
    path.write_text("train:\n  nope: 1\n")
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(str(path))


def test_unknown_preset_is_clear():
    with pytest.raises(ConfigError, match="unknown preset 'nonexistent'"):
        load_config("nonexistent")
