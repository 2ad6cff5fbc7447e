#!/usr/bin/env bash
# Run every benchmark in turn (about 2 hours on a 2-core CPU); results in benchmarks/results/.
# Usage: bash benchmarks/run_all.sh [--quick]   (--quick: one seed for time-to-accuracy)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
seeds=(0 1 2)
[[ "${1:-}" == "--quick" ]] && seeds=(0)

echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (timings assume an otherwise idle machine)"
"$PY" benchmarks/mfu.py
"$PY" benchmarks/course_vs_profond.py
"$PY" benchmarks/time_to_accuracy.py --all --seeds "${seeds[@]}"
"$PY" benchmarks/generative.py --epochs 10 --iwae-k 1000 --iwae-n 500 --samples 10000 --anomaly-epochs 5
"$PY" benchmarks/gan.py --epochs 5
"$PY" benchmarks/sequence.py
"$PY" benchmarks/attention.py
"$PY" benchmarks/transformers.py
"$PY" benchmarks/diffusion.py
"$PY" benchmarks/likelihood.py   # sampling (minutes), then the curve: 3 x 600 s of training + evaluations
