# systemd-analyze checks the unit file's hardening (tests/service.rs).
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
command -v systemd-analyze >/dev/null && echo "systemd-analyze: $(systemd-analyze --version | head -1)"
