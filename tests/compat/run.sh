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
DATA=$(mktemp -d)
OUT="$DATA.out"
# Ports 0: the OS picks free ones and weir prints the bound addresses on its first line.
WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS=0 WEIR_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS=500 RUST_LOG=warn "$WEIR" serve \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$DATA" >"$OUT" &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA" "$OUT"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  grep -q '^weir serving' "$OUT" 2>/dev/null && break
  sleep 0.1
done
KAFKA=$(sed -n 's/^weir serving kafka=\([^ ]*\) admin=.*/\1/p' "$OUT")
[ -n "$KAFKA" ] || { echo "weir serve did not start"; exit 1; }
status=0
WEIR_BOOTSTRAP="$KAFKA" "$PYTHON" tests/compat/compat.py || status=1
# Exactly-once: a confluent-kafka consume-transform-produce loop killed at random points.
WEIR_BOOTSTRAP="$KAFKA" "$PYTHON" tests/compat/eos.py || status=1
if [ -n "${KAFKAJS_NODE_PATH:-}" ]; then
  WEIR_BOOTSTRAP="$KAFKA" NODE_PATH="$KAFKAJS_NODE_PATH" node tests/compat/kafkajs.cjs || status=1
else
  echo "KafkaJS suite not run: set KAFKAJS_NODE_PATH to a node_modules holding kafkajs"
  status=1
fi
exit "$status"
