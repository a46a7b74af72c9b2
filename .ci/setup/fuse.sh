# What the power-cut test (tests/powercut.rs) needs: FUSE (fuse3 brings fusermount3; libfuse2
# comes with python3-fusepy, whose module tests/powercut/lazyfs.py loads) and /dev/fuse.
# Sourced by .ci/test: `return`, never `exit`; does nothing when all is in place.
fuse_setup() {
  if ! /usr/bin/python3 -c 'import fusepy' >/dev/null 2>&1 || ! command -v fusermount3 >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 python3-fusepy >/dev/null; } \
      || { echo "fuse: cannot install fuse3 and python3-fusepy (apt-get install fuse3 python3-fusepy)" >&2; return 1; }
  fi
  if [ ! -c /dev/fuse ]; then
    # The test itself fails under CI=true and says so; the other tests still run.
    echo "fuse: there is no /dev/fuse: tests/powercut.rs cannot mount its file system" >&2
    return 0
  fi
  /usr/bin/python3 tests/powercut/lazyfs.py --check \
    || { echo "fuse: tests/powercut/lazyfs.py cannot load fusepy" >&2; return 1; }
  echo "fuse: /dev/fuse, fusepy $(dpkg-query -W -f='${Version}' python3-fusepy 2>/dev/null)"
}
fuse_setup || { echo "fuse: setup failed" >&2; return 1; }
