#!/usr/bin/env bash
# Set up a fresh machine: a venv in .venv with torch (CPU) and coda-lsp with its test extras.
# --with-editors also installs Neovim, code-server, Node 24 and Chromium for the editor tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first and pinned: an open range would pull a multi-GB CUDA build.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
if [ "${1:-}" = "--with-editors" ] && [ -f editors/setup.sh ]; then
    bash editors/setup.sh
fi
