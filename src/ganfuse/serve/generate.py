"""The "Generate" tab's work, free of any web framework: images from the GAN runs given to serve.

A run is asked according to its :func:`~ganfuse.run_folders.generation_mode`:

- ``unconditional``: number, seed, truncation;
- ``class``: the same plus a class (or random classes);
- ``text``: the same plus a prompt, passed as ``run.sample(n, seed=..., prompts=[...])`` (the
  text-to-image Run's API) and ``run.from_latents(z, prompts=[...])`` for interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganfuse import run_images
from ganfuse.errors import UserError
from ganfuse.inputs import check_count, check_seed, check_truncation
from ganfuse.run import load_run
from ganfuse.run_folders import GanRunInfo
from ganfuse.serve.limits import LimitError, Limits, check_text

RANDOM_CLASS = "random"
DISPLAY_SIDE = 128  # gallery images are upscaled to about this side, with nearest neighbours
# The fields' names in the messages of the shared checks (ganfuse.inputs), which the command line
# words the same way after its option's name.
NUMBER, STEPS, SEED, TRUNCATION = "Number of images", "Interpolation steps", "Seed", "Truncation"


def field_seed(value: float | int | None) -> int:
    """The Seed field: empty is 0, else :func:`ganfuse.inputs.check_seed`."""
    return 0 if value is None or value == "" else check_seed(value, SEED)


def field_truncation(value: float | int | None) -> float | None:
    """The Truncation slider: 0 (or empty) is off, else :func:`ganfuse.inputs.check_truncation`."""
    if value is None or value == "" or value == 0:
        return None
    return check_truncation(value, TRUNCATION)


@dataclass
class LoadedRun:
    info: GanRunInfo
    run: object  # ganfuse.run.Run


def upscale(pixels: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> about ``side`` pixels a side, by an integer nearest-neighbour factor."""
    factor = max(1, side // max(pixels.shape[:2]))
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


class GenerateService:
    """Loads every GAN run once; answers generate and interpolate requests within ``limits``."""

    def __init__(self, runs: list[GanRunInfo], limits: Limits, device: str = "cpu"):
        self.limits = limits
        self.runs: dict[str, LoadedRun] = {}
        for info in runs:
            if not info.has_checkpoint:
                raise UserError(
                    f"{info.path} has no checkpoint yet; train it first (ganfuse train ... --out {info.path})"
                )
            self.runs[info.name] = LoadedRun(info, load_run(info.path, device=device))

    @property
    def names(self) -> list[str]:
        return list(self.runs)

    def mode(self, name: str) -> str:
        return self._get(name).info.mode

    def class_choices(self, name: str) -> list[str]:
        """``["random", "0: name0", ...]`` for a class-conditional run, ``[]`` otherwise."""
        run = self._get(name).run
        if not run.num_classes:
            return []
        names = run.class_names or [str(k) for k in range(run.num_classes)]
        return [RANDOM_CLASS] + [f"{k}: {n}" for k, n in enumerate(names)]

    def describe(self, name: str) -> str:
        loaded = self._get(name)
        run, info = loaded.run, loaded.info
        what = {
            "class": f"class-conditional, {run.num_classes} classes",
            "text": "text-to-image",
            "unconditional": "unconditional",
        }[info.mode]
        return f"**{name}**: {what}, step {run.step:,}, preset {info.config.get('preset', '?')} ({Path(info.path).name})"

    def _get(self, name: str | None) -> LoadedRun:
        if not self.runs:
            raise LimitError(
                "no GAN run was given to ganfuse serve; start it with a run folder from ganfuse train"
            )
        if name is None or name == "":
            return next(iter(self.runs.values()))
        if name not in self.runs:
            raise LimitError(f"unknown run {name!r}; choose one of {', '.join(self.runs)}")
        return self.runs[name]

    def _class_label(self, loaded: LoadedRun, choice: str | None) -> int | None:
        if loaded.info.mode != "class" or not choice or choice == RANDOM_CLASS:
            return None
        head = str(choice).split(":", 1)[0].strip()
        if not head.isdigit() or not 0 <= int(head) < loaded.run.num_classes:
            raise LimitError(f"unknown class {choice!r}; choose one from the list")
        return int(head)

    def _prompt(self, loaded: LoadedRun, prompt: str | None) -> str | None:
        text = check_text(prompt, self.limits)
        if loaded.info.mode != "text":
            return None
        if not text:
            raise LimitError("type a prompt: this run generates images from text")
        return text

    @torch.no_grad()
    def generate(
        self,
        name: str | None,
        number: float | int | None,
        seed: float | int | None,
        truncation: float | None,
        class_choice: str | None = None,
        prompt: str | None = None,
    ) -> list[np.ndarray]:
        """``number`` images as ``(H, W, 3)`` uint8 arrays, upscaled for display."""
        loaded = self._get(name)
        n = check_count(NUMBER, number, self.limits.max_images)
        seed_value, trunc = field_seed(seed), field_truncation(truncation)
        text = self._prompt(loaded, prompt)
        if text is not None:
            batch = loaded.run.sample(n, seed=seed_value, prompts=[text] * n, truncation=trunc)
        else:
            label = self._class_label(loaded, class_choice)
            batch = loaded.run.sample(n, seed=seed_value, class_label=label, truncation=trunc)
        return [upscale(p) for p in run_images.rgb_pixels(batch)]

    @torch.no_grad()
    def interpolate(
        self,
        name: str | None,
        steps: float | int | None,
        seed: float | int | None,
        truncation: float | None,
        class_choice: str | None = None,
        prompt: str | None = None,
    ) -> np.ndarray:
        """One strip image ``(H, W, 3)`` uint8 of ``steps`` images between two latents of ``seed``."""
        loaded = self._get(name)
        n = check_count(STEPS, steps, self.limits.max_interpolation_steps, minimum=2)
        seed_value, trunc = field_seed(seed), field_truncation(truncation)
        text = self._prompt(loaded, prompt)
        label = self._class_label(loaded, class_choice)
        strip = run_images.interpolation_strip(
            loaded.run, n, seed_value, label, text, trunc
        )
        return np.asarray(run_images.grid_image(strip, ncol=n, scale=3))
