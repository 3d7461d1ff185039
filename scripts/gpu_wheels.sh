#!/usr/bin/env bash
# Wheels of sama-rt's requirements that the GPU machines' image lacks (PyAV, ftfy and its
# wcwidth), for its Python 3.12 on x86-64, into .whl/ (git-ignored). Run it here, where
# PyPI is reachable, before the first device call, and name .whl in that call's `carry`:
# scripts/gpu_checks.sh installs whatever lies in .whl/ before its first section.
# Without them, every test and benchmark that reads or writes a video file or cleans a
# prompt fails there (in-memory editing and the DiT step need neither).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "av==18.1.*" "ftfy==6.3.*" "wcwidth==0.9.*"
du -sh .whl && ls .whl
