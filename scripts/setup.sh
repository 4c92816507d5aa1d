#!/usr/bin/env bash
# Set up a fresh machine: a .venv with torch, lightning-deploy (editable) and its train, test and docs extras.
# torch 2.14.1 / torchvision 0.29.1 are installed first so that pip takes the builds that lie on
# this machine's disk; the project itself only asks for torch>=2.6.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[train,test,docs]"
