#!/usr/bin/env bash
# Writes tests/upgrade/<name>/queue.tar.gz and expected.json: a queue written by an earlier
# release of hookbridge (its binary is the first argument), holding undelivered events of every
# shape the samples have, for tests/upgrade.rs to open and deliver with this build.
#
#   git worktree add --detach /tmp/prev <earlier commit>
#   (cd /tmp/prev && cargo build --release --bin hookbridge)
#   tests/upgrade/make-fixture.sh /tmp/prev/target/release/hookbridge <earlier commit> <name>
set -euo pipefail
bin=$1
rev=${2:-unknown}
here=$(cd "$(dirname "$0")" && pwd)/${3:?name the fixture directory}
mkdir -p "$here"
samples=$here/../../samples
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The sink's file sits under a path that cannot be a directory: the events can only queue.
cat > "$work/routes.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[storage]
path = "$work/data"
[hooks.open]
kind = "auto"
[sinks.log]
type = "file"
path = "$work/routes.toml/events.jsonl"
[[routes]]
match = {}
to = ["log"]
TOML
"$bin" serve --config "$work/routes.toml" 2> "$work/daemon.log" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.1; done
post() { curl -sf -H "content-type: $1" --data-binary "@$2" "http://127.0.0.1:$port/hooks/open"; }
{
  post application/json "$samples/portal-group-update.json"
  post application/json "$samples/portal-item-share-multi.json"
  post application/json "$samples/portal-user-role.json"
  post application/json "$samples/feature-created.json"
  post application/json "$samples/feature-multi.json"
  post application/x-www-form-urlencoded "$samples/feature-multi.form"
} | python3 -c '
import json, sys
ids = []
for line in sys.stdin.read().replace("}{", "}\n{").splitlines():
    ids += json.loads(line)["accepted"]
json.dump({"release": sys.argv[1], "accepted": ids}, open(sys.argv[2], "w"), indent=1)
print(len(ids), "events queued")
' "$rev" "$here/expected.json"
kill -TERM "$pid"
wait "$pid" || true
# The reserve and the lock are recreated at start.
tar -C "$work" --exclude data/reserve --exclude data/lock -czf "$here/queue.tar.gz" data
ls -l "$here/queue.tar.gz"
