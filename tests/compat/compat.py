"""Client compatibility suite: real Kafka clients against `weir serve`.

Run by tests/compat/run.sh (which starts the broker) with the address in WEIR_BOOTSTRAP.
Each scenario prints PASS or FAIL; the last line reads "compat: N passed, M failed".
"""
import os
import sys
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


def ck_produce(topic, n, partitions, headers=True, timestamp=None):
    producer = Producer({**CK, "acks": "all", "linger.ms": 5})
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
    ck_produce(topic, 1000, 4)
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
    # Idempotent producers (the kafka-python 3 default) need InitProducerId: issue 10.
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=False)
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


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith(("ck_", "kp_")) and callable(fn) and fn.__name__ == "run":
            fn()
    failed = [n for n, e in RESULTS if e is not None]
    print(f"compat: {len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
