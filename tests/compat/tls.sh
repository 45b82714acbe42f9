#!/usr/bin/env bash
# TLS with real clients (issue 11): makes a CA and a broker certificate with openssl, starts
# `weir serve` with one SSL listener on a free 127.0.0.1 port, then confluent-kafka and kcat talk
# to it over TLS, and a plaintext client gets nothing. Needs $PYTHON with confluent-kafka, and kcat
# ($KCAT, default `kcat` on PATH); .ci/run installs both. Last line: "compat: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WEIR=${WEIR:-target/debug/weir}
KCAT=${KCAT:-kcat}
[ -x "$WEIR" ] || cargo build -p weir-broker --bin weir
DIR=$(mktemp -d)
cleanup() { [ -n "${PID:-}" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }; rm -rf "$DIR"; }
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=weir test CA" \
  -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$DIR/broker.key" -out "$DIR/broker.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$DIR/san.ext"
openssl x509 -req -in "$DIR/broker.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
  -days 2 -extfile "$DIR/san.ext" -out "$DIR/broker.pem" 2>/dev/null

cat >"$DIR/weir.toml" <<TOML
admin_listen = "127.0.0.1:0"
data_dir = "$DIR/data"
offsets_topic_partitions = 4

[[listeners]]
name = "SECURE"
address = "127.0.0.1:0"
security_protocol = "SSL"

[tls]
cert_path = "$DIR/broker.pem"
key_path = "$DIR/broker.key"
TOML
RUST_LOG=warn "$WEIR" serve --config "$DIR/weir.toml" >"$DIR/out" &
PID=$!
for _ in $(seq 1 600); do
  grep -q '^weir serving' "$DIR/out" 2>/dev/null && break
  sleep 0.1
done
KAFKA=$(sed -n 's/^weir serving kafka=\([^ ]*\) admin=.*/\1/p' "$DIR/out")
[ -n "$KAFKA" ] || { echo "weir serve did not start"; exit 1; }

passed=0
failed=0
check() { # name, command...
  local name=$1
  shift
  if "$@"; then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}

ck_tls() {
  WEIR_BOOTSTRAP="$KAFKA" CA="$DIR/ca.pem" "$PYTHON" - <<'PY'
import os, time
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b, ca = os.environ["WEIR_BOOTSTRAP"], os.environ["CA"]
tls = {"bootstrap.servers": b, "security.protocol": "SSL", "ssl.ca.location": ca}
admin = AdminClient(tls)
admin.create_topics([NewTopic("tls-topic", 1, 1)])["tls-topic"].result(30)
p = Producer(tls)
for i in range(10):
    p.produce("tls-topic", value=f"secret-{i}".encode())
assert p.flush(30) == 0
c = Consumer({**tls, "group.id": "tls-reader", "auto.offset.reset": "earliest"})
c.assign([TopicPartition("tls-topic", 0, 0)])
got, end = [], time.time() + 30
while len(got) < 10 and time.time() < end:
    m = c.poll(0.5)
    if m is not None and not m.error():
        got.append(m.value().decode())
c.close()
assert got == [f"secret-{i}" for i in range(10)], got
# A plaintext client on the TLS listener gets no metadata.
try:
    AdminClient({"bootstrap.servers": b}).list_topics(timeout=5)
    raise SystemExit("a plaintext client was served on the TLS listener")
except KafkaException:
    pass
PY
}

kc_tls() {
  "$KCAT" -b "$KAFKA" -X security.protocol=SSL -X ssl.ca.location="$DIR/ca.pem" -C -t tls-topic \
    -o beginning -c 10 -e -q 2>/dev/null | grep -c '^secret-' | grep -qx 10
}

check ck_tls_produce_consume_and_plaintext_refused ck_tls
check kc_tls_consume kc_tls
echo "compat: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
