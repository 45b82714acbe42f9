"""Exactly-once with confluent-kafka: a transactional consume-transform-produce loop killed at
random points.

The worker (`eos.py worker IN OUT PARTITIONS`) reads IN with a read_committed consumer, and for
each polled batch writes "out:<value>" to OUT and the consumed positions to its group in one
transaction (send_offsets_to_transaction). The harness writes N input records, then starts the
worker and kills it with SIGKILL at random moments (mid-transaction, mid-commit, during start-up)
several times, each time starting a new one with the same transactional.id, which fences and
aborts whatever the killed one left open. At the end a read_committed consumer of OUT must see
each input exactly once; a read_uncommitted one sees the aborted copies too.

Run by tests/compat/run.sh with the broker address in WEIR_BOOTSTRAP; the last line is
"compat: 1 passed, 0 failed" or "compat: 0 passed, 1 failed" after the reason. The seed of the kill schedule is printed (EOS_SEED reruns it).
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = os.environ["WEIR_BOOTSTRAP"]
CK = {"bootstrap.servers": BOOTSTRAP}
N = 3000
PARTITIONS = 4
KILLS = 6


def worker(inp, out, partitions):
    producer = Producer({
        **CK,
        "transactional.id": f"eos-{inp}",
        "transaction.timeout.ms": 10000,
        "linger.ms": 5,
    })
    producer.init_transactions(30)
    consumer = Consumer({
        **CK,
        "group.id": f"eos-{inp}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    })
    # Assigned, not subscribed: each start resumes from the group's committed offsets.
    consumer.assign([TopicPartition(inp, p) for p in range(partitions)])
    while True:
        msgs = [m for m in consumer.consume(num_messages=20, timeout=0.5) if not m.error()]
        if not msgs:
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce(out, key=m.key(), value=b"out:" + m.value(), partition=m.partition())
        # The transform's work: most of a worker's time is inside a transaction, so most kills
        # land there.
        producer.flush(30)
        time.sleep(0.05)
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)


def start_worker(inp, out):
    return subprocess.Popen([sys.executable, __file__, "worker", inp, out, str(PARTITIONS)])


def read(topic, isolation, want, timeout):
    """Values of `topic` from the beginning: until `want` distinct ones came and 2 s passed
    without more, or `timeout`."""
    c = Consumer({
        **CK,
        "group.id": f"reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    values = []
    end = time.time() + timeout
    last_new = time.time()
    while time.time() < end:
        m = c.poll(0.2)
        if m is not None and not m.error():
            values.append(m.value().decode())
            last_new = time.time()
        elif len(set(values)) >= want and time.time() - last_new > 2:
            break
    c.close()
    return values


def main():
    seed = int(os.environ.get("EOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"eos: seed {seed}", flush=True)
    tag = uuid.uuid4().hex[:8]
    inp, out = f"eos-in-{tag}", f"eos-out-{tag}"
    admin = AdminClient(CK)
    for f in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (inp, out)]).values():
        f.result(30)
    producer = Producer({**CK, "enable.idempotence": True, "linger.ms": 5})
    for i in range(N):
        producer.produce(inp, key=str(i).encode(), value=str(i).encode(), partition=i % PARTITIONS)
    assert producer.flush(60) == 0, "input not written"

    for k in range(KILLS):
        w = start_worker(inp, out)
        time.sleep(rng.uniform(1.0, 4.0))
        w.send_signal(signal.SIGKILL)
        w.wait()
        print(f"eos: kill {k + 1}: worker killed", flush=True)

    # The last worker runs to the end (restarted should it fail: the transactions API may
    # answer a worker with an error it cannot recover from, as on Kafka).
    stop = threading.Event()
    restarts = []

    def supervise():
        w = start_worker(inp, out)
        while not stop.wait(0.2):
            if w.poll() is not None:
                restarts.append(w.returncode)
                w = start_worker(inp, out)
        w.send_signal(signal.SIGKILL)
        w.wait()

    supervisor = threading.Thread(target=supervise)
    supervisor.start()
    try:
        committed = read(out, "read_committed", N, 240)
    finally:
        stop.set()
        supervisor.join()
    if restarts:
        print(f"eos: the last worker exited and was restarted {len(restarts)} times: {restarts}",
              flush=True)
    uncommitted = read(out, "read_uncommitted", N, 60)
    expected = sorted(f"out:{i}" for i in range(N))
    dupes = len(committed) - len(set(committed))
    missing = N - len(set(committed) & set(expected))
    print(f"eos: read_committed {len(committed)} records ({dupes} duplicates, {missing} missing); "
          f"read_uncommitted {len(uncommitted)} (aborted copies included)", flush=True)
    assert sorted(committed) == expected, "each input exactly once in the committed output"
    assert len(uncommitted) > len(committed), "no kill left an aborted transaction behind"
    print("eos: PASS", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        try:
            worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        except KafkaException as e:
            print(f"eos worker: {e}", file=sys.stderr, flush=True)
            sys.exit(3)
    else:
        try:
            main()
            print("compat: 1 passed, 0 failed", flush=True)
        except Exception as e:  # noqa: BLE001 - reported, then a failing exit
            print(f"eos: FAIL {e!r}", flush=True)
            print("compat: 0 passed, 1 failed", flush=True)
            sys.exit(1)
