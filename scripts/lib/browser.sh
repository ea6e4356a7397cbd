#!/usr/bin/env bash
# Shared helpers for the headless-browser tests (tests/browser): Debian's Chromium, driven by
# npm playwright-core (which never downloads a browser of its own). Sourced by scripts/test.
#
#   ensure_chromium              installs Debian's chromium if /usr/bin/chromium is missing
#   install_browser_test_deps    npm ci in tests/browser (skipped when already up to date)

browser_log() { printf '[browser] %s\n' "$*" >&2; }

browser_as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"

ensure_chromium() {
  if [ -x "$CHROMIUM_PATH" ]; then return 0; fi
  browser_log "$CHROMIUM_PATH is missing: installing Debian's chromium with apt"
  # Only refresh the package lists when apt does not know the package yet.
  if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    browser_as_root apt-get update -qq || { browser_log "apt-get update failed"; return 1; }
  fi
  if ! DEBIAN_FRONTEND=noninteractive browser_as_root apt-get install -y -qq --no-install-recommends \
    chromium >/dev/null; then
    browser_log "apt-get install chromium failed: refreshing the package lists and retrying"
    browser_as_root apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive browser_as_root apt-get install -y -qq --no-install-recommends \
      chromium >/dev/null || { browser_log "could not install chromium"; return 1; }
  fi
  [ -x "$CHROMIUM_PATH" ] || { browser_log "chromium installed but $CHROMIUM_PATH is missing"; return 1; }
  browser_log "$("$CHROMIUM_PATH" --version 2>/dev/null || echo chromium installed)"
}

# Installs tests/browser/node_modules from its lock file (npm ci), unless it is up to date.
install_browser_test_deps() {
  local root dir
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  dir="$root/tests/browser"
  if ! command -v npm >/dev/null 2>&1; then
    browser_log "npm is not installed: the browser tests need Node.js and npm"; return 1
  fi
  if [ -f "$dir/node_modules/.package-lock.json" ] \
    && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ] \
    && [ -d "$dir/node_modules/playwright-core" ]; then
    return 0
  fi
  browser_log "installing tests/browser dependencies (npm ci)"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: we use Debian's chromium, never a downloaded browser.
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts >/dev/null) \
    || { browser_log "npm ci in tests/browser failed"; return 1; }
}
