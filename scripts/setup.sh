#!/usr/bin/env bash
# Set up a fresh machine: a .venv with torch, lightning-deploy (editable) and its train, test and docs extras.
# torch 2.14.1 / torchvision 0.29.1 are installed first so that pip takes the builds that lie on
# this machine's disk; the project itself only asks for torch>=2.6.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[train,test,docs]"
# Mermaid (MIT) for the docs' diagrams, served with the site so that they render offline; 3.5 MB, so it is
# fetched from the npm registry instead of kept in git. Without npm the site still builds and mkdocs-material
# fetches Mermaid from unpkg when a page is viewed.
if command -v npm > /dev/null; then
    mermaid=$(mktemp -d)
    (cd "$mermaid" && npm pack --silent mermaid@11.17.2 > /dev/null && tar xzf mermaid-11.17.2.tgz package/dist/mermaid.min.js package/LICENSE)
    mkdir -p docs/javascripts
    cp "$mermaid/package/dist/mermaid.min.js" docs/javascripts/mermaid-11.17.2.min.js
    cp "$mermaid/package/LICENSE" docs/javascripts/mermaid-LICENSE.txt
    rm -rf "$mermaid"
else
    echo "setup.sh: npm not found: the docs' diagrams will load Mermaid from unpkg when viewed" >&2
fi
