#!/usr/bin/env bash
# Starts a 3-broker Weir cluster (`weir broker` processes on free 127.0.0.1 ports, object WAL, one
# bucket in a local directory, a single `__consumer_offsets` partition so that group coordination
# moves too), runs the client suites that move partitions under kafka-python and KafkaJS producers
# and consumer groups (tests/compat/cluster.py, tests/compat/cluster_kafkajs.cjs), and stops the
# brokers. Needs $PYTHON with kafka-python and $KAFKAJS_NODE_PATH, like tests/compat/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WEIR=${WEIR:-target/debug/weir}
[ -x "$WEIR" ] || cargo build -p weir-broker --bin weir
WORK=$(mktemp -d)
mkdir -p "$WORK/bucket"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${status:-1}" -ne 0 ]; then
    for n in 1 2 3; do echo "== broker $n log (last 40 lines)"; tail -40 "$WORK/log$n" || true; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
export WEIR_OFFSETS_TOPIC_PARTITIONS=1 WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS=0 \
  WEIR_CLUSTER__BALANCE_INTERVAL_MS=0 WEIR_OBJECT_WAL__FLUSH_INTERVAL_MS=20
start() { # node [--controller]
  local n=$1; shift
  RUST_LOG=${WEIR_TEST_LOG:-warn} "$WEIR" broker --node-id "$n" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --rpc-listen 127.0.0.1:0 --object-store "file://$WORK/bucket" \
    --wal object --data-dir "$WORK/d$n" "$@" >"$WORK/out$n" 2>"$WORK/log$n" &
  PIDS+=($!)
  for _ in $(seq 1 300); do grep -q '^weir serving' "$WORK/out$n" 2>/dev/null && return; sleep 0.1; done
  cat "$WORK/log$n"; echo "broker $n did not start"; exit 1
}
start 1 --controller
start 2 --controller
start 3
addr() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" "$WORK/out$1"; }
export WEIR_BOOTSTRAP="$(addr 1 kafka),$(addr 2 kafka),$(addr 3 kafka)"
export WEIR_ADMIN="$(addr 1 admin)"
echo "cluster: kafka $WEIR_BOOTSTRAP, admin $WEIR_ADMIN"
status=0
"$PYTHON" tests/compat/cluster.py || status=1
if [ -n "${KAFKAJS_NODE_PATH:-}" ]; then
  NODE_PATH="$KAFKAJS_NODE_PATH" node tests/compat/cluster_kafkajs.cjs || status=1
else
  echo "KafkaJS suite not run: set KAFKAJS_NODE_PATH to a node_modules holding kafkajs"
  status=1
fi
exit "$status"
