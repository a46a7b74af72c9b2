# Installs tansu, a Kafka-compatible broker in Rust, for tests/kafka.rs::tansu_end_to_end.
# Sourced by .ci/test: `return`, never `exit`. The mock-cluster tests need nothing installed.
# The first install builds ~400 crates in release mode: 25 min on a busy 2-core machine.
TANSU_VERSION=0.6.0
if ! command -v tansu >/dev/null 2>&1; then
  echo "kafka: installing tansu $TANSU_VERSION (cargo install; slow on a small machine)"
  cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore \
    || { echo "kafka: cannot install tansu" >&2; return 1; }
fi
if command -v tansu >/dev/null 2>&1; then
  echo "kafka: tansu at $(command -v tansu)"
else
  echo "kafka: tansu is not on PATH (is ~/.cargo/bin on PATH?)" >&2
  return 1
fi
