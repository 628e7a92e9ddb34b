"""Does a refactor keep training bit-for-bit? Train tiny versions of presets for a few steps with
two source trees and print a hash of every network's weights (G, D, EMA of G) after each.

    git worktree add /tmp/before <commit>
    python benchmarks/same_trajectory.py /tmp/before/src src --steps 12

Each tree runs in its own process (``PYTHONPATH=<tree>``), fp32, one thread. Equal hashes mean the
same trajectory, so every quality figure measured with the older tree holds for the newer one on
the same machine. Parameter names are normalised through ``--rename OLD=NEW`` for refactors that
only rename state-dict keys.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import hashlib, sys, torch
import ganfuse.config as C
import ganfuse.data.shapes as S
from ganfuse.train.loop import build_trainer
torch.set_num_threads(1)
preset, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
renames = [r.split("=", 1) for r in sys.argv[4:]]
S.DEFAULT_SPLIT_SIZES["train"] = 96
over = ["model.g_width=32", "model.d_width=8", "train.batch_size=16", "train.precision=fp32",
        "train.checkpoint_every=100000", "train.sample_every=100000"]
if preset.startswith("shapes"):
    over += ["text.encoder=small", "model.z_dim=8", "text.cond_dim=16"]
trainer = build_trainer(C.load_config(preset, over), out, progress=False)
for _ in range(steps):
    trainer.train_step()
weights = {}
for k, v in trainer.weights(calibrated=False).items():
    for old, new in renames:
        k = k.replace(old, new)
    weights[k] = v
h = hashlib.sha256()
for k, v in sorted(weights.items()):
    h.update(k.encode())
    h.update(v.float().numpy().tobytes())
print(h.hexdigest()[:16])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="src folder of the first tree")
    parser.add_argument("after", help="src folder of the second tree")
    parser.add_argument("--presets", default="digits,digits-dcgan,digits-cond,shapes-t2i,shapes-t2i-concat")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW")
    args = parser.parse_args()
    import tempfile

    print(f"{'preset':<20} {'before':<18} {'after':<18} same")
    for preset in args.presets.split(","):
        hashes = []
        for tree in (args.before, args.after):
            with tempfile.TemporaryDirectory() as out:
                env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "HF_HUB_OFFLINE": "1"}
                proc = subprocess.run([sys.executable, "-c", CHILD, preset, out + "/run", str(args.steps),
                                       *args.rename], env=env, capture_output=True, text=True)
                hashes.append(proc.stdout.strip() or f"failed: {proc.stderr.strip().splitlines()[-1][:40]}")
        print(f"{preset:<20} {hashes[0]:<18} {hashes[1]:<18} {'yes' if hashes[0] == hashes[1] else 'NO'}")


if __name__ == "__main__":
    main()
