"""How well a `scenes-t2i` generator draws each object's outline, apart from everything else.

For each object a caption names, the slot the slot supervision matches to it (the Hungarian
matching of ``ganfuse.train.objects.slot_loss``) is drawn alone: its mask window (24 x 24, the
supervision's own window, at full resolution) is painted in the named colour on a plain
background in the middle of an empty 64 x 64 canvas, and the exact judge (the scene parser) reads
it. "Read right" is the share of those objects parsed as exactly one object of the named shape.
So the figure leaves out layout, overlaps, colours and the other objects: it isolates the outline,
which limits binding (benchmarks/scenes_t2i.md). The mask cost is the slot supervision's own
(nats per pixel above the shapes' entropy).

    python benchmarks/scenes_outlines.py --run RUN [RUN ...]        # a trained run's EMA generator
    python benchmarks/scenes_outlines.py --fit 3000 [--lr 1e-3] [--lr-outline 1e-3]
        # the preset's G trained by the slot supervision alone (no discriminator), from scratch

Both at one thread, fp32, training captions drawn with seed 0 (16 batches of 32 captions).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ganfuse.config import load_config  # noqa: E402
from ganfuse.data.scenes import BACKGROUNDS, SHAPES  # noqa: E402
from ganfuse.metrics.scenes import parse_scenes  # noqa: E402
from ganfuse.train.objectives import TextToImageObjective  # noqa: E402
from ganfuse.train.objects import slot_costs, slot_loss  # noqa: E402

BATCH = 32
BATCHES = 16


def _slots(g, objective: TextToImageObjective, idx: torch.Tensor, z: torch.Tensor, open_noise: bool):
    g(z, objective.conditions[idx])
    windows, colours, _, opens = g.last_slots
    stated = objective.objects.stated[idx]
    return windows, colours, stated, opens if open_noise else None


def read_outlines(g, objective, open_noise: bool, seed: int = 0) -> dict[str, float]:
    """Each named object's matched slot drawn alone and parsed: read right per shape, overall, and
    the mean mask cost."""
    gen = torch.Generator().manual_seed(seed)
    bg = torch.tensor(list(BACKGROUNDS.values())[0], dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    right, shapes, costs = [], [], []
    g.train()  # the windows are kept in training mode only
    with torch.no_grad():
        for _ in range(BATCHES):
            idx = torch.randint(0, len(objective.captions), (BATCH,), generator=gen)
            z = torch.randn(BATCH, g.z_dim, generator=gen)
            windows, colours, stated, opens = _slots(g, objective, idx, z, open_noise)
            _, _, (image, slot, obj) = slot_loss(windows, colours, stated, objective.slot_shapes,
                                                 objective.slot_palette, opens)
            mask_cost, _, _ = slot_costs(windows, colours, stated, objective.slot_shapes, objective.slot_palette, opens)
            share = torch.sigmoid(windows[image, slot].float())[:, None]
            colour = objective.slot_palette[stated[image, obj, 0]][:, :, None, None]
            canvas = bg.repeat(len(image), 1, 64, 64)
            w = share.shape[-1]
            lo = (64 - w) // 2
            canvas[:, :, lo:lo + w, lo:lo + w] = share * colour + (1 - share) * bg
            named = stated[image, obj, 1]
            for graph, shape in zip(parse_scenes(canvas), named.tolist(), strict=True):
                right.append(len(graph.objects) == 1 and graph.objects[0].shape == SHAPES[shape])
            shapes += named.tolist()
            costs.append(mask_cost[image, slot, obj])
    right_t, shapes_t = torch.tensor(right, dtype=torch.float32), torch.tensor(shapes)
    out = {name: float(right_t[shapes_t == i].mean()) for i, name in enumerate(SHAPES) if (shapes_t == i).any()}
    out["all"] = float(right_t.mean())
    out["mask_cost"] = float(torch.cat(costs).mean())
    out["objects"] = len(right)
    return out


def measure_run(path: str) -> dict[str, float]:
    """A trained run's EMA generator, with the run's own config."""
    from ganfuse.run import load_run
    from ganfuse.train.objects import SLOT_WINDOW

    run = load_run(path)
    config = run.config
    config.train.precision = "fp32"
    g = run.generator
    g.slot_window = SLOT_WINDOW
    return read_outlines(g, TextToImageObjective(config, torch.device("cpu"), progress=False), config.text.open_size_noise)


def fit(steps: int, lr: float | None, lr_outline: float | None) -> dict[str, float]:
    """The preset's G trained by the slot supervision alone, Adam with the preset's betas."""
    config = load_config("scenes-t2i", ["train.precision=fp32"])
    objective = TextToImageObjective(config, torch.device("cpu"), progress=False)
    g, _ = objective.build_models(3)
    open_noise = config.text.open_size_noise
    t = config.train
    outline = {id(p) for p in g.outline_parameters()}
    rest = [p for p in g.parameters() if id(p) not in outline]
    base = lr or t.lr_g
    opt = torch.optim.Adam([{"params": rest}, {"params": [p for p in g.parameters() if id(p) in outline],
                                               "lr": lr_outline or base}], lr=base, betas=(t.beta1, t.beta2))
    gen = torch.Generator().manual_seed(1)
    g.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(objective.captions), (BATCH,), generator=gen)
        z = torch.randn(BATCH, g.z_dim, generator=gen)
        windows, colours, stated, opens = _slots(g, objective, idx, z, open_noise)
        loss, report, _ = slot_loss(windows, colours, stated, objective.slot_shapes, objective.slot_palette, opens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(f"step {step}: slot mask cost {float(report['slot_mask']):.4f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    return read_outlines(g, objective, open_noise)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", nargs="+", help="trained scenes-t2i runs")
    p.add_argument("--fit", type=int, help="steps of the slot supervision alone, from scratch")
    p.add_argument("--lr", type=float, help="--fit: G's learning rate (default the preset's train.lr_g)")
    p.add_argument("--lr-outline", type=float, help="--fit: the outline decoder's (default --lr)")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [(path, measure_run(path)) for path in args.run or []]
    if args.fit:
        rows.append((f"fit {args.fit} steps, lr {args.lr or 'preset'}, outline lr {args.lr_outline or '='}",
                     fit(args.fit, args.lr, args.lr_outline)))
    for name, r in rows:
        shapes = " ".join(f"{s} {r[s]:.3f}" for s in SHAPES if s in r)
        print(f"{name}: read right {r['all']:.3f} of {r['objects']} ({shapes}); mask cost {r['mask_cost']:.4f}")


if __name__ == "__main__":
    main()
