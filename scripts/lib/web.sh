# Installs web/'s npm packages (the GraphiQL page's bundles, pinned by web/package-lock.json),
# which build.rs embeds into the gateway. build.rs never runs npm itself: every script calls
# this before its first cargo build. Source it, then:
#   ensure_web_packages   npm ci --prefix web (skipped when node_modules matches the lock file)
# Without npm, or offline, the build still succeeds and the page answers 503 with instructions.

ensure_web_packages() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  local lock="$root/web/package-lock.json" installed="$root/web/node_modules/.package-lock.json"
  if [ -f "$installed" ] && [ ! "$installed" -ot "$lock" ]; then return 0; fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: web/node_modules is not installed, the GraphiQL page will answer 503" >&2
    return 0
  fi
  echo "installing web/'s packages (npm ci --prefix web)" >&2
  npm ci --prefix "$root/web" --no-audit --no-fund --ignore-scripts --silent \
    || echo "npm ci --prefix web failed: the GraphiQL page will answer 503" >&2
}
