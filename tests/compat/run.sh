#!/usr/bin/env bash
# Starts `weir serve` on free 127.0.0.1 ports with a fresh data directory, runs the client
# compatibility suite against it, and stops it. Needs a Python with confluent-kafka and
# kafka-python (.ci/run installs them into a virtualenv and passes it as $PYTHON).
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
WEIR_BOOTSTRAP="127.0.0.1:$KAFKA_PORT" "$PYTHON" tests/compat/compat.py
