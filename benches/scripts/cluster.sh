#!/usr/bin/env bash
# Partition moves and broker failover on a 3-broker Weir cluster (BENCHMARKS.md, "Cluster"):
# starts three `weir broker` processes (release build, object WAL) on one bucket, fills a 10 MB and
# a 2 GB single-partition topic, moves each MOVES times with cluster-bench, then kills a broker with
# SIGKILL while probing a 12-partition topic; then, on a fresh 2-broker cluster with the balancer
# on, writes 2 MB/s to a 12-partition topic and times a third broker taking its share. The bucket
# is a local directory unless STORE is set (an s3:// URL, with AWS_* variables). Everything runs on
# 127.0.0.1; the processes are stopped at the end.
#
# Usage: benches/scripts/cluster.sh [MOVES]   (default 100)
#        PHASES="moves failover join" (default all three), SESSION_MS (6000), BALANCE_MS (10000)
set -euo pipefail
cd "$(dirname "$0")/../.."
MOVES=${1:-100}
PHASES=${PHASES:-moves failover join}
WEIR=target/release/weir
BENCH=target/release/weir-bench
CLUSTER=target/release/cluster-bench
[ -x "$WEIR" ] && [ -x "$BENCH" ] && [ -x "$CLUSTER" ] ||
  { echo "build first: cargo build --release -p weir-broker -p weir-benches"; exit 1; }
WORK=$(mktemp -d)
BUCKET=${STORE:-file://$WORK/bucket}
mkdir -p "$WORK/bucket"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export WEIR_CLUSTER__SESSION_TIMEOUT_MS=${SESSION_MS:-6000} WEIR_CLUSTER__BALANCE_INTERVAL_MS=0
start() { # node [--controller]
  local n=$1; shift
  RUST_LOG=warn "$WEIR" broker --node-id "$n" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --rpc-listen 127.0.0.1:0 --object-store "$BUCKET" --wal object --data-dir "$WORK/d$n" "$@" \
    >"$WORK/out$n" 2>"$WORK/log$n" &
  PIDS+=($!)
  echo $! >"$WORK/pid$n"
  for _ in $(seq 1 300); do grep -q '^weir serving' "$WORK/out$n" 2>/dev/null && return; sleep 0.1; done
  cat "$WORK/log$n"; echo "broker $n did not start"; exit 1
}
addr() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" "$WORK/out$1"; }
if [[ " $PHASES " == *" moves "* || " $PHASES " == *" failover "* ]]; then
start 1 --controller
start 2 --controller
start 3
BOOT="$(addr 1 kafka),$(addr 2 kafka),$(addr 3 kafka)"
ADMIN=$(addr 1 admin)
echo "== cluster: $BOOT, store $BUCKET"
fi
if [[ " $PHASES " == *" moves "* ]]; then
"$BENCH" --quiet produce -b "$BOOT" --topic small --partitions 1 --count 10000 --record-size 1000 >/dev/null
"$BENCH" --quiet produce -b "$BOOT" --topic big --partitions 1 --count 20000 --record-size 100000 >/dev/null
sleep 12 # the uploads of the filled partitions
echo "== moves of a 10 MB partition"
"$CLUSTER" moves --bootstrap "$BOOT" --admin "$ADMIN" --topic small --partition 0 --moves "$MOVES" 2>/dev/null
echo "== moves of a 2 GB partition"
"$CLUSTER" moves --bootstrap "$BOOT" --admin "$ADMIN" --topic big --partition 0 --moves "$MOVES" 2>/dev/null
fi
if [[ " $PHASES " == *" failover "* ]]; then
echo "== failover: kill -9 of broker 3 (session timeout ${WEIR_CLUSTER__SESSION_TIMEOUT_MS} ms)"
"$BENCH" --quiet produce -b "$BOOT" --topic spread --partitions 12 --count 1200 --record-size 100 >/dev/null
"$CLUSTER" failover --bootstrap "$BOOT" --admin "$ADMIN" --topic spread --kill-pid "$(cat "$WORK/pid3")" 2>/dev/null
fi
if [[ " $PHASES " == *" join "* ]]; then
echo "== a new broker takes its share (balancer every ${BALANCE_MS:-10000} ms, 12 partitions, 2 MB/s)"
for n in 1 2 3; do [ -f "$WORK/pid$n" ] && kill -9 "$(cat "$WORK/pid$n")" 2>/dev/null || true; done
export WEIR_CLUSTER__BALANCE_INTERVAL_MS=${BALANCE_MS:-10000}
BUCKET=${STORE:-file://$WORK/bucket2}
mkdir -p "$WORK/bucket2"
start 11 --controller
start 12 --controller
BOOT="$(addr 11 kafka),$(addr 12 kafka)"
ADMIN=$(addr 11 admin)
"$BENCH" --quiet produce -b "$BOOT" --topic load --partitions 12 --rate 2000 --record-size 1000 \
  --duration 240s >/dev/null 2>&1 &
PIDS+=($!)
sleep 20 # the brokers' load reports reach the controller
start 13
"$CLUSTER" join --admin "$ADMIN" --topic load --broker 13 --timeout 100 --settle 120 2>/dev/null
fi
