"""The rows of a text-to-image run's sample grids."""

from __future__ import annotations

from ganfuse.data.emoji import EmojiDataset
from ganfuse.train.objectives import EMOJI_GRID_PROMPTS, GRID_PROMPTS, GRID_ROWS, grid_prompts


def test_built_in_worlds_have_fixed_rows_and_emoji_rows_are_trained_names():
    assert grid_prompts("shapes", ["anything"]) == GRID_PROMPTS
    assert grid_prompts("emoji", []) == EMOJI_GRID_PROMPTS
    trained = set(EmojiDataset("train", image_size=32).names)
    assert set(EMOJI_GRID_PROMPTS) <= trained  # never a held-out emoji shown as if trained on


def test_a_folder_shows_its_own_captions_whatever_their_order():
    captions = [f"caption {i}" for i in range(20)] + ["caption 3"] * 5
    rows = grid_prompts("my_folder", captions)
    assert len(rows) == GRID_ROWS and len(set(rows)) == GRID_ROWS and set(rows) <= set(captions)
    assert grid_prompts("my_folder", captions[::-1]) == rows  # file order does not matter
    assert grid_prompts("my_folder", ["my logo"] * 10) == ("my logo",)
