# Starts the machine's Mosquitto if it is not answering on 127.0.0.1:1883, for tests/mqtt.rs
# (which also starts brokers of its own from the same binary).
# Sourced by .ci/test: `return`, never `exit`.
mqtt_up() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto \
    || { echo "mqtt: cannot install mosquitto" >&2; return 1; }
fi
if ! mqtt_up; then
  mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
  for _ in $(seq 1 30); do mqtt_up && break; sleep 1; done
fi
mqtt_up && echo "mqtt: up on 127.0.0.1:1883" || { echo "mqtt: not reachable" >&2; return 1; }
