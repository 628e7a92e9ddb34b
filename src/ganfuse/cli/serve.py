"""``ganfuse serve``: the web app over one or several runs (wiring only; see :mod:`ganfuse.serve.app`)."""

from __future__ import annotations

import argparse

from ganfuse.cli import add_command
from ganfuse.errors import UserError
from ganfuse.inputs import check_device
from ganfuse.serve.limits import Limits


def register(subparsers) -> None:
    defaults = Limits()
    p = add_command(
        subparsers,
        "serve",
        "Serve a web app (Gradio) over runs: generate images; match, answer, label and caption an "
        "uploaded image with multimodal runs. Bound to 127.0.0.1 unless --host says otherwise.",
        "ganfuse serve runs/digits-cond bench/fusion --port 7860",
    )
    p.add_argument(
        "runs",
        metavar="RUN",
        nargs="+",
        help="GAN runs (ganfuse train), multimodal runs (ganfuse fuse train) or fuse benchmark folders",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on; 0.0.0.0 exposes the app to the network",
    )
    p.add_argument("--port", type=int, default=7860, help="TCP port")
    p.add_argument("--device", default="cpu", help="device the models run on")
    p.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="requests computed at once"
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="requests allowed to wait; more are refused with 'queue is full'",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be from 1 to 65535, got {args.port}")
    if args.concurrency < 1 or args.max_queue < 1:
        raise UserError("--concurrency and --max-queue must be at least 1")
    check_device(args.device)
    from ganfuse.serve.app import serve

    limits = Limits(concurrency=args.concurrency, max_queue=args.max_queue)
    print(f"ganfuse serve: http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    serve(args.runs, args.host, args.port, limits, args.device, block=True)
    return 0
