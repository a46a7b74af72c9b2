# wrk (Debian's package) drives the benchmark's `wrk` phase (`cargo bench --bench accept`), the
# figure a user can reproduce with standard tools. Sourced by .ci/test: `return`, never `exit`.
if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null \
    || { echo "wrk: cannot install it (apt-get install wrk)" >&2; return 1; }
fi
command -v wrk >/dev/null && echo "wrk: $(command -v wrk)"
