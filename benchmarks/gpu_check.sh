#!/usr/bin/env bash
# GPU checks (issue 18): the gpu-marked tests, then training and HMC throughput on CUDA; the JSON
# goes to benchmarks/results/gpu_check.json. See benchmarks/gpu_check.py and benchmarks/README.md.
#
#   bash benchmarks/gpu_check.sh                            # on a CUDA machine (designed to end within 8 minutes)
#   bash benchmarks/gpu_check.sh --dry-run --out dry.json   # anywhere: tiny sizes, the CPU standing in for CUDA
#
# Runs from the repository root wherever it is called from, with the repository's .venv/bin/python
# when there is one, else `python`. A relative --out is taken from the directory it was called in.
set -euo pipefail
dry_run=0 out=0
for arg in "$@"; do
    case $arg in
        --dry-run) dry_run=1 ;;
        --out | --out=*) out=1 ;;
    esac
done
if [ "$dry_run" = 1 ] && [ "$out" = 0 ]; then  # checked here too, before Python loads torch
    echo "gpu_check: a dry run measures nothing; give it --out FILE, not the real results' path" >&2
    exit 2
fi
export GPU_CHECK_CALLER_CWD="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python
fi
exec "$PY" benchmarks/gpu_check.py "$@"
