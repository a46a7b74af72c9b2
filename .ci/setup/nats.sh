# Starts the machine's NATS server with JetStream if it is not answering on 127.0.0.1:4222, for
# tests/nats.rs (which also starts servers of its own from the same binary).
# Sourced by .ci/test: `return`, never `exit`.
nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server \
    || { echo "nats: cannot install nats-server" >&2; return 1; }
fi
if ! nats_up; then
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
  for _ in $(seq 1 30); do nats_up && break; sleep 1; done
fi
nats_up && echo "nats: up on 127.0.0.1:4222" || { echo "nats: not reachable" >&2; return 1; }
