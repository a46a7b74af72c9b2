# What the package test (tests/package.rs) needs: cargo-deb (cargo install), dpkg-deb and
# objcopy (binutils) to split the debug info off, and systemd-analyze (systemd.sh installs it).
# Sourced by .ci/test: `return`, never `exit`; does nothing when all is in place.
CARGO_DEB_VERSION=3.7.0
deb_setup() {
  if ! command -v objcopy >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils dpkg >/dev/null; } \
      || { echo "deb: cannot install binutils and dpkg (apt-get install binutils dpkg)" >&2; return 1; }
  fi
  if ! cargo deb --version >/dev/null 2>&1; then
    echo "deb: installing cargo-deb $CARGO_DEB_VERSION (cargo install; a few minutes)"
    cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" \
      || { echo "deb: cannot install cargo-deb (cargo install --locked cargo-deb)" >&2; return 1; }
  fi
  echo "deb: $(cargo deb --version 2>&1 | head -1), $(dpkg-deb --version | head -1)"
}
deb_setup || { echo "deb: setup failed" >&2; return 1; }
