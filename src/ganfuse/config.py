"""Typed configs: dataclasses are the single source of every default.

A config is built from a preset shipped in ``ganfuse/presets/*.yaml`` (or a user's YAML file with
the same layout), then ``key=value`` overrides with dotted keys (``train.lr_g=1e-4``), then
validated. Every mistake raises :class:`~ganfuse.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from PIL import ImageColor

from ganfuse.errors import ConfigError
from ganfuse.fileio import atomic_write_text

LOSSES = ("nonsaturating", "hinge", "wgan-gp", "lsgan")
SLOT_MASKS = ("mlp", "sprite", "mlp+sprite")  # model.slot_mask of t2i-words
MASK_RESOLUTIONS = ("half", "mixed", "full")  # model.mask_resolution of t2i-words
# Every architecture and the family it belongs to: ``gan`` (unconditional or class-conditional) or
# ``t2i`` (text-to-image, configured by the ``text`` section). Each layer maps a family to its piece
# (models.build.build_networks, train.objectives.OBJECTIVES, run.LOADERS); this is the one place
# that says which family an architecture is.
ARCHS: dict[str, str] = {"dcgan": "gan", "resnet": "gan", "t2i-dfgan": "t2i", "t2i-concat": "t2i", "t2i-words": "t2i"}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUGMENTS = ("translation", "cutout", "color")
SECTIONS = ("data", "model", "train", "text")
DATASETS = ("digits", "folder", "mnist", "cifar10", "shapes", "shards", "emoji", "scenes")


@dataclass
class DataConfig:
    name: str = "digits"  # one of DATASETS
    path: str | None = None  # image folder (``folder``), download root (``mnist``, ``cifar10``), shard folder/URL (``shards``)
    image_size: int = 32
    use_labels: bool = True  # ``folder``: class = sub-folder name
    num_workers: int = 0  # DataLoader workers for datasets read from disk
    # shapes, t2i: "colour shape" pairs never trained on (None = the dataset's default);
    # emoji GAN runs: Unicode groups never trained on (e.g. [Flags], the source of a few-shot transfer)
    holdout: list[str] | None = None
    # ``folder`` (the user's images; captions and labels from a Hugging Face ``imagefolder``
    # ``metadata.jsonl``/``metadata.csv`` beside them, see ganfuse/data/captions.py):
    caption_column: str = "text"  # metadata column holding each image's caption
    label_column: str = ""  # metadata column holding the class; "" = ``label`` if present, else the sub-folder
    background: str = "white"  # under transparent pixels and around ``fit: pad``: a colour name, 'rgb(r,g,b)', '#rrggbb'
    fit: str = "crop"  # non-square images: centre ``crop`` or ``pad`` to a square with the background
    # labelled GAN runs: item i is drawn with probability ~ n_class(i) ** -class_balance (0 = each
    # image once per epoch, the data's class shares; 1 = every class equally often)
    class_balance: float = 0.0


@dataclass
class ModelConfig:
    arch: str = "dcgan"  # one of ARCHS; ``dcgan`` is the founding document's network
    z_dim: int = 100
    conditional: bool = False  # class-conditional G (conditional BN) and projection D
    g_width: int = 256  # channels of G's first feature map (the document's DCGAN: 256)
    d_width: int = 64  # channels of D's first conv (the document's DCGAN: 64)
    spectral_norm_d: bool = False
    spectral_norm_g: bool = False
    minibatch_std: bool = False  # dcgan D: minibatch standard deviation feature against mode collapse
    d_norm: str = "batch"  # dcgan D: batch | group (GroupNorm: no mixing across a batch, as train.dp needs)
    # t2i-words G: how a slot reshapes its round blob into its object's outline: ``mlp`` (a small
    # MLP of each pixel's offset from the slot's centre), ``sprite`` (a grid of mask logits the
    # slot's state decodes to, sampled at the offsets) or both summed (``mlp+sprite``); SLOT_MASKS
    slot_mask: str = "mlp"
    # t2i-words sprite masks: the scale of the sprite decoder's output (0.1: its 576 outputs learn
    # about as fast as the mask MLP's one under D's gradient alone; supervised slots,
    # text.slot_weight, learn their shapes faster at 1)
    sprite_gain: float = 0.1
    # t2i-words: present slots closer than the dataset's gap (their blobs' bounding squares) are
    # pushed apart in a few differentiable rounds, as real objects never overlap
    slot_separation: bool = False
    # t2i-words: a pair head reads from the slots' words what each slot is of another ("left of",
    # ..., or nothing), and G's layout pushes each such pair apart along the relation's axis until
    # it holds (learnt from the training captions with text.relation_weight)
    slot_relations: bool = False
    # t2i-words with slot_relations: the pair head's loss also trains the word encoder and the
    # words' projection (never the slots' states, whose outlines a strong pair term distorted);
    # false: it trains the head alone
    relation_reads_words: bool = False
    # t2i-words: a slot whose drawn square pokes out of the canvas is moved back inside (real
    # objects are always wholly visible); places inside are left as the noise put them
    slot_in_canvas: bool = False
    # t2i-words: a slot's drawn half-extent in radii of its round blob, for slot_separation and
    # slot_in_canvas (a trained G's outlines reach 1.1x its blob's radius in the median, 1.36x at the
    # 90th percentile)
    slot_reach: float = 1.0
    # t2i-words: the layout's pushes (slot_separation, slot_relations) act at full strength on
    # every shown slot (a ramp on its gate, 0 below 0.02, 1 above 0.1) instead of weighted by the
    # gates, which a trained G keeps at 0.2 to 0.8 for the objects it shows
    slot_presence: bool = False
    # t2i-words: each slot's outline and colour come from its state after reading the words, before
    # the noise is added (the noise then decides only places and open sizes); false: from the state
    # after arranging with the noise
    shape_from_words: bool = False
    # t2i-words: each slot's outline is learnt from the slot supervision alone (text.slot_weight): the
    # images D judges take the outline decoder as it is, and D's gradient moves only the slots' places,
    # sizes, presence and colours and the background (a 1,000-step probe: no better outlines)
    outline_supervised: bool = False
    # t2i-words: where the slots' mask logits are computed: at half the image's side and up-sampled
    # (half), all at the image's resolution (full, 4x the work), or the mask MLP at half and the
    # blob and sprite at full (mixed)
    mask_resolution: str = "half"


@dataclass
class TrainConfig:
    steps: int = 2000
    max_minutes: float | None = None  # wall-clock budget; whichever of steps/minutes comes first
    batch_size: int = 64
    loss: str = "nonsaturating"  # one of LOSSES
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    # t2i-words G: the learning rate of its outline decoder (the mask MLP and sprite that shape each
    # slot; 0: train.lr_g). Measured at 1e-3 against G's 2e-4 (benchmarks/scenes_t2i.md, "The
    # outlines on their own"): a lower mask cost, no better binding; not in the preset
    lr_outline: float = 0.0
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 1  # discriminator updates per generator update
    r1_gamma: float = 0.0  # R1 weight on real data; 0 disables
    r1_every: int = 16  # lazy regularisation interval (R1 is scaled by it)
    gp_weight: float = 10.0  # WGAN-GP weight, used with loss=wgan-gp
    # class-conditional runs: weight of AC-GAN's auxiliary classification loss (a class head on D
    # trained on real labels; G asked to make fakes it classifies as their label); 0 = no head
    aux_class_weight: float = 0.0
    ema_decay: float = 0.0  # generator EMA decay; 0 disables
    ema_warmup_steps: int = 0  # decay ramps from 0 to ema_decay over these steps
    augment: list[str] = field(default_factory=list)  # DiffAugment ops, subset of AUGMENTS
    augment_p: float = 1.0  # probability of augmenting each image (fixed unless ada_target is set)
    ada_target: float | None = None  # adaptive p: target for r_t = E[sign(D(real))]
    ada_interval: int = 4  # steps between p updates
    ada_kimg: float = 5.0  # images (thousands) for p to move by 1
    precision: str = "auto"  # one of PRECISIONS; auto = bf16 where the device supports it
    channels_last: bool = False
    compile: bool = False
    # CPU bf16 autocast: convolution weight gradients as forward convolutions (train/bf16conv.py);
    # fp32, GPU and compiled runs are untouched
    bf16_conv_grad: bool = True
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    eval_every: int = 0  # steps between Frechet-distance evaluations; 0 disables
    eval_num: int = 1000
    monitor_every: int = 0  # steps between mode-collapse diagnostics; 0 disables
    guard: bool = True  # NaN/Inf guard: skip bad steps, restore last good state, lower lr
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only; CPU ranks keep per-rank statistics)
    profile: bool = False  # report the share of step time spent waiting for data
    loggers: list[str] = field(default_factory=list)  # extra metric sinks beside metrics.jsonl: tensorboard
    # fine-tuning (``ganfuse finetune``): G, D and EMA start from this run's latest good checkpoint
    # at step 0, and D's lowest ``freeze_d`` blocks keep their weights (FreezeD, Mo et al. 2020)
    init_from: str | None = None
    freeze_d: int = 0
    # prior preservation of a text-to-image fine-tune (DreamBooth, Ruiz et al. 2023): this share
    # of the training pairs (in expectation, per batch) are images the frozen source EMA G made for
    # ``prior_images`` of the source's own training prompts; 0 = off (ganfuse/train/prior.py)
    prior_fraction: float = 0.0
    prior_images: int = 200
    # differentially private discriminator (ganfuse/train/privacy.py): per-example clipping of
    # the real images' gradients and Gaussian noise (DP-SGD through Opacus), Poisson sampling of
    # the real batches, epsilon from the RDP accountant
    dp: bool = False
    dp_noise_multiplier: float = 1.0  # noise std / dp_max_grad_norm; derived when dp_target_epsilon is set
    dp_max_grad_norm: float = 1.0  # each real image's gradient of D's loss is clipped to this L2 norm
    dp_delta: float | None = None  # None: min(1e-5, 1 / (10 N)) for N training images
    dp_target_epsilon: float | None = None  # derive dp_noise_multiplier to spend this epsilon in train.steps
    # None: the noise and the batches come from a secret OS seed, kept only in checkpoints' state.pt;
    # a number makes them reproducible from the config (tests, benchmarks), so anyone who knows it
    # can subtract the noise: no privacy against them
    dp_seed: int | None = None


@dataclass
class TextConfig:
    """Text conditioning of the text-to-image archs (``model.arch: t2i-*``); unused otherwise."""

    encoder: str = "minilm"  # minilm | small (trained from scratch) | sentence-transformers name/path
    embed_dim: int = 0  # width of the frozen encoder's embeddings; filled in by training
    vocab: list[str] = field(default_factory=list)  # small encoder's words; filled in by training
    max_words: int = 32  # small encoder: longer prompts are truncated with a warning
    cond_dim: int = 128  # learned text vector that G and D compute from the encoder's output
    fusion: str = "every"  # t2i-dfgan G: text modulates every block, or enters only at the "input"
    d_condition: str = "projection"  # t2i-dfgan D: concat | projection | both
    mismatch_weight: float = 1.0  # matching-aware term: a real image with another caption is fake
    magp_weight: float = 2.0  # matching-aware gradient penalty on real pairs (0 disables)
    magp_power: float = 6.0
    contrastive_weight: float = 0.0  # image-text InfoNCE in D's features, for D and G (0 disables)
    feature_matching_weight: float = 0.0  # G: L1 between D's features of its image and of the real image of the same caption
    pixel_weight: float = 0.0  # G: L1 between its image and the real image of the same caption (pix2pix-style)
    # scenes: share of the mismatched real pairs whose caption is a binding swap of the image's own
    # ("a blue circle and a red square" for a red circle and a blue square) rather than another
    # image's caption; binding swaps have exactly the true caption's words
    swap_fraction: float = 0.5
    slots: int = 4  # t2i-words G: object slots (the most objects one image can hold)
    # t2i-words on scenes: an object discriminator in D judges windows at the real objects (with
    # their scene-graph descriptions, and with a colour or shape changed) and at G's slots (with the
    # objects its caption names, matched one to one): this weight (0 disables)
    object_weight: float = 0.0
    # t2i-words on scenes: each object the caption names is matched to a slot (Hungarian), whose own
    # mask is pulled to that shape's render and its colour to that colour, and the slots left over to
    # empty (layout supervision from the training scene graphs, as in Hong et al. 2018 and Obj-GAN;
    # positions stay free): this weight (0 disables)
    slot_weight: float = 0.0
    # t2i-words on scenes with text.slot_weight: a layout discriminator in D judges the objects'
    # places (colour, shape, centre of each named object) against the caption: the real scene
    # graphs' layouts are real, G's matched slots' and real layouts with a binding-swapped caption
    # are fake; this weight (0 disables)
    layout_weight: float = 0.0
    # with text.slot_weight: where a caption leaves an object's size open, its slot is asked for the
    # size its own noise number draws (large where positive) instead of the better of the two
    open_size_noise: bool = False
    # with text.slot_weight: where a caption states a relation ("a red circle left of a blue
    # square"), the two matched slots are pushed apart along its axis until it holds with the
    # dataset's margin (a hinge on the slots' centres, zero once it holds: places stay free within
    # the relation): this weight (0 disables)
    relation_weight: float = 0.0
    # with text.slot_weight: every real scene holds its objects wholly inside the canvas and apart
    # from each other (the dataset's gap); the slots matched to named objects are pushed inside and
    # apart until that holds (hinges on the slots' centres, zero once it holds): this weight
    # (0 disables)
    placement_weight: float = 0.0
    # t2i-words: mode seeking on the layout (MSGAN, Mao et al. 2019). Each fake's slots are placed
    # a second time with the next fake's noise (same words), and G is asked to move them with the
    # noise: this weight times 1 / (the slots' mean L1 move / the noises' mean L1 distance + 1e-5).
    # Against layouts that stop following the noise as training goes on (0 disables)
    spread_weight: float = 0.0


@dataclass
class Config:
    preset: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# building


def preset_names() -> list[str]:
    folder = resources.files("ganfuse") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str) -> tuple[str, dict[str, Any]]:
    path = Path(source)
    if source.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file not found: {source}")
        try:
            text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from None
        name = path.stem
    else:
        preset = resources.files("ganfuse") / "presets" / f"{source}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"unknown preset {source!r}; choose one of {', '.join(preset_names())} or give a YAML file"
            )
        text = preset.read_text(encoding="utf-8")
        name = source
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return name, data


def load_config(source: str = "digits", overrides: list[str] | None = None) -> Config:
    """Build a validated config from a preset name or YAML path plus ``key=value`` overrides."""
    name, data = _read_yaml(source)
    data.setdefault("preset", name)
    config = from_dict(data)
    for item in overrides or []:
        key, value = parse_override(item)
        set_value(config, key, value)
    validate(config)
    return config


def from_dict(data: dict[str, Any]) -> Config:
    config = Config()
    for key, value in _flatten(data).items():
        set_value(config, key, value)
    return config


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted in SECTIONS:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def valid_keys(config: Config | None = None) -> list[str]:
    config = config or Config()
    keys = ["preset"]
    for section in SECTIONS:
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(getattr(config, section))]
    return keys


def parse_override(item: str, example: str = "train.lr_g=1e-4") -> tuple[str, Any]:
    """``"train.lr_g=1e-4"`` -> ``("train.lr_g", 0.0001)``; values are parsed as YAML scalars and
    an empty value is ``None``. ``example`` is the override the error message shows."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (for example {example})")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_value(config: Config, key: str, value: Any) -> None:
    if key == "preset":
        config.preset = str(value)
        return
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
    section = getattr(config, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    if parts[1] not in fields:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
    hints = typing.get_type_hints(type(section))
    setattr(section, parts[1], coerce_value(key, value, hints[parts[1]]))


def coerce_value(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's annotation, converting only where it is lossless.

    The one coercer of every config (this module's and :mod:`ganfuse.multimodal.config`'s).
    Numbers must be finite; ``None`` is accepted only by an optional field (``str | None``) and
    by a list, which it clears; a plain ``str`` field refuses it."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(key, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        (inner,) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if value is None:  # ``--set train.augment=`` clears a list
            value = []
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [coerce_value(key, v, inner) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation in (int, float) and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no decimal point) as a string
            value = float(value)
        except ValueError:
            kind = "an integer" if annotation is int else "a number"
            raise ConfigError(f"{key} must be {kind}, got {value!r}") from None
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or float(value) != int(value):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        if "\x00" in value:  # no name or path can hold one (os.path raises ValueError on it)
            raise ConfigError(f"{key} cannot hold a NUL character")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation!r}")  # pragma: no cover


def arch_family(arch: str) -> str:
    """``"gan"`` or ``"t2i"`` for a known architecture (see :data:`ARCHS`)."""
    if arch not in ARCHS:
        raise ConfigError(f"model.arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    return ARCHS[arch]


def _is_colour(value: str) -> bool:
    """Whether Pillow reads ``value`` as a colour with every component in 0..255."""
    try:
        return all(0 <= c <= 255 for c in ImageColor.getrgb(value.strip()))
    except ValueError:
        return False


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key} {message}")


def validate(config: Config) -> Config:
    """Reject out-of-range values; each error names its key."""
    d, m, t = config.data, config.model, config.train
    _check(d.name in DATASETS, "data.name", f"must be one of {', '.join(DATASETS)}, got {d.name!r}")
    _check(d.name != "folder" or bool(d.path), "data.path", "must be set when data.name is folder")
    _check(d.name != "shards" or bool(d.path), "data.path", "must be set when data.name is shards (a folder of tar shards, a URL or hf://OWNER/NAME)")
    size = d.image_size
    _check(size >= 8 and size & (size - 1) == 0, "data.image_size", f"must be a power of two >= 8, got {size}")
    _check(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    _check(d.fit in ("crop", "pad"), "data.fit", f"must be crop or pad, got {d.fit!r}")
    t2i = m.arch in ARCHS and ARCHS[m.arch] == "t2i"
    _check(d.holdout is None or (d.name in ("shapes", "scenes") and t2i) or (d.name == "emoji" and not t2i),
           "data.holdout", "applies to shapes and scenes text-to-image runs (colour-shape pairs) and to emoji "
           "GAN runs (Unicode groups); emoji text-to-image runs hold out the dataset's held-out emoji")
    _check(bool(d.caption_column.strip()), "data.caption_column", "must name a metadata column (default text)")
    _check(_is_colour(d.background), "data.background",
           f"must be a colour name (white, black, grey, ...), 'rgb(r,g,b)' or '#rrggbb', got {d.background!r}")
    _check(m.arch in ARCHS, "model.arch", f"must be one of {', '.join(ARCHS)}, got {m.arch!r}")
    _check(m.arch != "dcgan" or size in (32, 64), "data.image_size",
           "must be 32 or 64 for model.arch=dcgan (the founding document's 32x32 network, or it with one more layer)")
    _check(m.arch != "resnet" or size in (32, 64), "data.image_size", "must be 32 or 64 for model.arch=resnet")
    _check(m.z_dim >= 1, "model.z_dim", "must be >= 1")
    _check(m.g_width >= 8, "model.g_width", "must be >= 8")
    _check(m.d_width >= 8, "model.d_width", "must be >= 8")
    _check(m.d_norm in ("batch", "group"), "model.d_norm", f"must be batch or group, got {m.d_norm!r}")
    _check(m.d_norm == "batch" or m.arch == "dcgan", "model.d_norm",
           f"applies to model.arch=dcgan (the {m.arch} discriminator has no BatchNorm)")
    _check(t.steps >= 1, "train.steps", "must be >= 1")
    _check(t.max_minutes is None or t.max_minutes > 0, "train.max_minutes", "must be > 0")
    _check(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _check(t.loss in LOSSES, "train.loss", f"must be one of {', '.join(LOSSES)}, got {t.loss!r}")
    for key in ("lr_g", "lr_d"):  # Adam moves each weight by about lr per step: above 1 is a typo
        _check(0 < getattr(t, key) <= 1, f"train.{key}", f"must be in (0, 1], got {getattr(t, key)}")
    _check(0 <= t.lr_outline <= 1, "train.lr_outline", f"must be in [0, 1], got {t.lr_outline}")
    _check(t.lr_outline == 0 or m.arch == "t2i-words", "train.lr_outline",
           f"applies to model.arch=t2i-words (the only G with an outline decoder), got {m.arch}")
    for key in ("beta1", "beta2"):
        _check(0 <= getattr(t, key) < 1, f"train.{key}", "must be in [0, 1)")
    _check(t.n_critic >= 1, "train.n_critic", "must be >= 1")
    _check(t.r1_gamma >= 0, "train.r1_gamma", "must be >= 0")
    _check(t.r1_every >= 1, "train.r1_every", "must be >= 1")
    _check(t.gp_weight >= 0, "train.gp_weight", "must be >= 0")
    _check(t.aux_class_weight >= 0, "train.aux_class_weight", f"must be >= 0, got {t.aux_class_weight}")
    _check(t.aux_class_weight == 0 or (m.conditional and not t2i), "train.aux_class_weight",
           "needs a class-conditional GAN (model.conditional: true); set it to 0")
    _check(t.aux_class_weight == 0 or not t.dp, "train.aux_class_weight",
           "cannot be combined with train.dp (the classifier's loss on real images would not be privatised)")
    _check(0 <= d.class_balance <= 1, "data.class_balance", f"must be in [0, 1], got {d.class_balance}")
    _check(d.class_balance == 0 or not t2i, "data.class_balance", "applies to labelled GAN runs, not text-to-image")
    _check(d.class_balance == 0 or not t.dp, "data.class_balance",
           "cannot be combined with train.dp (the privacy accounting assumes uniform Poisson sampling)")
    _check(0 <= t.ema_decay < 1, "train.ema_decay", "must be in [0, 1)")
    _check(t.ema_warmup_steps >= 0, "train.ema_warmup_steps", "must be >= 0")
    _check(t.freeze_d >= 0, "train.freeze_d", f"must be >= 0, got {t.freeze_d}")
    _check(t.dp_noise_multiplier >= 0, "train.dp_noise_multiplier", f"must be >= 0, got {t.dp_noise_multiplier}")
    _check(t.dp_max_grad_norm > 0, "train.dp_max_grad_norm", f"must be > 0, got {t.dp_max_grad_norm}")
    _check(t.dp_delta is None or 0 < t.dp_delta < 1, "train.dp_delta", f"must be in (0, 1), got {t.dp_delta}")
    _check(t.dp_target_epsilon is None or t.dp_target_epsilon > 0, "train.dp_target_epsilon",
           f"must be > 0, got {t.dp_target_epsilon}")
    _check(t.dp_seed is None or 0 <= t.dp_seed < 2**63, "train.dp_seed", f"must be in [0, 2**63), got {t.dp_seed}")
    _check(t.init_from is None or bool(t.init_from.strip()), "train.init_from", "must name a run folder")
    _check(0 <= t.prior_fraction < 1, "train.prior_fraction", f"must be in [0, 1), got {t.prior_fraction}")
    _check(t.prior_fraction == 0 or (t.init_from is not None and arch_family(m.arch) == "t2i"), "train.prior_fraction",
           "needs a text-to-image fine-tune (train.init_from and a t2i arch); set it to 0")
    _check(t.prior_images >= 1, "train.prior_images", f"must be >= 1, got {t.prior_images}")
    for op in t.augment:
        _check(op in AUGMENTS, "train.augment", f"entries must be among {', '.join(AUGMENTS)}, got {op!r}")
    _check(0 <= t.augment_p <= 1, "train.augment_p", "must be in [0, 1]")
    _check(t.ada_target is None or 0 < t.ada_target < 1, "train.ada_target", "must be in (0, 1)")
    _check(t.ada_target is None or bool(t.augment), "train.ada_target", "needs train.augment to name at least one op")
    _check(t.ada_interval >= 1, "train.ada_interval", "must be >= 1")
    _check(t.ada_kimg > 0, "train.ada_kimg", "must be > 0")
    for name in t.loggers:
        _check(name in ("jsonl", "tensorboard"), "train.loggers", f"entries must be jsonl or tensorboard, got {name!r}")
    _check(t.precision in PRECISIONS, "train.precision", f"must be one of {', '.join(PRECISIONS)}")
    _check(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", t.device) is not None, "train.device", f"must be auto, cpu, cuda, cuda:N or mps, got {t.device!r}")
    _check(0 <= t.seed < 2**32, "train.seed", f"must be in [0, 2**32), got {t.seed}")
    for key in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "eval_num"):
        _check(getattr(t, key) >= 1, f"train.{key}", "must be >= 1")
    for key in ("eval_every", "monitor_every"):
        every = getattr(t, key)
        _check(every >= 0, f"train.{key}", "must be >= 0")
        _check(every % t.log_every == 0, f"train.{key}", f"must be a multiple of train.log_every ({t.log_every})")
    if arch_family(m.arch) == "t2i":
        x = config.text
        _check(d.name in ("shapes", "scenes", "emoji", "folder"), "data.name",
               "must be shapes, scenes, emoji or folder (with captions) for a t2i arch")
        _check(m.arch != "t2i-words" or x.encoder == "small", "text.encoder",
               "must be small for model.arch=t2i-words (it attends to the words of the small encoder)")
        _check(m.arch != "t2i-words" or size == 64, "data.image_size", "must be 64 for model.arch=t2i-words")
        _check(0 <= x.swap_fraction <= 1, "text.swap_fraction", "must be in [0, 1]")
        _check(1 <= x.slots <= 16, "text.slots", "must be in 1..16")
        _check(m.sprite_gain > 0, "model.sprite_gain", "must be > 0")
        _check(not m.outline_supervised or x.slot_weight > 0, "model.outline_supervised",
               "needs text.slot_weight > 0 (the outlines are learnt from the slot supervision there)")
        _check(m.slot_reach > 0, "model.slot_reach", "must be > 0")
        _check(not m.relation_reads_words or m.slot_relations, "model.relation_reads_words",
               "needs model.slot_relations (it is how the pair head learns)")
        _check(not m.slot_relations or x.relation_weight > 0, "model.slot_relations",
               "needs text.relation_weight > 0 (the pair head learns the relations from the captions there)")
        _check(m.mask_resolution in MASK_RESOLUTIONS, "model.mask_resolution",
               f"must be one of {', '.join(MASK_RESOLUTIONS)}, got {m.mask_resolution!r}")
        _check(m.slot_mask in SLOT_MASKS, "model.slot_mask",
               f"must be one of {', '.join(SLOT_MASKS)}, got {m.slot_mask!r}")
        for key in ("object_weight", "slot_weight"):  # terms that read the training scene graphs
            weight = getattr(x, key)
            _check(weight >= 0, f"text.{key}", "must be >= 0")
            _check(weight == 0 or (m.arch == "t2i-words" and d.name == "scenes"), f"text.{key}",
                   "needs model.arch=t2i-words on data.name=scenes (it reads the scene graphs)")
        _check(x.layout_weight >= 0, "text.layout_weight", "must be >= 0")
        _check(x.relation_weight >= 0, "text.relation_weight", "must be >= 0")
        _check(x.relation_weight == 0 or x.slot_weight > 0, "text.relation_weight",
               "needs text.slot_weight > 0 (the relation's objects are the slots matched to them)")
        _check(x.placement_weight >= 0, "text.placement_weight", "must be >= 0")
        _check(x.spread_weight >= 0, "text.spread_weight", "must be >= 0")
        _check(x.spread_weight == 0 or m.arch == "t2i-words", "text.spread_weight",
               "needs model.arch=t2i-words (it moves the object slots' places)")
        _check(x.placement_weight == 0 or x.slot_weight > 0, "text.placement_weight",
               "needs text.slot_weight > 0 (the placed objects are the slots matched to them)")
        _check(x.layout_weight == 0 or x.slot_weight > 0, "text.layout_weight",
               "needs text.slot_weight > 0 (the layout of G's slots comes from matching them to the named objects)")
        _check(not x.open_size_noise or (x.slot_weight > 0 and m.z_dim >= 3 * x.slots), "text.open_size_noise",
               "needs text.slot_weight > 0 and model.z_dim >= 3 x text.slots (a noise number per slot)")
        _check(x.layout_weight == 0 or not t.dp, "text.layout_weight",
               "cannot be combined with train.dp (the layout head's loss on real layouts would not be privatised)")
        _check(size in (32, 64), "data.image_size", "must be 32 or 64 for a t2i arch")
        _check(bool(x.encoder.strip()), "text.encoder", "must name an encoder (minilm, small or a model)")
        _check(x.cond_dim >= 8, "text.cond_dim", "must be >= 8")
        _check(x.max_words >= 1, "text.max_words", "must be >= 1")
        _check(x.fusion in ("every", "input"), "text.fusion", f"must be every or input, got {x.fusion!r}")
        _check(x.d_condition in ("concat", "projection", "both"), "text.d_condition", f"must be concat, projection or both, got {x.d_condition!r}")
        for key in ("mismatch_weight", "magp_weight", "contrastive_weight", "feature_matching_weight",
                    "pixel_weight"):
            _check(getattr(x, key) >= 0, f"text.{key}", "must be >= 0")
        _check(x.magp_power > 0, "text.magp_power", "must be > 0")
        _check(m.arch == "t2i-dfgan" or x.contrastive_weight == 0, "text.contrastive_weight",
               f"must be 0 for model.arch={m.arch} (its discriminator has no embedding heads)")
    return config


def save_config(config: Config, path: Path) -> None:
    """Write ``config`` as YAML, atomically (a crash leaves the old file or the new one)."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
