# Starts the machine's RabbitMQ if it is not answering on 127.0.0.1:5672.
rabbitmq_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! rabbitmq_up; then
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
  fi
  rabbitmq-server -detached || true
  for _ in $(seq 1 60); do rabbitmq_up && break; sleep 1; done
fi
rabbitmq_up && echo "rabbitmq: up on 127.0.0.1:5672" || { echo "rabbitmq: not reachable" >&2; return 1; }
