"""Training throughput of a preset (default ``digits-dcgan``), printed as one JSON line.

    python benchmarks/train_throughput.py [--preset digits-dcgan] [--seconds 20]

Thin wrapper over ``ganfuse bench train``; see benchmarks/README.md for measured figures.
"""

from __future__ import annotations

import argparse
import json

from ganfuse.bench import bench_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits-dcgan")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    print(json.dumps(bench_train(args.preset, args.seconds, args.overrides)))


if __name__ == "__main__":
    main()
