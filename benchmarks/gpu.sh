#!/usr/bin/env bash
# GPU performance path: img/s and model FLOP utilisation of the founding document's DCGAN
# (digits-dcgan) and of the text-to-image model at 64x64 (shapes-t2i), at batch 64 and 256,
# eager and with torch.compile, in bf16. Finishes within 8 minutes on one GPU; on a machine
# without a GPU it says so and exits 0.
#
#   bash benchmarks/gpu.sh            # then copy the table into benchmarks/README.md
#   bash benchmarks/gpu.sh --seconds 5 --batches 256
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "benchmarks/gpu.sh: no GPU found (torch.cuda.is_available() is False); nothing to measure"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
# The Python side keeps itself to --budget (420 s by default); timeout is the hard stop at 8 minutes.
exec timeout --signal=INT --kill-after=10 470 python benchmarks/gpu_throughput.py "$@"
