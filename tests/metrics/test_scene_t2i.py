"""The exact evaluation of text-to-image on ``scenes`` (issue 16), checked with samplers whose
answers are known: an oracle that draws real scenes satisfying each prompt (scores 1, spread as
the data's), noise (scores 0), and one fixed image per prompt (no spread, all duplicates); and
the same diversity figure on ``shapes``."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ganfuse.cli import main
from ganfuse.data.base import uint8_to_float
from ganfuse.data.scenes import (
    DEFAULT_HOLDOUT,
    SceneGraph,
    SceneObject,
    generate_scenes,
    parse_caption,
)
from ganfuse.data.shapes import MAX_JITTER_FRACTION, ShapesDataset, render_shapes
from ganfuse.data.shapes import parse_caption as parse_shapes_caption
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.scene_t2i import (
    FEATURE_DIM,
    ScenePromptSet,
    bind_objects,
    diversity_prompts_of,
    evaluate_scene_t2i,
    format_scene_t2i,
    oracle_sampler,
    parse_with_features,
    position_spread,
    render_descriptions,
    scene_fd,
    scene_t2i_prompt_sets,
    score_scene_t2i,
)
from ganfuse.metrics.scenes import add_pixel_noise, parse_scenes
from ganfuse.metrics.t2i_diversity import duplicate_pairs, rms_spread, shapes_diversity

NUM = 40
REAL_SCENES = 1500  # real test images behind the spread reference (about 400 two-object scenes)


@pytest.fixture(scope="module")
def sets():
    return scene_t2i_prompt_sets(NUM, seed=0, image_size=64)


def noise_sampler(prompts, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(len(prompts), 3, 64, 64, generator=generator) * 2 - 1


def named_pairs(prompt: str) -> set[tuple[str, str]]:
    return {(o.color, o.shape) for o in parse_caption(prompt).objects}


# ---------------------------------------------------------------------------------------------
# Prompt sets
# ---------------------------------------------------------------------------------------------


def test_prompt_sets_are_deterministic_of_the_asked_sizes_and_kinds(sets):
    again = scene_t2i_prompt_sets(NUM, seed=0, image_size=64)
    other = scene_t2i_prompt_sets(NUM, seed=1, image_size=64)
    assert list(sets) == ["seen", "heldout", "ladder"]
    for name, prompt_set in sets.items():
        assert prompt_set.prompts == again[name].prompts
        assert torch.equal(prompt_set.real_images, again[name].real_images)
        assert prompt_set.prompts != other[name].prompts
        assert len(prompt_set.prompts) == NUM and prompt_set.real_images.shape == (NUM, 3, 64, 64)
        assert all(d is not None for d in prompt_set.descriptions)
    for name in ("seen", "heldout"):
        kinds = [d.kind for d in sets[name].descriptions]
        assert kinds.count("list") == NUM // 2 and kinds.count("relation") == NUM // 2
        assert all(len(d.objects) == 2 for d in sets[name].descriptions)
    named = [len(d.objects) for d in sets["ladder"].descriptions]
    assert [named.count(n) for n in (1, 2, 3, 4)] == [NUM // 4] * 4
    # the prompts are the dataset's own captions of the real scenes stored with them
    assert score_scene_t2i(sets["seen"].real_images, sets["seen"])["correct"] == 1.0


def test_heldout_prompts_all_name_a_heldout_pair_and_seen_ones_none(sets):
    held = set(DEFAULT_HOLDOUT)
    assert all(named_pairs(p) & held for p in sets["heldout"].prompts)
    assert not any(named_pairs(p) & held for p in sets["seen"].prompts + sets["ladder"].prompts)
    custom = scene_t2i_prompt_sets(8, seed=0, holdout=[("red", "circle")])
    assert all(("red", "circle") in named_pairs(p) for p in custom["heldout"].prompts)


def test_prompt_sets_refuse_too_few_prompts():
    with pytest.raises(MetricInputError, match="at least 4"):
        scene_t2i_prompt_sets(3)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def test_the_oracle_scores_one_and_noise_zero(sets):
    oracle = oracle_sampler(64)
    for name, prompt_set in sets.items():
        good = score_scene_t2i(oracle(prompt_set.prompts, 5), prompt_set)
        assert (good["count"], good["binding"], good["correct"]) == (1.0, 1.0, 1.0), (name, good)
        assert good["relation"] == (1.0 if name != "ladder" else None)
        bad = score_scene_t2i(noise_sampler(prompt_set.prompts, 5), prompt_set)
        assert bad["binding"] <= 0.05 and bad["count"] <= 0.1 and bad["correct"] <= 0.05, (name, bad)
    ladder = score_scene_t2i(oracle(sets["ladder"].prompts, 1), sets["ladder"])
    assert ladder["count_by_objects"] == {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0}


def test_the_oracle_also_scores_one_at_32_pixels():
    small = scene_t2i_prompt_sets(12, seed=2, image_size=32)["seen"]
    images = oracle_sampler(32)(small.prompts, 0)
    assert images.shape == (12, 3, 32, 32)
    assert score_scene_t2i(images, small)["correct"] == 1.0


def test_scores_read_the_wrong_binding_count_and_relation():
    prompt = "a red circle is left of a blue square"
    extra = dataclasses.replace(
        parse_caption("a red circle is right of a blue square"),
        objects=parse_caption("a red circle, a blue square and a green star").objects,
    )
    scenes = [parse_caption(prompt), parse_caption("a blue circle is left of a red square"),
              parse_caption("a red circle is right of a blue square"), extra]
    images, graphs = render_descriptions(scenes, seed=0, image_size=64)
    assert [len(g.objects) for g in graphs] == [2, 2, 2, 3]
    result = score_scene_t2i(images, [prompt] * 4)
    assert result["n"] == 4 and result["n_relation"] == 4
    assert result["binding"] == 0.75  # the swapped colours fail
    assert result["relation"] == 0.25  # only the true scene has the circle on the left
    assert result["count"] == 0.75  # the three-object scene has one object too many
    assert result["correct"] == 0.25


def test_prompts_outside_the_world_are_warned_about_and_counted_wrong(sets):
    prompts = ["a purple circle and a blue square", *sets["seen"].prompts[:3]]
    images = oracle_sampler(64)(prompts, 0)
    with pytest.warns(UserWarning, match="1 prompt.*purple circle"):
        result = score_scene_t2i(images, prompts)
    assert result["unreadable"] == 1 and result["n"] == 4
    assert result["binding"] == 0.75 and result["correct"] == 0.75


def test_bind_objects_prefers_the_assignment_where_the_relation_holds():
    def obj(color, shape, x, y):
        return SceneObject(color, shape, "small", (x + 6.0, y + 6.0), (x, y, x + 12, y + 12))

    graph = SceneGraph((obj("red", "circle", 40, 2), obj("red", "circle", 2, 30),
                        obj("blue", "square", 24, 30)), 64)
    left = parse_caption("a red circle is left of a blue square")
    assert bind_objects(left, graph) == [1, 2]
    right = parse_caption("a red circle is right of a blue square")
    assert bind_objects(right, graph) == [0, 2]
    partial = parse_caption("there are a red circle and a green star")
    assert bind_objects(partial, graph) == [0, None]


# ---------------------------------------------------------------------------------------------
# Parser features and FD
# ---------------------------------------------------------------------------------------------


def test_parse_with_features_reads_what_parse_scenes_reads():
    images, _, _ = generate_scenes(48, 3, "test", 64, captions=False)
    noisy = add_pixel_noise(images, np.random.default_rng(0), max_sigma=40)
    for batch in (images, noisy):
        graphs, features = parse_with_features(batch)
        assert graphs == parse_scenes(batch)
        assert features.shape == (48, FEATURE_DIM) and features.dtype == torch.float64
    counts = features[:, 64 + 8 + 5 + 2]
    assert counts.tolist() == [float(len(g.objects)) for g in graphs]
    empty = parse_with_features(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))[1]
    assert float(empty.abs().sum()) == 0.0


def test_fd_of_real_against_real_is_small_and_of_noise_large():
    a = torch.from_numpy(generate_scenes(100, 0, "test", 64, captions=False)[0]).permute(0, 3, 1, 2)
    b = torch.from_numpy(generate_scenes(100, 1, "test", 64, captions=False)[0]).permute(0, 3, 1, 2)
    same = scene_fd(b, a)
    noise = scene_fd(noise_sampler(range(100), 0), a)
    assert same < 3.0 and noise > 50.0, (same, noise)
    assert scene_fd(a, a) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Diversity
# ---------------------------------------------------------------------------------------------


def test_the_oracle_spreads_as_the_data_and_a_fixed_image_not_at_all(sets):
    prompts = diversity_prompts_of(sets["seen"], 10)
    assert len(prompts) == 20
    oracle = oracle_sampler(64)
    real = position_spread(oracle, prompts, samples=10, seed=0, real_scenes=REAL_SCENES)
    fixed = position_spread(lambda p, s: oracle(p, 0), prompts, samples=10, seed=0,
                            real_scenes=REAL_SCENES)
    for kind in ("list", "relation"):
        row = real[kind]
        assert row["prompts"] == 10 and row["bound"] == 1.0 and row["duplicates"] == 0.0
        assert 0.85 <= row["spread_ratio"] <= 1.15, (kind, row)
        assert 0.8 <= row["size_ratio"] <= 1.2, (kind, row)
        assert 8.0 <= row["center_spread_real"] <= 25.0  # pixels of a 64-pixel canvas
        still = fixed[kind]
        assert still["center_spread"] == 0.0 and still["spread_ratio"] == 0.0
        assert still["size_spread"] == 0.0 and still["duplicates"] == 1.0
        assert still["duplicate_pairs"] == 1.0


def test_noise_binds_nothing_and_unreadable_prompts_are_left_out(sets):
    prompts = ["a purple circle and a blue square", *diversity_prompts_of(sets["seen"], 2)]
    with pytest.warns(UserWarning, match="purple"):
        result = position_spread(noise_sampler, prompts, samples=3, seed=0, real_scenes=REAL_SCENES)
    assert result["list"]["prompts"] == 2 and result["relation"]["prompts"] == 2
    assert result["list"]["bound"] == 0.0 and result["list"]["spread_ratio"] is None


def test_duplicates_and_spread_statistics():
    image = torch.zeros(3, 8, 8)
    nudged = image.clone()
    nudged[0, 0, 0] = 0.01  # far below 1/255 on average
    other = image + 0.5
    same, pairs = duplicate_pairs(torch.stack([image, nudged, other]))
    assert (same, pairs) == (1, 3)
    assert rms_spread(np.array([[0.0, 0.0], [2.0, 0.0]])) == pytest.approx(1.0)
    assert rms_spread(np.array([[3.0, 3.0]])) == 0.0


def test_shapes_diversity_of_jittered_real_renders_and_of_one_image_per_prompt():
    data = ShapesDataset("test", num=20, seed=0, image_size=32)
    by_prompt = dict(zip(data.captions, data.images, strict=True))

    def jittered(prompts, seed):
        rng = np.random.default_rng(1000 + seed)
        jitters = (rng.random((len(prompts), 2)) * 2 - 1) * MAX_JITTER_FRACTION
        attrs = [parse_shapes_caption(p) for p in prompts]
        return uint8_to_float(torch.from_numpy(render_shapes(attrs, 32, jitters)).permute(0, 3, 1, 2))

    def copies(prompts, seed):
        return uint8_to_float(torch.stack([by_prompt[p] for p in prompts]))

    real = shapes_diversity(jittered, num_prompts=20, samples=10, seed=0, image_size=32)
    assert real["bound"] == 1.0
    assert 0.8 <= real["spread_ratio"] <= 1.25, real
    assert 0.3 <= real["center_spread_real"] <= 1.5  # +-1 pixel of jitter at 32 pixels
    # +-1 pixel of jitter gives few distinct renders: the data itself repeats an image now and then
    assert 0.05 <= real["duplicate_pairs_real"] <= 0.25
    assert abs(real["duplicate_pairs"] - real["duplicate_pairs_real"]) <= 0.06, real
    still = shapes_diversity(copies, num_prompts=20, samples=10, seed=0, image_size=32)
    assert still["spread_ratio"] == 0.0 and still["duplicates"] == 1.0
    assert still["duplicate_pairs"] == 1.0


# ---------------------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------------------


def test_evaluate_reports_every_part_as_json_and_a_table():
    result = evaluate_scene_t2i(oracle_sampler(64), num=16, seed=0, diversity_prompts=4)
    json.dumps(result, allow_nan=False)
    assert set(result["sets"]) == {"seen", "heldout", "ladder"}
    for row in result["sets"].values():
        assert row["correct"] == 1.0 and row["fd_n"] == 16 and 0.0 <= row["fd"] < 10.0
    assert set(result["diversity"]) == {"list", "relation"}
    assert result["diversity"]["list"]["prompts"] == 4
    table = format_scene_t2i(result)
    assert "heldout" in table and "relation" in table and "count right by objects" in table
    only = evaluate_scene_t2i(noise_sampler, num=8, seed=0, metrics=["fd"])
    assert set(only) >= {"sets"} and "diversity" not in only
    assert set(only["sets"]["seen"]) == {"n", "fd", "fd_n"} and only["sets"]["seen"]["fd"] > 30.0
    assert math.isfinite(only["sets"]["ladder"]["fd"])
    format_scene_t2i(only)
    with pytest.raises(MetricInputError, match="scene, diversity, fd"):
        evaluate_scene_t2i(noise_sampler, num=8, metrics=["attr"])


def test_a_sampler_of_the_wrong_size_is_refused():
    with pytest.raises(MetricInputError, match="one image per prompt"):
        evaluate_scene_t2i(noise_sampler, num=8, image_size=32, metrics=["scene"])


def test_prompt_set_from_any_prompts_keeps_unreadable_ones_as_none():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prompt_set = ScenePromptSet.from_prompts("mine", ["a red circle", "a purple circle"])
    assert prompt_set.descriptions[1] is None and len(caught) == 1
    assert prompt_set.real_images.shape == (0, 3, 64, 64)


# ---------------------------------------------------------------------------------------------
# ganfuse evaluate RUN
# ---------------------------------------------------------------------------------------------


class FakeRun:
    """What the evaluation reads of a loaded text-to-image run: its config, step and sampler."""

    def __init__(self, dataset: str, image_size: int, sampler):
        data = SimpleNamespace(name=dataset, image_size=image_size, holdout=None)
        self.config = SimpleNamespace(data=data)
        self.step = 7
        self._sampler = sampler

    def sample(self, n, seed=0, prompts=None):
        assert n == 1
        return self._sampler(list(prompts), seed)


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """``ganfuse evaluate`` on a folder that reads as a text-to-image run of the given dataset."""
    import ganfuse.cli.evaluate as command
    import ganfuse.run

    def install(dataset: str, run: FakeRun) -> str:
        monkeypatch.setattr(command, "_t2i_dataset", lambda source: dataset)
        monkeypatch.setattr(ganfuse.run, "load_run", lambda source: run)
        return str(tmp_path)

    return install


def test_evaluate_cli_dispatches_a_scenes_run_to_the_exact_judge(fake_run, capsys):
    source = fake_run("scenes", FakeRun("scenes", 64, oracle_sampler(64)))
    assert main(["evaluate", source, "--num", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 7 and result["dataset"] == "scenes" and result["num_per_set"] == 8
    assert result["metrics"] == ["scene", "diversity", "fd"]
    assert all(row["correct"] == 1.0 and row["fd_n"] == 8 for row in result["sets"].values())
    assert result["diversity"]["relation"]["prompts"] == 4  # num // 2 relation prompts in seen
    assert main(["evaluate", source, "--num", "8", "--metrics", "scene"]) == 0
    table = capsys.readouterr().out
    assert "ladder" in table and "diversity" not in table


@pytest.mark.parametrize("argv,message", [
    (["--metrics", "attr"], "takes scene,diversity,fd"),
    (["--num", "3"], "--num must be a whole number from 4"),
    (["--rprec-model", "zs"], "--rprec-model scores shapes"),
])
def test_evaluate_cli_scenes_errors_name_the_problem(fake_run, capsys, argv, message):
    source = fake_run("scenes", FakeRun("scenes", 64, noise_sampler))
    assert main(["evaluate", source, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_evaluate_cli_diversity_on_a_shapes_run(fake_run, capsys):
    data = ShapesDataset("test", num=12, seed=0, image_size=32)
    by_prompt = dict(zip(data.captions, data.images, strict=True))
    still = FakeRun("shapes", 32, lambda prompts, seed: uint8_to_float(
        torch.stack([by_prompt[p] for p in prompts])))
    source = fake_run("shapes", still)
    assert main(["evaluate", source, "--num", "12", "--metrics", "diversity", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "sets" not in result
    row = result["diversity"]
    assert row["prompts"] == 12 and row["spread_ratio"] == 0.0 and row["duplicates"] == 1.0
    assert main(["evaluate", source, "--num", "12", "--metrics", "diversity"]) == 0
    assert "identical" in capsys.readouterr().out


def test_the_evaluate_command_reads_the_dataset_of_a_t2i_run(tmp_path):
    from importlib import resources

    from ganfuse.cli.evaluate import _t2i_dataset

    preset = resources.files("ganfuse") / "presets" / "shapes-t2i.yaml"
    (tmp_path / "config.yaml").write_text(preset.read_text())
    assert _t2i_dataset(str(tmp_path)) == "shapes"
    assert _t2i_dataset(str(tmp_path / "missing")) is None
