#!/usr/bin/env bash
# Create .venv and install the project into it. torch comes first and pinned: 2.13.0 is the CPU
# build this machine carries; any other torch request pulls gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev,joblib,search,ray,server]'
echo "installed into $(pwd)/.venv"
