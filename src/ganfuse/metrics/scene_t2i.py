"""Text-to-image evaluation on ``scenes`` with the exact judge: the right objects, bindings and
places, real diversity, and a Frechet distance in the scene parser's features.

**Prompt sets** (:func:`scene_t2i_prompt_sets`, deterministic from a seed). A text-to-image model
for ``scenes`` trains on captions that name every object, so every prompt here does:

- ``seen``: two-object scenes of the ``test`` split (no held-out colour-shape pair), half of them
  described by their list caption ("there are a red circle and a small blue square"), half by
  their relation caption ("a red circle is left of a blue square"; on a two-object scene it names
  both objects). The captions are the dataset's own, so sizes are stated or not as the data does.
- ``heldout``: the same from the ``heldout`` split (every scene holds a held-out pair).
- ``ladder``: list captions of ``test`` scenes of 1, 2, 3 and 4 objects, ``num // 4`` of each.

**Scores** (:func:`score_scene_t2i`), one image per prompt, read by the scene parser
(:func:`ganfuse.metrics.scenes.parse_scenes`, exact on real scenes):

- ``count``: the image holds exactly as many objects as the prompt names;
- ``binding``: every named object is present, as distinct objects, with its colour, shape and size
  where stated (:func:`~ganfuse.metrics.scenes.score_caption`'s ``binding``);
- ``relation``: among relation prompts, the stated relation holds for a binding assignment (centres
  at least :func:`~ganfuse.metrics.scenes.scoring_margin` apart);
- ``correct``: all of them. A prompt no template reads counts as wrong, with a warning.

**Diversity** (:func:`position_spread`): for two-object list prompts and relation prompts
separately, 10 samples per prompt (seeds ``seed .. seed + 9``), each named object bound to a parsed
one (the assignment :func:`score_caption` credits; an object the caption binds in no complete
assignment is bound on its own when it can be), and the RMS distance of its centre to its mean
centre over the samples where it is bound (pixels); where the caption leaves the object's size
open, the standard deviation of the "large" indicator over those samples. The real reference is
the same statistic over real two-object ``test`` scenes, parsed the same way: in the generator a
position and a size are drawn independently of colour and shape, so the real distribution of one
named object is that of any object of a two-object scene with the stated size (for a relation
prompt: of the subject, or object, of a pair of a two-object scene for which the relation holds
with the dataset's margin). For every (prompt, object) with ``m`` bound samples, ``m`` real objects
are drawn from that pool, 16 times, and their statistic averaged; the figures are means over
prompts and objects, and ``spread_ratio`` / ``size_ratio`` are generated / real (target >= 0.7).
``duplicates``: the share of prompts with two samples that are the same image
(:mod:`ganfuse.metrics.t2i_diversity`).

**Frechet distance** (:func:`scene_features`) between the images of each prompt set and the real
scenes its prompts caption (``test`` split for ``seen`` and ``ladder``, ``heldout`` for
``heldout``), with the number of images ``fd_n`` on each side. An image's feature (83 numbers) is
built from the parser's reading of it: the silhouette classifier's penultimate features (64)
mean-pooled over its objects and divided by their RMS on real scenes (8.6), so that they are of
order 1; the number of objects of each colour (8); the soft number of each shape and size (sums of
the classifier's probabilities, 5 + 2); the number of objects (1); the mean object centre and the
RMS distance of the centres to it, in quarters of the canvas (3). An image with no object has the
zero feature.

Metrics see images only: the caller passes a ``sample_fn(prompts, seed) -> images``, one
``(3, S, S)`` image in [-1, 1] per prompt, deterministic in ``seed``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ganfuse.data.base import uint8_to_float
from ganfuse.data.scenes import (
    CAPTION_KINDS,
    COLORS,
    DEFAULT_HOLDOUT,
    DEFAULT_IMAGE_SIZE,
    GAP_AT_64,
    IMAGE_SIZES,
    MAX_OBJECTS,
    RELATIONS,
    SHAPES,
    SIZES,
    SUBPIXEL,
    CaptionParseError,
    SceneDescription,
    SceneGraph,
    SceneObject,
    background_bank,
    generate_scenes,
    mask_bank,
    object_side,
    parse_caption,
    relation_holds,
    relation_margin,
)
from ganfuse.metrics.classifier import ConvClassifier
from ganfuse.metrics.frechet import fid_from_features
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.scenes import (
    Component,
    load_scene_parser,
    score_caption,
    scoring_margin,
    segment,
)
from ganfuse.metrics.settings import DIVERSITY_PROMPTS, DIVERSITY_SAMPLES, SCENE_T2I_METRICS
from ganfuse.metrics.t2i import parse_holdout
from ganfuse.metrics.t2i_diversity import (
    SampleFn,
    draw_samples,
    duplicate_summary,
    indicator_std,
    ratio,
    rms_spread,
)

PROMPT_SETS: dict[str, str] = {"seen": "test", "heldout": "heldout", "ladder": "test"}  # name -> split
LADDER_COUNTS: tuple[int, ...] = tuple(range(1, MAX_OBJECTS + 1))
SILHOUETTE_RMS = 8.6  # RMS of the parser's penultimate features over real test objects (64 and 32 px)
FEATURE_DIM = 64 + len(COLORS) + len(SHAPES) + len(SIZES) + 1 + 3
REAL_SPREAD_SCENES = 4000  # real test images drawn for the spread reference (about 27% have two objects)
REAL_SPREAD_DRAWS = 16  # real draws averaged per (prompt, object)
_LIST, _RELATION = CAPTION_KINDS.index("list"), CAPTION_KINDS.index("relation")
_ORACLE_TRIES = 200  # whole-scene placements tried before a relation prompt gives up
_CANDIDATES = 48  # positions tried per object, as the dataset's sampler does


# ---------------------------------------------------------------------------------------------
# Prompt sets
# ---------------------------------------------------------------------------------------------


def read_prompts(prompts: Sequence[str]) -> list[SceneDescription | None]:
    """The description each prompt states, None where no ``scenes`` template reads it (one warning
    for all of those: they are scored as wrong, not crashed on)."""
    out: list[SceneDescription | None] = []
    unreadable = []
    for prompt in prompts:
        try:
            out.append(parse_caption(prompt))
        except CaptionParseError:
            out.append(None)
            unreadable.append(prompt)
    if unreadable:
        warnings.warn(
            f"{len(unreadable)} prompt(s) follow none of the scenes caption templates or name "
            f"something outside its world, e.g. {unreadable[0][:60]!r}; they are scored as wrong",
            stacklevel=3,
        )
    return out


@dataclass
class ScenePromptSet:
    """Prompts, the descriptions they state (None for an unreadable prompt) and the real scenes
    they caption, uint8 ``(N, 3, S, S)`` (no rows for a set built from prompts alone)."""

    name: str
    prompts: list[str]
    descriptions: list[SceneDescription | None]
    real_images: torch.Tensor
    image_size: int

    @classmethod
    def from_prompts(cls, name: str, prompts: Sequence[str],
                     image_size: int = DEFAULT_IMAGE_SIZE) -> ScenePromptSet:
        """A set of any prompts (unreadable ones warned about), without real images."""
        empty = torch.zeros((0, 3, image_size, image_size), dtype=torch.uint8)
        return cls(name, list(prompts), read_prompts(prompts), empty, image_size)


def _relation_caption(caption: str) -> bool:
    return parse_caption(caption).kind == "relation"


def _pick_scenes(graphs: list[SceneGraph], captions: list[list[str]], num: int,
                 ladder: bool) -> dict[str, list[tuple[int, int]]] | None:
    """``(scene index, caption kind index)`` of each prompt of the sets drawn from one split: the
    two-object sets (``pairs``), and with ``ladder`` the count ladder; None when the split holds too
    few scenes of some kind."""
    two = [i for i, g in enumerate(graphs) if len(g.objects) == 2]
    n_list = num - num // 2
    if len(two) < n_list:
        return None
    related = [i for i in two[n_list:] if _relation_caption(captions[i][_RELATION])][: num // 2]
    if len(related) < num // 2:
        return None
    picked = {"pairs": [(i, _LIST) for i in two[:n_list]] + [(i, _RELATION) for i in related]}
    if ladder:
        used = {i for i, _ in picked["pairs"]}
        rungs = []
        for n in LADDER_COUNTS:
            rung = [i for i, g in enumerate(graphs) if len(g.objects) == n and i not in used]
            if len(rung) < num // 4:
                return None
            rungs += [(i, _LIST) for i in rung[: num // 4]]
        picked["ladder"] = rungs
    return picked


def _split_prompt_sets(split: str, num: int, seed: int, image_size: int,
                       holdout: Sequence[tuple[str, str]], ladder: bool) -> dict[str, ScenePromptSet]:
    count = 4 * num + 256
    while True:  # a smaller split is a prefix of a larger one, so growing it keeps the choice
        images, graphs, captions = generate_scenes(count, seed, split, image_size, holdout)
        picked = _pick_scenes(graphs, captions, num, ladder)
        if picked is not None:
            break
        count *= 2
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    out = {}
    for key, rows in picked.items():
        prompts = [captions[i][kind] for i, kind in rows]
        name = "ladder" if key == "ladder" else ("seen" if split == "test" else "heldout")
        real = pixels[[i for i, _ in rows]].contiguous()
        out[name] = ScenePromptSet(name, prompts, [parse_caption(p) for p in prompts], real, image_size)
    return out


def scene_t2i_prompt_sets(num: int = 500, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE,
                          holdout: Sequence[tuple[str, str]] | None = None) -> dict[str, ScenePromptSet]:
    """``{"seen", "heldout", "ladder"}``, ``num`` prompts each (the ladder ``4 * (num // 4)``),
    deterministic for ``seed``; ``holdout`` None means the dataset's :data:`DEFAULT_HOLDOUT`."""
    if num < len(LADDER_COUNTS):
        raise MetricInputError(
            f"scenes text-to-image evaluation needs at least {len(LADDER_COUNTS)} prompts per set "
            f"(the count ladder has num // 4 of each of 1 to 4 objects), got {num}"
        )
    if image_size not in IMAGE_SIZES:
        raise MetricInputError(f"scenes images are {' or '.join(map(str, IMAGE_SIZES))} pixels, got {image_size}")
    holdout = DEFAULT_HOLDOUT if holdout is None else tuple(holdout)
    sets = _split_prompt_sets("test", num, seed, image_size, holdout, ladder=True)
    sets.update(_split_prompt_sets("heldout", num, seed, image_size, holdout, ladder=False))
    return {name: sets[name] for name in PROMPT_SETS}


# ---------------------------------------------------------------------------------------------
# Parsing with features
# ---------------------------------------------------------------------------------------------


def _as_nchw(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A numpy uint8 ``(B, S, S, 3)`` batch (as :func:`generate_scenes` gives) as ``(B, 3, S, S)``;
    tensors pass through."""
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3:
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if not isinstance(images, torch.Tensor):
        raise MetricInputError(f"expected a (B, 3, S, S) image tensor, got {type(images).__name__}")
    return images


@torch.no_grad()
def parse_with_features(images: torch.Tensor | np.ndarray,
                        parser: ConvClassifier | None = None) -> tuple[list[SceneGraph], torch.Tensor]:
    """One pass of the scene parser over ``images`` (uint8 or [-1, 1] float ``(B, 3, S, S)``, S 32
    or 64): the scene graph of each, as :func:`~ganfuse.metrics.scenes.parse_scenes` reads it, and
    its feature ``(B, FEATURE_DIM)`` float64 (see the module's docstring)."""
    images = _as_nchw(images)
    per_image = segment(images)
    side = int(images.shape[-1])
    model = parser if parser is not None else load_scene_parser()
    model.eval()
    flat: list[Component] = [c for components in per_image for c in components]
    feats, shape_p, size_p = [], [], []
    for start in range(0, len(flat), 2048):
        chunk = flat[start : start + 2048]
        windows = torch.from_numpy(np.stack([c.window for c in chunk])).float().mul_(2.0).sub_(1.0)
        f, logits = model.features_and_logits(windows[:, None])
        feats.append(f.double())
        shape_p.append(logits["shape"].double().softmax(1))
        size_p.append(logits["size"].double().softmax(1))
    empty = torch.zeros((0,), dtype=torch.float64)
    feats_all = torch.cat(feats) if feats else empty.reshape(0, 64)
    shapes_all = torch.cat(shape_p) if shape_p else empty.reshape(0, len(SHAPES))
    sizes_all = torch.cat(size_p) if size_p else empty.reshape(0, len(SIZES))
    colors = list(COLORS)
    graphs, rows, position = [], [], 0
    for components in per_image:
        k = len(components)
        mine = slice(position, position + k)
        position += k
        objects = sorted(
            (SceneObject(c.color, SHAPES[int(s.argmax())], SIZES[int(z.argmax())], c.center, c.bbox)
             for c, s, z in zip(components, shapes_all[mine], sizes_all[mine], strict=True)),
            key=lambda o: (o.center[1], o.center[0]),
        )
        graphs.append(SceneGraph(tuple(objects), side))
        row = torch.zeros(FEATURE_DIM, dtype=torch.float64)
        if k:
            centres = torch.tensor([c.center for c in components], dtype=torch.float64) * (4.0 / side)
            mean = centres.mean(0)
            color_counts = torch.bincount(torch.tensor([colors.index(c.color) for c in components]),
                                          minlength=len(colors)).double()
            row = torch.cat([
                feats_all[mine].mean(0) / SILHOUETTE_RMS,
                color_counts,
                shapes_all[mine].sum(0),
                sizes_all[mine].sum(0),
                torch.tensor([float(k)], dtype=torch.float64),
                mean,
                (centres - mean).square().sum(1).mean().sqrt().reshape(1),
            ])
        rows.append(row)
    features = torch.stack(rows) if rows else torch.zeros((0, FEATURE_DIM), dtype=torch.float64)
    return graphs, features


def scene_features(images: torch.Tensor | np.ndarray, parser: ConvClassifier | None = None) -> torch.Tensor:
    """The Frechet feature ``(B, FEATURE_DIM)`` of each image (see the module's docstring)."""
    return parse_with_features(images, parser)[1]


def scene_fd(images: torch.Tensor, real_images: torch.Tensor, parser: ConvClassifier | None = None) -> float:
    """Frechet distance between ``images`` and ``real_images`` (each ``(N, 3, S, S)``, N >= 2) in
    the scene parser's features."""
    return fid_from_features(scene_features(real_images, parser), scene_features(images, parser))


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptScore:
    """One image against its prompt; ``relation`` None where the prompt states none."""

    count: bool
    binding: bool
    relation: bool | None
    correct: bool


def score_description(description: SceneDescription | None, graph: SceneGraph,
                      margin: float | None = None) -> PromptScore:
    """Score one parsed image against what its prompt states (None: an unreadable prompt, wrong)."""
    if description is None:
        return PromptScore(False, False, None, False)
    stated = score_caption(dataclasses.replace(description, objects=(), relations=()), graph, margin)
    count = stated.count is not False
    if description.objects:
        count = count and len(graph.objects) == len(description.objects)
    # Objects no named spec matches can never be bound; leaving them out keeps the judge's search
    # over assignments small on a cluttered image without changing its answer.
    relevant = SceneGraph(
        tuple(o for o in graph.objects if any(s.matches(o) for s in description.objects)),
        graph.image_size,
        graph.background,
    )
    judged = score_caption(dataclasses.replace(description, counts=()), relevant, margin)
    binding = bool(judged.binding) if description.objects else True
    relation = judged.relations
    return PromptScore(count, binding, relation, count and binding and relation is not False)


def _mean(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def score_graphs(graphs: Sequence[SceneGraph], prompt_set: ScenePromptSet,
                 margin: float | None = None) -> dict[str, object]:
    """The scores of :func:`score_scene_t2i` for already parsed images."""
    if len(graphs) != len(prompt_set.prompts):
        raise MetricInputError(
            f"{len(graphs)} images for {len(prompt_set.prompts)} prompts of {prompt_set.name!r}"
        )
    if not graphs:
        raise MetricInputError(f"the prompt set {prompt_set.name!r} is empty")
    scores = [score_description(d, g, margin) for d, g in zip(prompt_set.descriptions, graphs, strict=True)]
    relations = [s.relation for s in scores if s.relation is not None]
    out: dict[str, object] = {
        "n": len(scores),
        "count": _mean([s.count for s in scores]),
        "binding": _mean([s.binding for s in scores]),
        "relation": _mean(relations),
        "n_relation": len(relations),
        "correct": _mean([s.correct for s in scores]),
        "unreadable": sum(d is None for d in prompt_set.descriptions),
    }
    named = [len(d.objects) if d is not None else None for d in prompt_set.descriptions]
    if len({n for n in named if n is not None}) > 1:
        out["count_by_objects"] = {
            str(n): _mean([s.count for s, m in zip(scores, named, strict=True) if m == n])
            for n in sorted({n for n in named if n is not None})
        }
    return out


def score_scene_t2i(images: torch.Tensor | np.ndarray, prompt_set: ScenePromptSet | Sequence[str],
                    parser: ConvClassifier | None = None) -> dict[str, object]:
    """``count``, ``binding``, ``relation`` (among relation prompts; None without any),
    ``correct``, ``n``, ``n_relation`` and ``unreadable`` of ``images`` ``(N, 3, S, S)``, one per
    prompt of ``prompt_set`` (a :class:`ScenePromptSet` or a list of prompts; an unreadable prompt
    is warned about and scored wrong); ``count_by_objects`` where the prompts name different numbers
    of objects."""
    images = _as_nchw(images)
    if not isinstance(prompt_set, ScenePromptSet):
        prompt_set = ScenePromptSet.from_prompts("prompts", list(prompt_set), int(images.shape[-1]))
    graphs, _ = parse_with_features(images, parser)
    return score_graphs(graphs, prompt_set)


# ---------------------------------------------------------------------------------------------
# Diversity
# ---------------------------------------------------------------------------------------------


def bind_objects(description: SceneDescription, graph: SceneGraph,
                 margin: float | None = None) -> list[int | None]:
    """For each object the description names, the index of the parsed object it is bound to: the
    first complete assignment (distinct objects, all specs matched) under which every stated
    relation holds, else the first complete one (as :func:`score_caption` credits them); without a
    complete assignment each named object takes the first unused object it matches, or None."""
    margin = scoring_margin(graph.image_size) if margin is None else margin
    objects = graph.objects
    specs = description.objects
    candidates = [i for i, o in enumerate(objects) if any(s.matches(o) for s in specs)]
    complete = [
        chosen
        for chosen in itertools.permutations(candidates, len(specs))
        if all(spec.matches(objects[i]) for spec, i in zip(specs, chosen, strict=True))
    ]
    for chosen in complete:
        if all(relation_holds(objects[chosen[r.subject]], objects[chosen[r.obj]], r.relation, margin)
               for r in description.relations):
            return list(chosen)
    if complete:
        return list(complete[0])
    used: set[int] = set()
    out: list[int | None] = []
    for spec in specs:
        pick = next((i for i in candidates if i not in used and spec.matches(objects[i])), None)
        if pick is not None:
            used.add(pick)
        out.append(pick)
    return out


@dataclass
class _Pool:
    """Real objects of one kind: centres ``(n, 2)`` in pixels and whether each is large ``(n,)``."""

    centres: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    large: list[bool] = dataclasses.field(default_factory=list)

    def add(self, o: SceneObject) -> None:
        self.centres.append(o.center)
        self.large.append(o.size == "large")


def _pool_key(description: SceneDescription, index: int) -> tuple:
    size = description.objects[index].size
    if not description.relations:
        return ("list", size)
    rel = description.relations[0]
    return ("relation", rel.relation, "subject" if index == rel.subject else "object", size)


def real_spread_pools(image_size: int, seed: int = 0, num: int = REAL_SPREAD_SCENES,
                      parser: ConvClassifier | None = None) -> dict[tuple, _Pool]:
    """Objects of the real two-object scenes among ``num`` ``test`` images, as the parser reads
    them, by the key a named object's reference is drawn from: ``("list", size)`` and
    ``("relation", relation, "subject" | "object", size)``, with ``size`` None for any size.
    With the shipped parser the pools are built once per process (treat them as read-only)."""
    if parser is None or parser is load_scene_parser():
        return _shipped_parser_pools(image_size, seed, num)
    return _build_pools(image_size, seed, num, parser)


@functools.lru_cache(maxsize=4)
def _shipped_parser_pools(image_size: int, seed: int, num: int) -> dict[tuple, _Pool]:
    return _build_pools(image_size, seed, num, None)


def _build_pools(image_size: int, seed: int, num: int, parser: ConvClassifier | None) -> dict[tuple, _Pool]:
    images, graphs, _ = generate_scenes(num, seed, "test", image_size, captions=False)
    two = [i for i, g in enumerate(graphs) if len(g.objects) == 2]
    parsed = parse_with_features(images[two], parser)[0] if two else []
    margin = relation_margin(image_size)
    pools: dict[tuple, _Pool] = {}
    for graph in parsed:
        if len(graph.objects) != 2:
            continue
        for o in graph.objects:
            for size in (None, o.size):
                pools.setdefault(("list", size), _Pool()).add(o)
        for a, b in itertools.permutations(graph.objects, 2):
            for relation in RELATIONS:
                if relation_holds(a, b, relation, margin):
                    for role, o in (("subject", a), ("object", b)):
                        for size in (None, o.size):
                            pools.setdefault(("relation", relation, role, size), _Pool()).add(o)
    return pools


def _real_figures(pool: _Pool, m: int, rng: np.random.Generator) -> tuple[float, float] | None:
    """Mean centre spread and size spread of ``m`` real objects drawn from ``pool``."""
    if len(pool.centres) < m:
        return None
    centres = np.asarray(pool.centres)
    large = np.asarray(pool.large)
    spreads, sizes = [], []
    for _ in range(REAL_SPREAD_DRAWS):
        rows = rng.choice(len(centres), size=m, replace=False)
        spreads.append(rms_spread(centres[rows]))
        sizes.append(indicator_std(large[rows].tolist()))
    return float(np.mean(spreads)), float(np.mean(sizes))


def _average(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def position_spread(sample_fn: SampleFn, prompts: Sequence[str], samples: int = DIVERSITY_SAMPLES,
                    seed: int = 0, parser: ConvClassifier | None = None,
                    real_scenes: int = REAL_SPREAD_SCENES) -> dict[str, dict[str, object]]:
    """Spread and duplicates of ``samples`` images per prompt (see the module's docstring), for
    ``"list"`` prompts (objects named, no relation) and ``"relation"`` prompts separately; each
    with ``prompts``, ``samples``, ``center_spread`` / ``center_spread_real`` (pixels),
    ``spread_ratio``, ``size_spread`` / ``size_spread_real`` / ``size_ratio`` (over objects whose
    size the caption leaves open), ``bound`` (share of named objects bound, over samples),
    ``duplicates`` and ``duplicate_pairs``. Unreadable prompts are warned about and left out, as
    are prompts that name no object."""
    descriptions = read_prompts(prompts)
    kept = [(p, d) for p, d in zip(prompts, descriptions, strict=True) if d is not None and d.objects]
    if not kept:
        raise MetricInputError("position_spread needs prompts that name objects")
    texts = [p for p, _ in kept]
    generated = draw_samples(sample_fn, texts, samples, seed)  # (K, P, 3, S, S)
    side = int(generated.shape[-1])
    graphs, _ = parse_with_features(generated.flatten(0, 1), parser)
    margin = scoring_margin(side)
    pools = real_spread_pools(side, seed, real_scenes, parser)
    out: dict[str, dict[str, object]] = {}
    for kind in ("list", "relation"):
        rows = [i for i, (_, d) in enumerate(kept) if bool(d.relations) == (kind == "relation")]
        if not rows:
            continue
        spread, spread_real, size, size_real = [], [], [], []
        bound = named = 0
        for i in rows:
            description = kept[i][1]
            chosen = [bind_objects(description, graphs[k * len(kept) + i], margin) for k in range(samples)]
            for j, spec in enumerate(description.objects):
                found = [graphs[k * len(kept) + i].objects[c[j]] for k, c in enumerate(chosen) if c[j] is not None]
                bound, named = bound + len(found), named + samples
                if len(found) < 2:
                    continue
                rng = np.random.default_rng(np.random.SeedSequence([seed, i, j]))
                real = _real_figures(pools.get(_pool_key(description, j), _Pool()), len(found), rng)
                if real is None:
                    continue
                spread.append(rms_spread(np.array([o.center for o in found])))
                spread_real.append(real[0])
                if spec.size is None:
                    size.append(indicator_std([o.size == "large" for o in found]))
                    size_real.append(real[1])
        figures = {
            "center_spread": _average(spread),
            "center_spread_real": _average(spread_real),
            "size_spread": _average(size),
            "size_spread_real": _average(size_real),
        }
        out[kind] = {
            "prompts": len(rows),
            "samples": samples,
            **figures,
            "spread_ratio": ratio(figures["center_spread"], figures["center_spread_real"]),
            "size_ratio": ratio(figures["size_spread"], figures["size_spread_real"]),
            "bound": bound / named,
            **duplicate_summary(generated[:, rows]),
        }
    return out


# ---------------------------------------------------------------------------------------------
# A sampler that draws real scenes for any prompt (the measurements' ceiling and their tests)
# ---------------------------------------------------------------------------------------------


def _apart(a: tuple[float, float, float], b: tuple[float, float, float], gap: float) -> bool:
    """Whether two bounding squares ``(left, top, side)`` are at least ``gap`` apart along x or y
    (the dataset's rule, on the squares' centres)."""
    reach = (a[2] + b[2]) / 2.0 + gap
    dx = abs(a[0] + a[2] / 2.0 - (b[0] + b[2] / 2.0))
    dy = abs(a[1] + a[2] / 2.0 - (b[1] + b[2] / 2.0))
    return dx >= reach or dy >= reach


def _place(description: SceneDescription, rng: np.random.Generator, image_size: int,
           ) -> list[tuple[str, str, str, float, float]] | None:
    """``(colour, shape, size, left, top)`` of each named object, placed as the dataset does
    (uniform quarter-pixel corners, bounding squares at least the gap apart along x or y), sizes
    left open drawn uniformly; None when some object found no room."""
    gap = GAP_AT_64 * image_size / 64.0
    placed: list[tuple[str, str, str, float, float]] = []
    squares: list[tuple[float, float, float]] = []
    for spec in description.objects:
        size = spec.size if spec.size is not None else SIZES[int(rng.integers(len(SIZES)))]
        side = object_side(size, image_size)
        steps = math.floor((image_size - side) * SUBPIXEL)
        for _ in range(_CANDIDATES):
            left, top = (np.floor(rng.random(2) * (steps + 1)) / SUBPIXEL).tolist()
            if all(_apart((left, top, side), other, gap) for other in squares):
                placed.append((spec.color, spec.shape, size, left, top))  # type: ignore[arg-type]
                squares.append((left, top, side))
                break
        else:
            return None
    return placed


def render_descriptions(descriptions: Sequence[SceneDescription | None], seed: int = 0,
                        image_size: int = DEFAULT_IMAGE_SIZE) -> tuple[torch.Tensor, list[SceneGraph]]:
    """Real scenes that satisfy each description, uint8 ``(N, 3, S, S)``, and their graphs: the
    named objects (open sizes drawn uniformly) at positions drawn as the dataset draws them, a stated
    relation holding with the dataset's margin, on one of the dataset's backgrounds; deterministic
    in ``(seed, index)``. A description that names no object (or None) gives a bare background."""
    bank, backgrounds = mask_bank(image_size), background_bank(image_size)
    colors, palette = list(COLORS), np.array(list(COLORS.values()), dtype=np.uint8)
    margin = relation_margin(image_size)
    images = np.empty((len(descriptions), image_size, image_size, 3), dtype=np.uint8)
    graphs = []
    for index, description in enumerate(descriptions):
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        flat = images[index].reshape(-1, 3)
        flat[:] = backgrounds[int(rng.integers(len(backgrounds)))].reshape(-1, 3)
        objects: list[SceneObject] = []
        for _ in range(_ORACLE_TRIES if description is not None and description.objects else 0):
            placed = _place(description, rng, image_size)  # type: ignore[arg-type]
            if placed is None:
                continue
            objects, masks = [], []
            for color, shape, size, left, top in placed:
                ox, oy = math.floor(left), math.floor(top)
                key = (SHAPES.index(shape), SIZES.index(size),
                       round((top - oy) * SUBPIXEL), round((left - ox) * SUBPIXEL))
                x0, y0, x1, y1 = (bank.boxes[key] + np.array([ox, oy, ox, oy])).tolist()
                objects.append(SceneObject(color, shape, size, ((x0 + x1) / 2, (y0 + y1) / 2),
                                           (x0, y0, x1, y1)))
                offsets = bank.pixels[key]
                masks.append(oy * image_size + ox + offsets[offsets >= 0])
            if all(relation_holds(objects[r.subject], objects[r.obj], r.relation, margin)
                   for r in description.relations):  # type: ignore[union-attr]
                for o, pixels in zip(objects, masks, strict=True):
                    flat[pixels] = palette[colors.index(o.color)]
                break
            objects = []
        objects.sort(key=lambda o: (o.center[1], o.center[0]))
        graphs.append(SceneGraph(tuple(objects), image_size))
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), graphs


def oracle_sampler(image_size: int = DEFAULT_IMAGE_SIZE) -> SampleFn:
    """A sampler that draws, for each prompt, a real scene satisfying it
    (:func:`render_descriptions`; an unreadable prompt gives a bare background): the ceiling of
    every score here, and a spread ratio near 1."""

    def sample(prompts: list[str], seed: int) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the scoring warns about unreadable prompts
            descriptions = read_prompts(prompts)
        return uint8_to_float(render_descriptions(descriptions, seed, image_size)[0])

    return sample


# ---------------------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------------------


def _sample_set(sample_fn: SampleFn, prompt_set: ScenePromptSet, seed: int) -> torch.Tensor:
    images = sample_fn(list(prompt_set.prompts), seed)
    expected = (len(prompt_set.prompts), 3, prompt_set.image_size, prompt_set.image_size)
    if not isinstance(images, torch.Tensor) or tuple(images.shape) != expected:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise MetricInputError(
            f"the sampler must return one image per prompt of {prompt_set.name!r}, {expected}; got {shape}"
        )
    return images.detach().cpu()


def diversity_prompts_of(prompt_set: ScenePromptSet, per_kind: int) -> list[str]:
    """The first ``per_kind`` list prompts and the first ``per_kind`` relation prompts of a set."""
    kinds = [d.kind if d is not None else None for d in prompt_set.descriptions]
    listed = [p for p, k in zip(prompt_set.prompts, kinds, strict=True) if k == "list"][:per_kind]
    related = [p for p, k in zip(prompt_set.prompts, kinds, strict=True) if k == "relation"][:per_kind]
    return listed + related


@functools.lru_cache(maxsize=4)
def _shipped_parser_reference(num: int, seed: int, image_size: int,
                              holdout: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    """The FD feature of the real scenes of each prompt set, read by the shipped parser."""
    sets = scene_t2i_prompt_sets(num, seed, image_size, holdout)
    return {name: scene_features(s.real_images) for name, s in sets.items()}


def evaluate_scene_t2i(sample_fn: SampleFn, num: int = 500, seed: int = 0,
                       image_size: int = DEFAULT_IMAGE_SIZE,
                       holdout: Sequence[tuple[str, str]] | None = None,
                       diversity_prompts: int = DIVERSITY_PROMPTS,
                       metrics: Sequence[str] = SCENE_T2I_METRICS,
                       parser: ConvClassifier | None = None) -> dict[str, object]:
    """The evaluation of a ``scenes`` text-to-image sampler, ``sample_fn(prompts, seed)`` -> one
    ``(3, S, S)`` image in [-1, 1] per prompt: ``{"image_size", "num_per_set", "seed", "metrics",
    "sets": {name: row}, "diversity": {"list": ..., "relation": ...}}``.

    ``metrics`` from ``scene`` (each set's :func:`score_graphs` row), ``fd`` (``fd`` and ``fd_n``
    in each row: against the real scenes of the set's prompts) and ``diversity``
    (:func:`position_spread` of the first ``diversity_prompts`` list and relation prompts of
    ``seen``, 10 seeds each)."""
    unknown = [m for m in metrics if m not in SCENE_T2I_METRICS]
    if unknown or not metrics:
        raise MetricInputError(
            f"scenes text-to-image metrics are {', '.join(SCENE_T2I_METRICS)}; got {list(metrics)}"
        )
    holdout = DEFAULT_HOLDOUT if holdout is None else tuple(tuple(p) for p in holdout)
    # The real side of FD is the same for every sampler: with the shipped parser, read it once.
    parser = parser if parser is not None else load_scene_parser()
    shipped = parser is load_scene_parser()
    reference = (_shipped_parser_reference(num, seed, image_size, holdout)
                 if shipped and "fd" in metrics else None)
    sets = scene_t2i_prompt_sets(num, seed, image_size, holdout)
    out: dict[str, object] = {"image_size": image_size, "num_per_set": num, "seed": seed,
                              "metrics": [m for m in SCENE_T2I_METRICS if m in metrics]}
    if "scene" in metrics or "fd" in metrics:
        rows: dict[str, dict[str, object]] = {}
        for name, prompt_set in sets.items():
            graphs, features = parse_with_features(_sample_set(sample_fn, prompt_set, seed), parser)
            row = score_graphs(graphs, prompt_set) if "scene" in metrics else {"n": len(graphs)}
            if "fd" in metrics:
                real = reference[name] if reference is not None else scene_features(prompt_set.real_images, parser)
                row["fd"] = fid_from_features(real, features)
                row["fd_n"] = len(graphs)
            rows[name] = row
        out["sets"] = rows
    if "diversity" in metrics:
        prompts = diversity_prompts_of(sets["seen"], max(1, diversity_prompts))
        out["diversity"] = position_spread(sample_fn, prompts, DIVERSITY_SAMPLES, seed, parser)
    return out


def _percent(value: object) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"  # type: ignore[arg-type]


def _number(value: object, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def format_scene_t2i(result: dict) -> str:
    """The tables of :func:`evaluate_scene_t2i`: one row per prompt set, one per diversity kind."""
    lines = []
    if "sets" in result:
        lines.append(f"{'set':<9}{'n':>6}{'count':>8}{'binding':>9}{'relation':>10}{'correct':>9}{'fd':>9}")
        for name, row in result["sets"].items():
            lines.append(
                f"{name:<9}{row['n']:>6}{_percent(row.get('count')):>8}{_percent(row.get('binding')):>9}"
                f"{_percent(row.get('relation')):>10}{_percent(row.get('correct')):>9}"
                f"{_number(row.get('fd'), 3):>9}"
            )
        for name, row in result["sets"].items():
            if "count_by_objects" in row:
                rungs = ", ".join(f"{n}: {_percent(v)}" for n, v in row["count_by_objects"].items())
                lines.append(f"{name} count right by objects named: {rungs}")
        lines.append("(percent; relation among relation prompts; fd in the scene parser's features "
                     "against the real scenes of the same prompts, n images each side)")
    if "diversity" in result:
        if lines:
            lines.append("")
        lines.append(f"{'diversity':<10}{'prompts':>8}{'centre px':>11}{'real':>7}{'ratio':>7}"
                     f"{'size std':>10}{'real':>7}{'ratio':>7}{'bound':>8}{'dup':>7}")
        for kind, row in result["diversity"].items():
            lines.append(
                f"{kind:<10}{row['prompts']:>8}{_number(row['center_spread']):>11}"
                f"{_number(row['center_spread_real']):>7}{_number(row['spread_ratio']):>7}"
                f"{_number(row['size_spread']):>10}{_number(row['size_spread_real']):>7}"
                f"{_number(row['size_ratio']):>7}{_percent(row['bound']):>8}{_percent(row['duplicates']):>7}"
            )
        samples = next(iter(result["diversity"].values()), {}).get("samples", DIVERSITY_SAMPLES)
        lines.append(f"({samples} seeds per prompt; ratios generated / real, target >= 0.7; bound and "
                     "dup (prompts with two identical samples, target 0) in percent)")
    return "\n".join(lines)


def evaluate_scene_t2i_run(run, num: int = 500, seed: int = 0,
                           diversity_prompts: int = DIVERSITY_PROMPTS,
                           metrics: Sequence[str] = SCENE_T2I_METRICS) -> dict[str, object]:
    """:func:`evaluate_scene_t2i` of a loaded ``scenes`` text-to-image run (anything with ``config``
    and ``sample(n, seed=..., prompts=...)``), at the run's image size and with its held-out pairs."""
    holdout = parse_holdout(run.config.data.holdout) or DEFAULT_HOLDOUT
    return evaluate_scene_t2i(lambda prompts, s: run.sample(1, seed=s, prompts=prompts), num, seed,
                              run.config.data.image_size, holdout, diversity_prompts, metrics)
