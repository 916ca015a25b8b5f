#!/bin/sh
# The one install command of skewless. `make install` runs it for the dev venv and
# kubeflow/Dockerfile for the pipeline image, so every CI run proves the image's install steps.
#
# Usage: scripts/install.sh PYTHON REQUIREMENT...   (from the repository root)
#   scripts/install.sh .venv/bin/python -e ".[dev]"   # the dev venv (Makefile)
#   scripts/install.sh python .                       # the image: no dev extras, no tests
set -eu
PYTHON="$1"
shift
"$PYTHON" -m pip install --quiet --disable-pip-version-check pip==24.3.1
# TFX 1.16.0's pure-Python wheels cap Requires-Python below 3.11 although its native stack supports
# 3.11, hence --ignore-requires-python; constraints.txt pins every package so pip never backtracks.
"$PYTHON" -m pip install --quiet --disable-pip-version-check --ignore-requires-python \
    -c constraints.txt "$@"
