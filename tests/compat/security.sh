#!/usr/bin/env bash
# TLS, SASL and ACLs with real clients (issue 11): makes a CA and a broker certificate with
# openssl, starts `weir serve` with SSL, SASL_PLAINTEXT and SASL_SSL listeners on free 127.0.0.1
# ports and `authorizer = "acl"`, makes users with `weir admin scram set` and ACLs with `weir admin
# acl` and through the Kafka API (confluent-kafka's AdminClient), then: confluent-kafka and kcat
# over TLS, a plaintext client refused there; SCRAM-SHA-256/512 and PLAIN logins, wrong passwords
# refused; a consumer without ACLs cannot read, one with them can, until they are deleted. Needs
# $PYTHON with confluent-kafka, and kcat ($KCAT, default `kcat` on PATH); .ci/run installs both.
# Last line: "compat: N passed, M failed".
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
authorizer = "acl"
super_users = ["User:admin"]

[[listeners]]
name = "SECURE"
address = "127.0.0.1:0"
security_protocol = "SSL"

[[listeners]]
name = "LOGIN"
address = "127.0.0.1:0"
security_protocol = "SASL_PLAINTEXT"

[[listeners]]
name = "SECURE_LOGIN"
address = "127.0.0.1:0"
security_protocol = "SASL_SSL"

[sasl]
mechanisms = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]

[tls]
cert_path = "$DIR/broker.pem"
key_path = "$DIR/broker.key"
TOML
# The broker's log (failed logins are warnings here) is shown for a failed check only.
RUST_LOG=warn "$WEIR" serve --config "$DIR/weir.toml" >"$DIR/out" 2>"$DIR/log" &
PID=$!
for _ in $(seq 1 600); do
  grep -q '^weir serving' "$DIR/out" 2>/dev/null && break
  sleep 0.1
done
KAFKA=$(sed -n 's/^weir serving kafka=\([^ ]*\) admin=.*/\1/p' "$DIR/out")
[ -n "$KAFKA" ] || { echo "weir serve did not start"; exit 1; }
ADMIN=http://$(sed -n 's/^weir serving .* admin=\([^ ]*\).*/\1/p' "$DIR/out")
LISTENERS=$(sed -n 's/^weir serving .* listeners=\([^ ]*\).*/\1/p' "$DIR/out")
SASL=$(echo "$LISTENERS" | cut -d, -f2)
SASL_SSL=$(echo "$LISTENERS" | cut -d, -f3)
scram_set() { # user mechanism password
  echo "$3" | "$WEIR" admin --url "$ADMIN" --token-file "$DIR/data/admin.token" scram set "$1" \
    --mechanism "$2" --password-stdin >/dev/null
}
scram_set admin SCRAM-SHA-512 admin-pw
scram_set alice SCRAM-SHA-256 alice-pw
scram_set bob SCRAM-SHA-256 bob-pw
# The TLS checks run without a login (User:ANONYMOUS): ACLs for their topic and group.
"$WEIR" admin --url "$ADMIN" --token-file "$DIR/data/admin.token" acl add --principal User:ANONYMOUS --operation ALL --topic tls-topic >/dev/null
"$WEIR" admin --url "$ADMIN" --token-file "$DIR/data/admin.token" acl add --principal User:ANONYMOUS --operation ALL --group tls-reader >/dev/null

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
    tail -n 30 "$DIR/log"
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
    AdminClient({"bootstrap.servers": b, "log_level": 0}).list_topics(timeout=5)
    raise SystemExit("a plaintext client was served on the TLS listener")
except KafkaException:
    pass
PY
}

kc_tls() {
  "$KCAT" -b "$KAFKA" -X security.protocol=SSL -X ssl.ca.location="$DIR/ca.pem" -C -t tls-topic \
    -o beginning -c 10 -e -q 2>/dev/null | grep -c '^secret-' | grep -qx 10
}

ck_sasl() {
  SASL="$SASL" SASL_SSL="$SASL_SSL" CA="$DIR/ca.pem" "$PYTHON" - <<'PY'
import os, time
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
    AdminClient, NewTopic, ResourcePatternType, ResourceType, ScramCredentialInfo, ScramMechanism,
    UserScramCredentialUpsertion)
def conf(user, password, mechanism="SCRAM-SHA-256", tls=False):
    c = {"bootstrap.servers": os.environ["SASL_SSL" if tls else "SASL"],
         "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
         "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}
    if tls:
        c["ssl.ca.location"] = os.environ["CA"]
    return c
su = conf("admin", "admin-pw", "SCRAM-SHA-512", tls=True)
admin = AdminClient(su)
admin.create_topics([NewTopic("payments", 1, 1)])["payments"].result(30)
p = Producer(su)
for i in range(10):
    p.produce("payments", value=f"pay-{i}".encode())
assert p.flush(30) == 0
# ACLs through the Kafka API (CreateAcls, DescribeAcls).
acls = [AclBinding(ResourceType.TOPIC, "payments", ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(ResourceType.GROUP, "billing", ResourcePatternType.PREFIXED, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW)]
for f in admin.create_acls(acls).values():
    f.result(30)
every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                         AclOperation.ANY, AclPermissionType.ANY)
described = admin.describe_acls(every).result(30)
assert all(a in described for a in acls), described
# SCRAM credentials through the Kafka API (AlterUserScramCredentials, Describe...).
admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
    "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"carol-pw")])["carol"].result(30)
creds = admin.describe_user_scram_credentials().result(30)
assert {"admin", "alice", "bob", "carol"} <= set(creds), creds
assert [(i.mechanism, i.iterations) for i in creds["carol"].scram_credential_infos] == [
    (ScramMechanism.SCRAM_SHA_256, 8192)], creds["carol"]
def read(c, n=10, timeout=20):
    c.subscribe(["payments"])
    got, end = [], time.time() + timeout
    try:
        while len(got) < n and time.time() < end:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                return m.error()
            got.append(m.value().decode())
    finally:
        c.close()
    return got
group = lambda g: {"group.id": g, "auto.offset.reset": "earliest"}
got = read(Consumer({**conf("alice", "alice-pw"), **group("billing-1")}))
assert got == [f"pay-{i}" for i in range(10)], got
# PLAIN over TLS checks the password against the same credentials.
got = read(Consumer({**conf("alice", "alice-pw", "PLAIN", tls=True), **group("billing-2")}))
assert got == [f"pay-{i}" for i in range(10)], got
# Bob has no ACL: refused.
err = read(Consumer({**conf("bob", "bob-pw"), **group("billing-3")}))
assert not isinstance(err, list) and err.code() in (29, 30), err
# carol (made through the Kafka API) logs in; wrong passwords do not.
AdminClient(conf("carol", "carol-pw")).list_topics(timeout=10)
for bad in (conf("alice", "nope"), conf("alice", "nope", "PLAIN", tls=True), conf("admin", "x", "SCRAM-SHA-512")):
    try:
        AdminClient({**bad, "log_level": 0}).list_topics(timeout=5)
        raise SystemExit(f"logged in with a wrong password: {bad['sasl.mechanism']}")
    except KafkaException:
        pass
PY
}

kc_sasl() {
  local ok
  ok=$("$KCAT" -b "$SASL" -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=SCRAM-SHA-256 \
    -X sasl.username=alice -X sasl.password=alice-pw -C -t payments -o beginning -c 10 -e -q \
    2>/dev/null | grep -c '^pay-' || true)
  [ "$ok" = 10 ] || { echo "kcat as alice read $ok"; return 1; }
  # A wrong password and a user without ACLs read nothing.
  ok=$(timeout 20 "$KCAT" -b "$SASL" -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=SCRAM-SHA-256 \
    -X sasl.username=alice -X sasl.password=wrong -C -t payments -o beginning -c 10 -e -q \
    2>/dev/null | grep -c '^pay-' || true)
  [ "$ok" = 0 ] || { echo "kcat with a wrong password read $ok"; return 1; }
  ok=$(timeout 20 "$KCAT" -b "$SASL" -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=SCRAM-SHA-256 \
    -X sasl.username=bob -X sasl.password=bob-pw -C -t payments -o beginning -c 10 -e -q \
    2>/dev/null | grep -c '^pay-' || true)
  [ "$ok" = 0 ] || { echo "kcat as bob (no ACL) read $ok"; return 1; }
}

ck_acl_delete() {
  SASL="$SASL" "$PYTHON" - <<'PY'
import os, time
from confluent_kafka import Consumer
from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
    ResourcePatternType, ResourceType)
def conf(user, password, mechanism):
    return {"bootstrap.servers": os.environ["SASL"], "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}
admin = AdminClient(conf("admin", "admin-pw", "SCRAM-SHA-512"))
gone = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "payments", ResourcePatternType.LITERAL,
    "User:alice", None, AclOperation.ANY, AclPermissionType.ANY)])
deleted = list(gone.values())[0].result(30)
assert len(deleted) == 1, deleted
c = Consumer({**conf("alice", "alice-pw", "SCRAM-SHA-256"), "group.id": "billing-9",
              "auto.offset.reset": "earliest"})
c.subscribe(["payments"])
end, outcome = time.time() + 20, None
while outcome is None and time.time() < end:
    m = c.poll(0.5)
    if m is not None:
        outcome = m.error() or m.value()
c.close()
assert outcome is not None and not isinstance(outcome, bytes) and outcome.code() == 29, outcome
PY
}

check ck_tls_produce_consume_and_plaintext_refused ck_tls
check kc_tls_consume kc_tls
check ck_sasl_scram_plain_acls_and_credentials ck_sasl
check kc_sasl_scram_and_acls kc_sasl
check ck_acl_delete_takes_read_away ck_acl_delete
echo "compat: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
