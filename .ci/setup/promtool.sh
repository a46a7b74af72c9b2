# promtool (from Debian's prometheus package) lints the /metrics exposition (tests/service.rs).
if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v promtool >/dev/null && echo "promtool: $(promtool --version 2>&1 | head -1)"
