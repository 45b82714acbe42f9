#!/usr/bin/env bash
# Starts `weir serve` on free 127.0.0.1 ports with a fresh data directory, runs the client
# compatibility suites against it, and stops it. Needs a Python with confluent-kafka and
# kafka-python ($PYTHON) and, for KafkaJS, a node_modules with kafkajs ($KAFKAJS_NODE_PATH);
# .ci/run installs both.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WEIR=${WEIR:-target/debug/weir}
[ -x "$WEIR" ] || cargo build -p weir-broker --bin weir
port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(port)
ADMIN_PORT=$(port)
DATA=$(mktemp -d)
WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS=0 RUST_LOG=warn "$WEIR" serve \
  --listen "127.0.0.1:$KAFKA_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --data-dir "$DATA" &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if "$PYTHON" -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$ADMIN_PORT/health/ready').status == 200 else 1)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
status=0
WEIR_BOOTSTRAP="127.0.0.1:$KAFKA_PORT" "$PYTHON" tests/compat/compat.py || status=1
if [ -n "${KAFKAJS_NODE_PATH:-}" ]; then
  WEIR_BOOTSTRAP="127.0.0.1:$KAFKA_PORT" NODE_PATH="$KAFKAJS_NODE_PATH" node tests/compat/kafkajs.cjs || status=1
else
  echo "KafkaJS suite not run: set KAFKAJS_NODE_PATH to a node_modules holding kafkajs"
  status=1
fi
exit "$status"
