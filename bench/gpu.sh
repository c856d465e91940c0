#!/usr/bin/env bash
# The device figures in one run: bash bench/gpu.sh [--quick] [--write BENCHMARKS.md]
# (bench/gpu.py says what it measures). Uses the project's .venv when there is one, else python3;
# stops after 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
exec timeout 480 "$python" bench/gpu.py "$@"
