"""The exact evaluation of text-to-image runs on ``scenes``, side by side, and their generation
speed.

    python benchmarks/scenes_t2i_eval.py RUN [RUN...] [--num 500] [--seed 0] [--json out.json]
    python benchmarks/scenes_t2i_eval.py oracle RUN      # "oracle": real scenes drawn per prompt
    python benchmarks/scenes_t2i_eval.py RUN --rerank JUDGE [--candidates 8]   # each image the best of
                                                   # 8 by a matching run (ganfuse generate --rerank)

For each run: count, binding, relation and correct on the ``seen``, ``heldout`` and ``ladder``
prompt sets (``ganfuse.metrics.scene_t2i``), FD in the scene parser's features with n, the spread
of object centres and sizes over 10 seeds against the real data's, duplicates; then generation
speed: ``run.sample`` on 256 distinct seen prompts (one batch of 256 at the run's size, prompts
encoded inside the timing, as a caller gets it) and the generator alone (conditions encoded once
beforehand), each the median of 5 rounds after a warm-up, with ``--threads`` torch threads
(default 2). The word ``oracle`` in place of a run evaluates real scenes rendered for each prompt
(the ceiling of every figure; its speed is the renderer's). Prints the table, then one JSON line;
``--json`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from ganfuse.metrics.scene_t2i import (
    evaluate_scene_t2i,
    evaluate_scene_t2i_run,
    oracle_sampler,
    scene_t2i_prompt_sets,
)

SPEED_BATCH = 256
SPEED_ROUNDS = 5


def median_rate(step, images: int, rounds: int = SPEED_ROUNDS) -> float:
    """Images per second of ``step()`` (which makes ``images`` images): median of ``rounds`` after
    one warm-up call."""
    step()
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def generation_speed(run, prompts: list[str]) -> dict[str, float]:
    """``sample_img_per_s`` (``run.sample`` with the prompts' encoding) and
    ``generator_img_per_s`` (latents and generator only) for one batch of ``len(prompts)``."""
    seeds = iter(range(10_000))
    sample = median_rate(lambda: run.sample(1, seed=next(seeds), prompts=prompts,
                                            batch_size=SPEED_BATCH), len(prompts))
    cond = run.conditions(prompts)
    z = torch.randn(len(prompts), run.z_dim, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def generate() -> torch.Tensor:
        return run.generator(z.to(run.device), cond).float().cpu()

    return {"sample_img_per_s": sample, "generator_img_per_s": median_rate(generate, len(prompts))}


def evaluate_one(name: str, num: int, seed: int, rerank: str | None = None, candidates: int = 8) -> dict:
    if name == "oracle":
        sampler = oracle_sampler(64)
        start = time.perf_counter()
        result = evaluate_scene_t2i(sampler, num=num, seed=seed)
        seconds = time.perf_counter() - start
        prompts = scene_t2i_prompt_sets(num, seed)["seen"].prompts[:SPEED_BATCH]
        speed = {"sample_img_per_s": median_rate(lambda: sampler(prompts, 0), len(prompts))}
        return {"run": name, "step": None, **result, "eval_seconds": round(seconds, 1), "speed": speed}

    from ganfuse.run import load_run

    run = load_run(name)
    if run.config.data.name != "scenes":
        raise SystemExit(f"{name} is not a text-to-image run on scenes (data.name {run.config.data.name!r})")
    if rerank:  # sample_img_per_s then includes the candidates and the judge; generator_img_per_s is G alone
        from ganfuse.generate import RerankedRun
        from ganfuse.multimodal.scoring import load_scorer

        run = RerankedRun(run, load_scorer(rerank), candidates)
    start = time.perf_counter()
    result = evaluate_scene_t2i_run(run, num=num, seed=seed)
    seconds = time.perf_counter() - start
    prompts = scene_t2i_prompt_sets(num, seed, run.config.data.image_size)["seen"].prompts
    prompts = (prompts * (SPEED_BATCH // len(prompts) + 1))[:SPEED_BATCH]
    extra = {"rerank": rerank, "candidates": candidates} if rerank else {}
    return {"run": name, "step": run.step, **extra, **result, "eval_seconds": round(seconds, 1),
            "speed": generation_speed(run, prompts)}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def side_by_side(records: list[dict]) -> str:
    """One row per figure, one column per run."""
    rows: list[tuple[str, list[str]]] = []
    for name in ("seen", "heldout", "ladder"):
        for key in ("count", "binding", "relation", "correct"):
            if name == "ladder" and key == "relation":
                continue
            rows.append((f"{name} {key} %", [_pct(r["sets"][name][key]) for r in records]))
        rows.append((f"{name} FD (n)", [f"{_num(r['sets'][name]['fd'], 3)} ({r['sets'][name]['fd_n']})"
                                        for r in records]))
    for n in ("1", "2", "3", "4"):
        rows.append((f"ladder count right, {n} named %",
                     [_pct(r["sets"]["ladder"]["count_by_objects"][n]) for r in records]))
    for kind in ("list", "relation"):
        for key, label in (("spread_ratio", "centre spread ratio"), ("size_ratio", "size spread ratio"),
                           ("center_spread", "centre spread px"), ("center_spread_real", "  real px"),
                           ("duplicates", "duplicates %")):
            cells = [r["diversity"][kind][key] for r in records]
            rows.append((f"{kind}: {label}", [_pct(c) if "%" in label else _num(c) for c in cells]))
    rows.append(("sample img/s (batch 256)", [_num(r["speed"]["sample_img_per_s"], 0) for r in records]))
    rows.append(("generator img/s", [_num(r["speed"].get("generator_img_per_s"), 0) for r in records]))
    width = max(len(label) for label, _ in rows) + 2
    columns = [os.path.basename(str(r["run"]).rstrip("/")) or str(r["run"]) for r in records]
    column = max(12, *(len(c) + 2 for c in columns))
    lines = ["".ljust(width) + "".join(c.rjust(column) for c in columns)]
    lines.append("step".ljust(width) + "".join(str(r["step"]).rjust(column) for r in records))
    lines += [label.ljust(width) + "".join(c.rjust(column) for c in cells) for label, cells in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="scenes text-to-image run folders, or 'oracle'")
    parser.add_argument("--num", type=int, default=500, help="prompts per set (seen, heldout, ladder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", help="also write the records here")
    parser.add_argument("--rerank", metavar="JUDGE", help="a matching or zeroshot run: each image the best of "
                        "--candidates by it")
    parser.add_argument("--candidates", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = [evaluate_one(name, args.num, args.seed, args.rerank, args.candidates) for name in args.runs]
    print(side_by_side(records))
    print(f"({args.num} prompts per set, seed {args.seed}, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.1f})")
    print(json.dumps(records))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(records, handle, indent=2)


if __name__ == "__main__":
    main()
