# Installs what the status page's browser test (tests/ui.rs) needs: Debian's chromium, and
# playwright-core in tests/ui/ to drive it (it never downloads a browser of its own).
# Sourced by .ci/test: it returns, never exits, and does nothing when all is in place.
browser_setup() {
  if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || return 1
  fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "browser: node and npm are needed (apt-get install nodejs npm)" >&2
    return 1
  fi
  if [ ! -f tests/ui/node_modules/playwright-core/package.json ]; then
    (cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) || return 1
  fi
  echo "browser: $(chromium --version 2>/dev/null), playwright-core $(node -p 'require("./tests/ui/node_modules/playwright-core/package.json").version')"
}
browser_setup || { echo "browser: setup failed" >&2; return 1; }
