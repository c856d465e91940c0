#!/usr/bin/env bash
# The device figures in one run: bash bench/gpu.sh [--quick] [--write BENCHMARKS.md]
# First the paper configuration end to end, every command and the server as a user runs them
# (bench/bench_paper.py), then the timed rows (bench/gpu.py says what it measures). Uses the
# project's .venv when there is one, else python3; stops after 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
timeout 120 "$python" bench/bench_paper.py "$@"
exec timeout 470 "$python" bench/gpu.py "$@"
