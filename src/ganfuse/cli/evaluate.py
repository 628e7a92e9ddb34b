"""``ganfuse evaluate``: score generated images against a reference (wiring only; the pipeline is
:mod:`ganfuse.metrics.evaluate`). A run folder is loaded here and handed to the metrics as a
sampler, since metrics see images only.

The pipeline, the run loader and the dual encoder (all of them import torch) are imported when the
command runs, so that ``ganfuse --help`` does not pay for them (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ganfuse.cli import add_command
from ganfuse.cli.generate import add_rerank_arguments, rerank_settings, reranked
from ganfuse.config import arch_family, load_config
from ganfuse.errors import UserError
from ganfuse.inputs import MAX_BATCH_SIZE, MAX_EVAL_IMAGES, check_count, check_seed
from ganfuse.metrics.inception_weights import (
    INCEPTION_FILENAME,
    WEIGHTS_ENV,
    cached_weights_path,
)
from ganfuse.metrics.settings import (
    AUDIT_DEFAULT_NUM,
    AUDIT_METRICS,
    CAS_METRICS,
    DEFAULT_METRICS,
    DEFAULT_NUM,
    DEFAULT_RESIZE,
    DIVERSITY_PROMPTS,
    METRICS,
    RESIZE_MODES,
    SCENE_T2I_DEFAULT_METRICS,
    SCENE_T2I_METRICS,
    SCENE_T2I_MIN_NUM,
    T2I_DEFAULT_NUM,
    T2I_METRICS,
)

_HELP = ("Score a run or an image folder against a reference: FID, KID, IS, precision/recall, "
         "density/coverage; a text-to-image run: attribute accuracy, R-precision and diversity "
         "(shapes), or the exact judge's count, binding and relation scores, diversity and FD (scenes).")
_TEXT_TO_IMAGE_METRICS = tuple(dict.fromkeys(T2I_METRICS + SCENE_T2I_METRICS))


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "evaluate",
        _HELP,
        "ganfuse evaluate runs/digits --ref digits --metrics fid,kid --num 2000\n"
        "  ganfuse evaluate runs/shapes-t2i --metrics attr,rprec --rprec-model runs/zeroshot\n"
        "  ganfuse evaluate runs/scenes-t2i --json",
    )
    parser.add_argument(
        "source", help="a run directory (samples generated in memory) or a folder of images"
    )
    parser.add_argument(
        "--ref",
        help="a dataset name (digits) or a folder of real images; not used for text-to-image runs "
        "(their references are the real shapes images their prompts describe)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, from {','.join(METRICS)} (default: all); for a text-to-image run "
        f"on shapes from {','.join(T2I_METRICS)} (default: attr, plus rprec with --rprec-model), "
        f"on scenes from {','.join(SCENE_T2I_METRICS)} (default: {','.join(SCENE_T2I_DEFAULT_METRICS)}); "
        "memorization (on its own): a GAN run's samples against its training images, written to "
        "RUN/memorization.json and RUN/memorization.png; cas (on its own): train a classifier on the "
        "run's images, test on real ones (class-conditional digits, shapes/scenes text-to-image)",
    )
    parser.add_argument(
        "--heldout",
        metavar="REF",
        help="--metrics memorization: real images the run never trained on (a dataset name or a "
        "folder), the reference distances; default: leave-one-out in the training set",
    )
    parser.add_argument(
        "--rprec-model",
        metavar="RUN",
        help="a zero-shot run (ganfuse fuse train --task zeroshot) whose dual encoder scores "
        "R-precision: each image's prompt ranked against 99 others",
    )
    parser.add_argument(
        "--extractor",
        default=None,
        help="inception or a dataset's own (digits); default: inception when its weights are on disk, "
        "else the reference dataset's own",
    )
    parser.add_argument(
        "--num",
        type=int,
        default=None,
        help=f"images per side (at most; default {DEFAULT_NUM}, 2 to {MAX_EVAL_IMAGES}); "
        f"text-to-image: prompts per set (default {T2I_DEFAULT_NUM}, 1 to {MAX_EVAL_IMAGES}; "
        f"scenes: at least {SCENE_T2I_MIN_NUM}); diversity compares 10 seeds of each of the first "
        f"{DIVERSITY_PROMPTS} prompts (at most NUM) of each kind",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON instead of a table"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help=f"the Inception weights file {INCEPTION_FILENAME} (or set {WEIGHTS_ENV}); "
        f"looked for in {cached_weights_path()} otherwise",
    )
    parser.add_argument(
        "--resize",
        choices=sorted(RESIZE_MODES),
        default=None,
        help=f"Inception input resize, {DEFAULT_RESIZE} when not given: "
        + "; ".join(f"{name}: {what}" for name, what in RESIZE_MODES.items()),
    )
    add_rerank_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="images per extractor batch")
    parser.add_argument(
        "--seed", type=int, default=0, help="sampling seed for runs and KID subsets"
    )
    parser.set_defaults(func=run_evaluate)


def _t2i_dataset(source: str) -> str | None:
    """The dataset (``data.name``) of a text-to-image run folder; None for anything else."""
    config = Path(source) / "config.yaml"
    if not config.is_file():
        return None
    try:
        loaded = load_config(str(config))
        return loaded.data.name if arch_family(loaded.model.arch) == "t2i" else None
    except Exception:  # an unreadable config is reported by the loader that needs it
        return None


def _is_t2i_run(source: str) -> bool:
    return _t2i_dataset(source) is not None


def evaluation_source(spec: str | Path):
    """What :func:`~ganfuse.metrics.evaluate.evaluate_source` scores for ``spec``: the loaded run
    when it is a run folder, else the folder of images itself."""
    from ganfuse.metrics.sources import is_run_folder
    from ganfuse.run import load_run

    return load_run(spec) if is_run_folder(spec) else spec


def _evaluate_cas(args: argparse.Namespace) -> int:
    """``--metrics cas``: Classification Accuracy Score of a run (ganfuse.metrics.cas)."""
    from ganfuse.metrics.sources import is_run_folder

    if not is_run_folder(args.source):
        raise UserError(f"--metrics cas scores a run; {args.source} is not a run folder (it has no config.yaml)")
    num = None if args.num is None else check_count("--num", args.num, MAX_EVAL_IMAGES, minimum=10)
    from ganfuse.metrics.cas import cas_of_run, format_cas
    from ganfuse.run import load_run

    result = cas_of_run(load_run(args.source), num=num, seed=args.seed)
    print(json.dumps(result, indent=2) if args.json else format_cas(result))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    args.seed = check_seed(args.seed)
    if args.batch_size is not None:
        args.batch_size = check_count("--batch-size", args.batch_size, MAX_BATCH_SIZE)
    wanted = [m.strip().lower() for m in (args.metrics or "").split(",") if m.strip()]
    args.candidates = rerank_settings(args)
    if args.candidates is not None and (_t2i_dataset(args.source) is None
                                        or any(m in CAS_METRICS + AUDIT_METRICS for m in wanted)):
        raise UserError("--rerank picks the best of several candidates per prompt: it applies to the "
                        "prompt metrics of a text-to-image run (not to cas, memorization or other runs)")
    if any(m in CAS_METRICS for m in wanted):
        if wanted != ["cas"]:
            raise UserError("--metrics cas runs on its own (it trains two classifiers); ask for the other "
                            "metrics in another call")
        return _evaluate_cas(args)
    if any(m in AUDIT_METRICS for m in wanted):
        if wanted != ["memorization"]:
            raise UserError("--metrics memorization runs on its own; ask for the other metrics in another call")
        return _evaluate_memorization(args)
    if args.heldout:
        raise UserError("--heldout applies to --metrics memorization")
    dataset = _t2i_dataset(args.source)
    if dataset == "scenes":
        return _evaluate_scene_t2i(args, wanted)
    if dataset is not None:
        return _evaluate_t2i(args, wanted)
    num = DEFAULT_NUM if args.num is None else check_count("--num", args.num, MAX_EVAL_IMAGES, minimum=2)

    from ganfuse.metrics.evaluate import evaluate_source

    if any(m in _TEXT_TO_IMAGE_METRICS for m in wanted):
        raise UserError(f"--metrics {','.join(_TEXT_TO_IMAGE_METRICS)} score text-to-image runs; "
                        f"{args.source} is not one (its config.yaml has no model.arch t2i-*)")
    if not args.ref:
        raise UserError("--ref is required: a dataset name (digits) or a folder of real images")
    result = evaluate_source(
        evaluation_source(args.source),
        args.ref,
        metrics=wanted or DEFAULT_METRICS,
        extractor=args.extractor,
        num=num,
        weights=args.weights,
        resize=args.resize,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.json and sys.stderr.isatty(),
    )
    print(result.to_json() if args.json else result.format_table())
    return 0


def _evaluate_t2i(args: argparse.Namespace, wanted: list[str]) -> int:
    num = T2I_DEFAULT_NUM if args.num is None else check_count("--num", args.num, MAX_EVAL_IMAGES)

    from ganfuse.metrics.t2i import evaluate_t2i_run, format_t2i
    from ganfuse.metrics.t2i_diversity import format_shapes_diversity, shapes_diversity_run
    from ganfuse.multimodal.zeroshot import load_dual_encoder
    from ganfuse.run import load_run

    wanted = wanted or (["attr", "rprec"] if args.rprec_model else ["attr"])
    unknown = [m for m in wanted if m not in T2I_METRICS]
    if unknown:
        raise UserError(f"{args.source} is a text-to-image run: --metrics takes {','.join(T2I_METRICS)} "
                        f"(FD in the attribute classifier's features comes with attr), not {','.join(unknown)}")
    if "rprec" in wanted and not args.rprec_model:
        raise UserError("--metrics rprec needs --rprec-model RUN, a zero-shot run "
                        "(train one with: ganfuse fuse train --task zeroshot --out RUN)")
    run = reranked(load_run(args.source), args, args.candidates)
    record: dict[str, object] = {"run": str(args.source), "step": run.step, "num_per_set": num,
                                 "seed": args.seed, "rprec_model": args.rprec_model, **_rerank_record(args)}
    if "attr" in wanted or "rprec" in wanted:
        rprec_model = load_dual_encoder(args.rprec_model) if "rprec" in wanted else None
        record["sets"] = evaluate_t2i_run(run, num=num, seed=args.seed, rprec_model=rprec_model)
    if "diversity" in wanted:
        record["diversity"] = shapes_diversity_run(run, min(num, DIVERSITY_PROMPTS), args.seed)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"{args.source} (step {run.step}), {num} prompts per set, seed {args.seed}"
              + _rerank_note(args))
        if "sets" in record:
            print(format_t2i(record["sets"]))
        if "diversity" in record:
            print(format_shapes_diversity(record["diversity"]))
    return 0


def _rerank_record(args: argparse.Namespace) -> dict[str, object]:
    return {"rerank": args.rerank, "candidates": args.candidates} if args.candidates else {}


def _rerank_note(args: argparse.Namespace) -> str:
    return f", each image the best of {args.candidates} by {args.rerank}" if args.candidates else ""


def _evaluate_scene_t2i(args: argparse.Namespace, wanted: list[str]) -> int:
    """A text-to-image run on ``scenes``: the exact judge (ganfuse.metrics.scene_t2i)."""
    num = T2I_DEFAULT_NUM if args.num is None else check_count(
        "--num", args.num, MAX_EVAL_IMAGES, minimum=SCENE_T2I_MIN_NUM)
    wanted = wanted or list(SCENE_T2I_DEFAULT_METRICS)
    unknown = [m for m in wanted if m not in SCENE_T2I_METRICS]
    if unknown:
        raise UserError(f"{args.source} is a text-to-image run on scenes: --metrics takes "
                        f"{','.join(SCENE_T2I_METRICS)}, not {','.join(unknown)}")
    if args.rprec_model:
        raise UserError("--rprec-model scores shapes text-to-image runs; on scenes the exact judge "
                        "(--metrics scene) checks every object, binding and relation instead")

    from ganfuse.metrics.scene_t2i import evaluate_scene_t2i_run, format_scene_t2i
    from ganfuse.run import load_run

    run = reranked(load_run(args.source), args, args.candidates)
    result = evaluate_scene_t2i_run(run, num=num, seed=args.seed,
                                    diversity_prompts=min(num, DIVERSITY_PROMPTS), metrics=wanted)
    if args.json:
        print(json.dumps({"run": str(args.source), "step": run.step, "dataset": "scenes",
                          **_rerank_record(args), **result}, indent=2))
    else:
        print(f"{args.source} (step {run.step}), {num} prompts per set, seed {args.seed}"
              + _rerank_note(args))
        print(format_scene_t2i(result))
    return 0


def _evaluate_memorization(args: argparse.Namespace) -> int:
    """``--metrics memorization``: the privacy audit of a GAN run (ganfuse.metrics.memorization)."""
    num = AUDIT_DEFAULT_NUM if args.num is None else check_count("--num", args.num, MAX_EVAL_IMAGES)

    from ganfuse.metrics.sources import is_run_folder

    if not is_run_folder(args.source):
        raise UserError(f"--metrics memorization audits a training run; {args.source} is not a run folder "
                        "(it has no config.yaml)")
    if _is_t2i_run(args.source):
        raise UserError(f"--metrics memorization covers unconditional and class-conditional runs; "
                        f"{args.source} is text-to-image")

    import torch

    from ganfuse.data import build_dataset
    from ganfuse.fileio import atomic_write, atomic_write_text
    from ganfuse.metrics.evaluate import build_extractor, choose_extractor
    from ganfuse.metrics.memorization import (
        MEMORIZATION_FILE,
        MEMORIZATION_PICTURE,
        audit_images,
        closest_pairs,
    )
    from ganfuse.metrics.sources import DATASET_EXTRACTORS, is_reference_dataset, open_reference
    from ganfuse.run import load_run
    from ganfuse.run_images import grid_image

    run = load_run(args.source)
    data = run.config.data
    if args.extractor:
        name = args.extractor
    elif is_reference_dataset(data.name) and data.name in DATASET_EXTRACTORS:
        name = DATASET_EXTRACTORS[data.name]
    else:
        name = choose_extractor(data.name, None, args.weights)
    extractor = build_extractor(name, args.weights, args.resize)
    channels = int(run.manifest.get("channels", 3))
    dataset = build_dataset(data, channels)
    train = getattr(dataset, "images", None)
    if train is None:
        raise UserError(f"the run's dataset {data.name!r} is a stream; the audit needs its images in memory")
    heldout = None
    if args.heldout:
        source = open_reference(args.heldout, channels, data.image_size)
        heldout = torch.cat(list(source.batches(num, 512)))
    samples = run.sample(num, seed=args.seed)
    audit = audit_images(samples, train, extractor, heldout, args.batch_size, seed=args.seed)
    result = {"run": str(args.source), "step": run.step, "dataset": data.name,
              "heldout": args.heldout, **audit.to_dict()}
    out = Path(args.source)
    picture = grid_image(closest_pairs(samples, train, audit), ncol=len(audit.pairs), scale=3)
    try:
        atomic_write_text(out / MEMORIZATION_FILE, json.dumps(result, indent=2) + "\n")
        atomic_write(out / MEMORIZATION_PICTURE, lambda tmp: picture.save(tmp, format="PNG"))
    except OSError as exc:
        raise UserError(f"cannot write the audit into {out}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.source} (step {run.step}), seed {args.seed}")
        print(audit.format_table())
        print(f"wrote {out / MEMORIZATION_FILE} and the closest pairs to {out / MEMORIZATION_PICTURE}")
    return 0
