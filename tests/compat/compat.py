"""Client compatibility suite: real Kafka clients against `weir serve`.

confluent-kafka (ck_), kcat driven as a subprocess (kc_; $KCAT, default `kcat` on PATH) and
kafka-python (kp_) scenarios.
Run by tests/compat/run.sh (which starts the broker) with the address in WEIR_BOOTSTRAP.
Each scenario prints PASS or FAIL; the last line reads "compat: N passed, M failed".
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid

BOOTSTRAP = os.environ["WEIR_BOOTSTRAP"]
RESULTS = []


def scenario(fn):
    def run():
        name = fn.__name__
        start = time.time()
        try:
            fn()
            RESULTS.append((name, None))
            print(f"PASS {name} ({time.time() - start:.1f}s)", flush=True)
        except Exception as e:  # noqa: BLE001 - a scenario may fail any way
            RESULTS.append((name, e))
            print(f"FAIL {name}: {e!r}", flush=True)
            traceback.print_exc()
    return run


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- confluent-kafka (librdkafka 2.x)
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # noqa: E402

CK = {"bootstrap.servers": BOOTSTRAP}


def ck_create(topic, partitions):
    admin = AdminClient(CK)
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    return admin


def ck_produce(topic, n, partitions, headers=True, timestamp=None, idempotent=False):
    producer = Producer({**CK, "acks": "all", "linger.ms": 5, "enable.idempotence": idempotent})
    for i in range(n):
        producer.produce(
            topic,
            key=f"k{i}".encode(),
            value=f"value-{i}".encode(),
            partition=i % partitions,
            headers=[("h", f"{i}".encode())] if headers else None,
            timestamp=(timestamp(i) if timestamp else 0),
        )
    assert producer.flush(30) == 0, "unflushed records"


def ck_drain(consumer, want, timeout=60):
    got = {}
    end = time.time() + timeout
    while len(got) < want and time.time() < end:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise RuntimeError(m.error())
        got[m.key().decode()] = (m.partition(), m.offset(), m.value(), m.headers())
    return got


@scenario
def ck_admin_create_describe_delete():
    topic = fresh("ck-admin")
    admin = ck_create(topic, 3)
    md = admin.list_topics(timeout=10)
    assert topic in md.topics and len(md.topics[topic].partitions) == 3
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "604800000", configs["retention.ms"]
    admin.delete_topics([topic])[topic].result(30)
    assert topic not in admin.list_topics(timeout=10).topics


@scenario
def ck_produce_consume_group():
    topic = fresh("ck-rt")
    ck_create(topic, 4)
    ck_produce(topic, 1000, 4, idempotent=True)
    c = Consumer({**CK, "group.id": fresh("g"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = ck_drain(c, 1000)
    c.close()
    assert len(got) == 1000, len(got)
    for i in (0, 1, 499, 999):
        p, o, v, h = got[f"k{i}"]
        assert v == f"value-{i}".encode() and h == [("h", f"{i}".encode())] and p == i % 4


@scenario
def ck_group_rebalance_and_committed_offsets():
    topic, group = fresh("ck-reb"), fresh("g")
    ck_create(topic, 6)
    ck_produce(topic, 600, 6)
    conf = {**CK, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    a, b = Consumer(conf), Consumer(conf)
    a.subscribe([topic])
    b.subscribe([topic])
    seen = set()
    end = time.time() + 30
    while (not a.assignment() or not b.assignment()) and time.time() < end:
        for c in (a, b):
            m = c.poll(0.2)
            if m is not None and not m.error():
                seen.add(m.key())
                c.commit(m, asynchronous=False)
    assert a.assignment() and b.assignment(), "both members got partitions"
    b.close()  # leaves: its partitions move to a
    end = time.time() + 60
    while len(seen) < 600 and time.time() < end:
        m = a.poll(0.2)
        if m is not None and not m.error():
            seen.add(m.key())
            a.commit(m, asynchronous=False)
    assert len(a.assignment()) == 6, a.assignment()
    a.close()
    assert len(seen) == 600, len(seen)
    # A new member of the group starts at the committed offsets: nothing old comes back.
    ck_produce(topic, 6, 6)
    c = Consumer(conf)
    c.subscribe([topic])
    later = ck_drain(c, 6, timeout=30)
    c.close()
    assert len(later) == 6, later
    assert all(offset == 100 for _, offset, _, _ in later.values()), later


@scenario
def ck_kip848_group_rebalance_and_committed_offsets():
    """The KIP-848 protocol (group.protocol=consumer): the broker assigns."""
    topic, group = fresh("ck-848"), fresh("g")
    ck_create(topic, 6)
    ck_produce(topic, 600, 6)
    conf = {**CK, "group.id": group, "group.protocol": "consumer",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    a, b = Consumer(conf), Consumer(conf)
    a.subscribe([topic])
    b.subscribe([topic])
    seen = set()

    def take(c):
        m = c.poll(0.2)
        if m is not None and not m.error():
            seen.add(m.key())
            c.commit(m, asynchronous=False)

    end = time.time() + 30
    while (not a.assignment() or not b.assignment()
           or len(a.assignment()) + len(b.assignment()) != 6) and time.time() < end:
        take(a)
        take(b)
    assert a.assignment() and b.assignment(), "both members got partitions"
    assert not {(p.topic, p.partition) for p in a.assignment()} & \
        {(p.topic, p.partition) for p in b.assignment()}, "no partition twice"
    b.close()  # leaves: the broker moves its partitions to a
    end = time.time() + 60
    while len(seen) < 600 and time.time() < end:
        take(a)
    assert len(a.assignment()) == 6, a.assignment()
    a.close()
    assert len(seen) == 600, len(seen)
    ck_produce(topic, 6, 6)
    c = Consumer(conf)
    c.subscribe([topic])
    later = ck_drain(c, 6, timeout=30)
    c.close()
    assert len(later) == 6, later
    assert all(offset == 100 for _, offset, _, _ in later.values()), later


@scenario
def ck_offsets_for_times():
    topic = fresh("ck-ts")
    ck_create(topic, 1)
    base = 1_700_000_000_000
    ck_produce(topic, 30, 1, headers=False, timestamp=lambda i: base + i * 1000)
    c = Consumer({**CK, "group.id": fresh("g")})
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 10_500)], timeout=10)
    c.close()
    assert found[0].offset == 11, found


@scenario
def ck_seek_pause_resume():
    topic = fresh("ck-seek")
    ck_create(topic, 1)
    ck_produce(topic, 20, 1)
    c = Consumer({**CK, "group.id": fresh("g"), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 5)])
    m = None
    end = time.time() + 20
    while m is None and time.time() < end:
        m = c.poll(0.5)
    assert m is not None and m.offset() == 5, m
    c.seek(TopicPartition(topic, 0, 15))
    m = None
    end = time.time() + 20
    while (m is None or m.offset() != 15) and time.time() < end:
        m = c.poll(0.5)
    assert m is not None and m.offset() == 15, m
    c.pause([TopicPartition(topic, 0)])
    assert c.poll(1.0) is None, "paused partitions deliver nothing"
    c.resume([TopicPartition(topic, 0)])
    m = None
    end = time.time() + 20
    while m is None and time.time() < end:
        m = c.poll(0.5)
    assert m is not None and m.offset() == 16, m
    c.close()


# ---------------------------------------------------------------- kcat (Debian's, librdkafka 2.0.2)
KCAT = os.environ.get("KCAT", "kcat")
KC_GROUP_CONF = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500",
                 "-X", "auto.offset.reset=earliest", "-X", "auto.commit.interval.ms=200"]


def kcat(*args, stdin=None, timeout=30):
    """Runs kcat against the broker; a missing kcat or a non-zero exit fails the scenario."""
    r = subprocess.run([KCAT, "-b", BOOTSTRAP, *args], input=stdin, capture_output=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"kcat {' '.join(args)} exited {r.returncode}: {r.stderr.decode()}")
    return r.stdout.decode()


def ck_read_all(topic, partitions, want, timeout=30):
    """The topic's records read by an assigned confluent-kafka consumer, by (partition, offset)."""
    c = Consumer({**CK, "group.id": fresh("g"), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {}
    end = time.time() + timeout
    while len(got) < want and time.time() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got[(m.partition(), m.offset())] = (m.key(), m.value(), m.headers())
    c.close()
    return got


class KcatMember:
    """A `kcat -G` balanced consumer whose output lines ("partition offset key") and current
    assignment (from its "Group ... rebalanced" lines on stderr) are collected as it runs."""

    def __init__(self, group, topic, *extra):
        self.proc = subprocess.Popen(
            [KCAT, "-b", BOOTSTRAP, "-G", group, "-u", "-f", "%p %o %k\\n", *KC_GROUP_CONF, *extra,
             topic],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.records, self.log, self.assignment = [], [], None
        self.threads = [threading.Thread(target=self._out, daemon=True),
                        threading.Thread(target=self._err, daemon=True)]
        for t in self.threads:
            t.start()

    def _out(self):
        for line in self.proc.stdout:
            p, o, k = line.split()
            self.records.append((int(p), int(o), k))

    def _err(self):
        for line in self.proc.stderr:
            self.log.append(line)
            if "rebalanced" in line:
                parts = {int(x) for x in re.findall(r"\[(\d+)\]", line)}
                self.assignment = parts if ": assigned:" in line else set()

    def keys(self):
        return {k for _, _, k in self.records}

    def stop(self, timeout=20):
        """SIGTERM: kcat closes its consumer (commits and leaves the group) and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        for t in self.threads:
            t.join(5)
        assert rc == 0, f"kcat member exited {rc}: {''.join(self.log)}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(cond, timeout, what, state=lambda: ""):
    end = time.time() + timeout
    while not cond() and time.time() < end:
        time.sleep(0.1)
    assert cond(), f"timed out waiting for {what} {state()}"


def split_between(a, b, partitions):
    """Both hold partitions, none twice, all of them between the two."""
    return bool(a) and bool(b) and not a & b and a | b == set(range(partitions))


@scenario
def kc_metadata_list():
    topic = fresh("kc-md")
    admin = ck_create(topic, 3)
    md = json.loads(kcat("-L", "-J"))
    brokers = {b["id"]: b["name"] for b in md["brokers"]}
    assert list(brokers.values()) == [BOOTSTRAP], md["brokers"]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, sorted(topics)
    parts = topics[topic]["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1, 2], parts
    for p in parts:
        assert p["leader"] in brokers and [r["id"] for r in p["replicas"]] == [p["leader"]], p
        assert [r["id"] for r in p["isrs"]] == [p["leader"]], p
    one = json.loads(kcat("-L", "-J", "-t", topic))
    assert [t["topic"] for t in one["topics"]] == [topic], one
    assert "error" not in one["topics"][0], one
    text = kcat("-L", "-t", topic)
    assert f'topic "{topic}" with 3 partitions' in text, text
    admin.delete_topics([topic])[topic].result(30)
    after = json.loads(kcat("-L", "-J"))
    assert topic not in {t["topic"] for t in after["topics"]}, "deleted topic still listed"


@scenario
def kc_produce_keys_headers():
    topic = fresh("kc-prod")
    ck_create(topic, 3)
    lines = "".join(f"k{i}:value {i}\n" for i in range(100)).encode()
    kcat("-P", "-t", topic, "-K:", "-H", "app=weir", "-H", "trace=42", stdin=lines)
    # An explicit partition, too.
    kcat("-P", "-t", topic, "-p", "1", "-K:", stdin=b"pinned:on one\n")
    got = ck_read_all(topic, 3, 101)
    assert len(got) == 101, len(got)
    by_key = {k.decode(): (p, v, h) for (p, _), (k, v, h) in got.items()}
    assert len(by_key) == 101, "keys are unique"
    for i in range(100):
        p, v, h = by_key[f"k{i}"]
        assert v == f"value {i}".encode(), (i, v)
        assert h == [("app", b"weir"), ("trace", b"42")], (i, h)
    assert by_key["pinned"] == (1, b"on one", None), by_key["pinned"]
    # Offsets within each partition are dense from 0, in the order kcat produced them.
    for part in range(3):
        offs = sorted(o for p, o in got if p == part)
        assert offs == list(range(len(offs))), (part, offs)
        keys = [int(got[(part, o)][0][1:]) for o in offs if got[(part, o)][0] != b"pinned"]
        assert keys == sorted(keys), (part, keys)


@scenario
def kc_consume_content():
    topic = fresh("kc-cons")
    ck_create(topic, 2)
    ck_produce(topic, 40, 2)
    out = kcat("-C", "-t", topic, "-o", "beginning", "-e", "-J")
    recs = [json.loads(line) for line in out.splitlines()]
    assert len(recs) == 40, len(recs)
    for r in recs:
        i = int(r["key"][1:])
        assert r["payload"] == f"value-{i}" and r["partition"] == i % 2, r
        assert r["offset"] == i // 2 and r["headers"] == ["h", str(i)], r
    # A start offset and a count on one partition; the last two records from the tail.
    out = kcat("-C", "-t", topic, "-p", "0", "-o", "5", "-c", "3", "-f", "%o %k %s\\n")
    assert out.splitlines() == ["5 k10 value-10", "6 k12 value-12", "7 k14 value-14"], out
    out = kcat("-C", "-t", topic, "-p", "1", "-o", "-2", "-e", "-f", "%o %k\\n")
    assert out.splitlines() == ["18 k37", "19 k39"], out


@scenario
def kc_offsets_for_times():
    topic = fresh("kc-ts")
    ck_create(topic, 2)
    base = 1_700_000_000_000
    ck_produce(topic, 40, 2, headers=False, timestamp=lambda i: base + i * 1000)
    # Partition 0 holds i = 0, 2, 4, ... at offsets i/2; partition 1 holds the odd ones.
    out = kcat("-Q", "-t", f"{topic}:0:{base + 10_500}", "-t", f"{topic}:1:{base + 10_500}")
    found = dict(re.findall(r"\[(\d+)\] offset (-?\d+)", out))
    assert found == {"0": "6", "1": "5"}, out
    out = kcat("-C", "-t", topic, "-p", "0", "-o", f"s@{base + 30_000}", "-e", "-f", "%o %k %T\\n")
    assert out.splitlines() == [f"{o} k{2 * o} {base + 2 * o * 1000}" for o in range(15, 20)], out


def ck_produce_keys(topic, keys, partitions):
    producer = Producer({**CK, "acks": "all", "linger.ms": 5})
    for i, key in enumerate(keys):
        producer.produce(topic, key=key.encode(), value=b"x", partition=i % partitions)
    assert producer.flush(30) == 0, "unflushed records"


@scenario
def kc_group_rebalance_and_committed_offsets():
    topic, group = fresh("kc-grp"), fresh("g")
    ck_create(topic, 4)
    # Three batches of 200 (50 a partition) with distinct keys: before, during and after the
    # two-member phase.
    batches = [[f"{b}{i}" for i in range(200)] for b in "abc"]
    ck_produce_keys(topic, batches[0], 4)
    a = KcatMember(group, topic)
    b = None
    try:
        wait_until(lambda: a.keys() >= set(batches[0]), 30, "the first member to read batch a")
        assert a.assignment == {0, 1, 2, 3}, a.assignment
        b = KcatMember(group, topic)
        # (Each member's lines are read by its own thread: wait for the settled split.)
        wait_until(lambda: split_between(a.assignment, b.assignment, 4), 30,
                   "the partitions to be split", lambda: (a.assignment, b.assignment))
        ck_produce_keys(topic, batches[1], 4)
        wait_until(lambda: a.keys() | b.keys() >= set(batches[1]), 30, "the two to read batch b")
        b_parts = {p for p, o, k in b.records if k.startswith("b")}
        a_parts = {p for p, o, k in a.records if k.startswith("b")}
        assert b_parts == b.assignment and a_parts == a.assignment, (a_parts, b_parts)
        b.stop()  # leaves the group: its partitions move back to the first member
        wait_until(lambda: a.assignment == {0, 1, 2, 3}, 30, "the survivor to own all partitions")
        ck_produce_keys(topic, batches[2], 4)
        want = set().union(*batches)
        wait_until(lambda: a.keys() | b.keys() >= want, 30, "all 600 records")
        assert a.keys() | b.keys() == want, (a.keys() | b.keys()) - want
        a.stop()
    finally:
        a.kill()
        if b:
            b.kill()
    # Both members committed on the way out: the group's offsets are the log ends.
    c = Consumer({**CK, "group.id": group})
    committed = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    c.close()
    assert [tp.offset for tp in committed] == [150] * 4, committed
    # A restarted member resumes there: only records produced since come back.
    ck_produce_keys(topic, [f"new{i}" for i in range(8)], 4)
    r = KcatMember(group, topic, "-e")  # exits once every assigned partition is at its end
    try:
        r.proc.wait(30)
    finally:
        r.kill()
    r.stop()
    want = sorted((i % 4, 150 + i // 4, f"new{i}") for i in range(8))
    assert sorted(r.records) == want, r.records


# ---------------------------------------------------------------- kafka-python (pure Python)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer  # noqa: E402
from kafka import TopicPartition as KpTopicPartition  # noqa: E402
from kafka.admin import NewTopic as KpNewTopic  # noqa: E402


@scenario
def kp_admin_create_list_delete():
    topic = fresh("kp-admin")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([KpNewTopic(topic, 2, 1)])
    assert topic in admin.list_topics()
    admin.delete_topics([topic])
    end = time.time() + 10
    while topic in admin.list_topics() and time.time() < end:
        time.sleep(0.2)
    assert topic not in admin.list_topics()
    admin.close()


@scenario
def kp_produce_consume_group():
    topic = fresh("kp-rt")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([KpNewTopic(topic, 3, 1)])
    admin.close()
    # kafka-python 3's default producer: idempotent (InitProducerId, sequence numbers).
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    assert producer.config["enable_idempotence"], "the default this scenario is about"
    for i in range(300):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % 3,
                      headers=[("h", b"x")])
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=fresh("g"),
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    got = {m.key: (m.value, m.headers) for m in consumer}
    consumer.commit()
    consumer.close()
    assert len(got) == 300, len(got)
    assert got[b"k7"] == (b"v7", [("h", b"x")])


@scenario
def kp_offsets_for_times():
    topic = fresh("kp-ts")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([KpNewTopic(topic, 1, 1)])
    admin.close()
    base = 1_700_000_000_000
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=False)
    for i in range(20):
        producer.send(topic, value=b"x", partition=0, timestamp_ms=base + i * 1000)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
    tp = KpTopicPartition(topic, 0)
    found = consumer.offsets_for_times({tp: base + 4_500})
    assert found[tp].offset == 5, found
    assert consumer.end_offsets([tp])[tp] == 20
    assert consumer.beginning_offsets([tp])[tp] == 0
    consumer.close()


def kp_create(topic, partitions, configs=None):
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([KpNewTopic(topic, partitions, 1, topic_configs=configs or {})])
    return admin


def kp_produce(topic, keys, partitions):
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=False)
    for i, key in enumerate(keys):
        producer.send(topic, key=key.encode(), value=f"v-{key}".encode(), partition=i % partitions)
    producer.flush()
    producer.close()


KP_GROUP_CONF = {"auto_offset_reset": "earliest", "enable_auto_commit": False,
                 "session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


@scenario
def kp_seek_pause_resume():
    topic = fresh("kp-seek")
    kp_create(topic, 1).close()
    kp_produce(topic, [f"k{i}" for i in range(20)], 1)
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, max_poll_records=1)
    tp = KpTopicPartition(topic, 0)
    c.assign([tp])

    def next_offset():
        end = time.time() + 20
        while time.time() < end:
            for recs in c.poll(timeout_ms=500).values():
                return recs[0].offset
        raise AssertionError("no record")

    c.seek(tp, 5)
    assert next_offset() == 5
    c.seek(tp, 15)
    assert next_offset() == 15
    c.pause(tp)
    assert c.paused() == {tp}, c.paused()
    end = time.time() + 1.5
    while time.time() < end:
        assert not c.poll(timeout_ms=300), "paused partitions deliver nothing"
    c.resume(tp)
    assert not c.paused()
    assert next_offset() == 16
    c.seek_to_beginning(tp)
    assert c.position(tp) == 0 and next_offset() == 0
    c.seek_to_end(tp)
    assert c.position(tp) == 20, c.position(tp)
    c.close()


@scenario
def kp_group_rebalance_and_committed_offsets():
    from kafka.errors import CommitFailedError, RebalanceInProgressError
    topic, group = fresh("kp-reb"), fresh("g")
    kp_create(topic, 6).close()
    kp_produce(topic, [f"a{i}" for i in range(300)], 6)
    seen, assigned, errors = set(), {}, []
    stops = {"a": threading.Event(), "b": threading.Event()}

    def member(name):
        try:
            c = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group,
                              client_id=f"kp-{name}", **KP_GROUP_CONF)
            while not stops[name].is_set():
                recs = c.poll(timeout_ms=200)
                for batch in recs.values():
                    seen.update(m.key.decode() for m in batch)
                if recs:
                    try:
                        c.commit()
                    except (CommitFailedError, RebalanceInProgressError):
                        pass  # revoked meanwhile: the new owner reads those records again
                assigned[name] = {tp.partition for tp in c.assignment()}
            c.close()  # commits nothing more (manual commits) and leaves the group
            assigned[name] = "closed"
        except Exception as e:  # noqa: BLE001
            errors.append((name, e))

    threads = {n: threading.Thread(target=member, args=(n,), daemon=True) for n in stops}
    threads["a"].start()
    wait_until(lambda: len(seen) == 300 or errors, 30, "the first member to read 300")
    threads["b"].start()
    # (Each member notes its assignment after its own poll: wait for the settled split.)
    wait_until(lambda: split_between(assigned.get("a"), assigned.get("b"), 6) or errors, 30,
               "the partitions to be split", lambda: assigned)
    assert not errors, errors
    kp_produce(topic, [f"b{i}" for i in range(300)], 6)
    wait_until(lambda: len(seen) == 600 or errors, 30, "the members to read 600")
    stops["b"].set()
    threads["b"].join(20)
    assert assigned.get("b") == "closed", assigned
    wait_until(lambda: assigned.get("a") == set(range(6)) or errors, 30,
               "the survivor to own all partitions")
    kp_produce(topic, [f"c{i}" for i in range(300)], 6)
    wait_until(lambda: len(seen) == 900 or errors, 30, "all 900 records")
    stops["a"].set()
    threads["a"].join(20)
    assert not errors, errors
    want = {f"{b}{i}" for b in "abc" for i in range(300)}
    assert seen == want, sorted(want - seen)[:10]
    # The group committed the log ends; a new member starts there.
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    offsets = admin.list_group_offsets(group)[group]
    admin.close()
    assert {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic} == \
        {p: 150 for p in range(6)}, offsets
    kp_produce(topic, [f"new{i}" for i in range(6)], 6)
    c = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, **KP_GROUP_CONF)
    later = []
    end = time.time() + 30
    while len(later) < 6 and time.time() < end:
        for batch in c.poll(timeout_ms=200).values():
            later.extend((m.partition, m.offset, m.key.decode()) for m in batch)
    for batch in c.poll(timeout_ms=1000).values():  # anything older would show up by now
        later.extend((m.partition, m.offset, m.key.decode()) for m in batch)
    c.close()
    later.sort()
    assert later == [(i, 150, f"new{i}") for i in range(6)], later


@scenario
def kp_admin_configs_groups_delete():
    from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType
    topic, group = fresh("kp-adm"), fresh("g")
    admin = kp_create(topic, 2, {"retention.ms": "3600000"})
    res = KpConfigResource(ConfigResourceType.TOPIC, topic)
    modified = admin.describe_configs([res])["topic"][topic]
    assert modified["retention.ms"]["value"] == "3600000", modified
    every = admin.describe_configs([res], config_filter="all")["topic"][topic]
    assert every["cleanup.policy"]["value"] == "delete", every.get("cleanup.policy")
    kp_produce(topic, [f"k{i}" for i in range(10)], 2)
    c = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group,
                      client_id="kp-admin-member", **KP_GROUP_CONF)
    got = 0
    end = time.time() + 20
    while got < 10 and time.time() < end:
        got += sum(len(b) for b in c.poll(timeout_ms=300).values())
    assert got == 10, got
    c.commit()
    desc = admin.describe_groups([group])[group]
    assert desc["error"] is None and desc["group_state"] == "Stable", desc
    assert desc["protocol_type"] == "consumer" and desc["protocol_data"] == "range", desc
    [m] = desc["members"]
    assert m["client_id"] == "kp-admin-member", m
    assigned = m["member_assignment"]["assigned_partitions"]
    assert assigned == [{"topic": topic, "partitions": [0, 1]}], m
    listed = {g["group_id"]: g for g in admin.list_groups()}
    assert listed[group]["protocol_type"] == "consumer", listed.get(group)
    offsets = admin.list_group_offsets(group)[group]
    assert {tp.partition: om.offset for tp, om in offsets.items()} == {0: 5, 1: 5}, offsets
    c.close()
    desc = admin.describe_groups([group])[group]
    assert desc["group_state"] == "Empty" and desc["members"] == [], desc
    assert admin.delete_groups([group]) == {group: "OK"}
    assert group not in {g["group_id"] for g in admin.list_groups()}
    admin.delete_topics([topic])
    assert topic not in admin.list_topics()
    admin.close()


@scenario
def kp_describe_group_member_host():
    # Kafka names each member's address in DescribeGroups (client_host "/127.0.0.1"), which
    # kafka-consumer-groups.sh --describe and group UIs show in their HOST column.
    topic, group = fresh("kp-host"), fresh("g")
    admin = kp_create(topic, 1)
    c = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, **KP_GROUP_CONF)
    end = time.time() + 20
    while not c.assignment() and time.time() < end:
        c.poll(timeout_ms=200)
    try:
        [m] = admin.describe_groups([group])[group]["members"]
    finally:
        c.close()
        admin.close()
    assert m["client_host"].endswith("127.0.0.1"), m


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith(("ck_", "kc_", "kp_")) and callable(fn) and fn.__name__ == "run":
            fn()
    failed = [n for n, e in RESULTS if e is not None]
    print(f"compat: {len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
