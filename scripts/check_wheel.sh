#!/usr/bin/env bash
# The release as a user installs it (CI's wheel job): build the wheel and the sdist, check their metadata
# with twine, check what the wheel holds, then install the wheel (not editable) with its `train` extra into
# a fresh virtual environment and run the README's main job and `lightning-deploy --help` from there, in a
# folder outside the checkout so that nothing can import the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

.venv/bin/python -m build --outdir "$scratch/dist" . > "$scratch/build.log" 2>&1 || { cat "$scratch/build.log"; exit 1; }
ls -l "$scratch/dist"
.venv/bin/python -m twine check --strict "$scratch"/dist/*
.venv/bin/python - "$scratch"/dist/*.whl <<'EOF'
"""The wheel holds the package, its py.typed and its metadata, and nothing from tests/, docs/, tools/ or examples/."""
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({name.split("/")[0] for name in names})
assert all(top == "lightning_deploy" or top.startswith("lightning_deploy-") for top in tops), tops
assert "lightning_deploy/py.typed" in names, "py.typed is missing from the wheel"
assert "lightning_deploy/tracking/pyfunc_code.py" in names, "the MLflow model's code path is missing from the wheel"
print(f"wheel: {len(names)} files, top-level {tops}")
EOF

python3 -m venv "$scratch/venv"
pip=("$scratch/venv/bin/pip" install --quiet --disable-pip-version-check)
"${pip[@]}" "torch==2.14.1"  # the build on this machine's disk, as scripts/setup.sh does
"${pip[@]}" "$(ls "$scratch"/dist/*.whl)[train]" scikit-learn  # scikit-learn: the example's data set
cd "$scratch"
"$scratch/venv/bin/python" -c "import lightning_deploy, sys; assert lightning_deploy.__file__.startswith(sys.prefix), lightning_deploy.__file__; print('installed:', lightning_deploy.__file__, lightning_deploy.__version__)"
"$scratch/venv/bin/lightning-deploy" --help
"$scratch/venv/bin/python" "$repo/examples/train_digits.py" --root "$scratch/run"
