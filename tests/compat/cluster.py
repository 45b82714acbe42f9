"""kafka-python through partition moves on a Weir cluster (issue 7).

Run by tests/compat/cluster.sh, which starts three `weir broker` processes and sets WEIR_BOOTSTRAP
(the brokers' Kafka listeners) and WEIR_ADMIN (one broker's admin HTTP listener). While a producer
(acks=all) writes and a consumer group reads and commits, partitions of the topic and the group's
`__consumer_offsets` partition move between brokers every half second. The audit: every
acknowledged record is read back at the offset it was acknowledged at, with its value, once; values
are in order within each partition; the group's committed offsets never go backwards.
The last line reads "compat: N passed, M failed".
"""
import json
import os
import sys
import threading
import time
import traceback
import urllib.request
import uuid

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

BOOTSTRAP = os.environ["WEIR_BOOTSTRAP"].split(",")
ADMIN = os.environ["WEIR_ADMIN"]
RESULTS = []


def admin_call(method, path, body=None):
    request = urllib.request.Request(
        f"http://{ADMIN}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Mover(threading.Thread):
    """Moves each of `partitions` ((topic, partition) pairs) in turn to another live broker, one
    move every `every` seconds, and checks after each that `check()` still holds."""

    def __init__(self, partitions, every, check):
        super().__init__(daemon=True)
        self.partitions, self.every, self.check = partitions, every, check
        self.moves, self.error, self.stopped = [], None, threading.Event()

    def run(self):
        try:
            turn = 0
            while not self.stopped.wait(self.every):
                _, view = admin_call("GET", "/v1/cluster")
                live = sorted(b["id"] for b in view["brokers"] if not b["fenced"] and not b["drained"])
                owners = {(p["topic"], p["partition"]): (p["owner"], p["target"])
                          for p in view["partitions"]}
                topic, partition = self.partitions[turn % len(self.partitions)]
                turn += 1
                owner, target = owners[(topic, partition)]
                if target != 0:
                    continue  # still moving
                to = live[(live.index(owner) + 1) % len(live)] if owner in live else live[0]
                status, answer = admin_call("POST", "/v1/cluster/reassign",
                                            {"topic": topic, "partition": partition, "broker": to})
                if status == 200:
                    self.moves.append((topic, partition, owner, to))
                self.check()
        except Exception as e:  # noqa: BLE001 - reported by the scenario
            self.error = e
            traceback.print_exc()

    def stop(self):
        self.stopped.set()
        self.join(30)
        if self.error:
            raise self.error


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


@scenario
def kp_cluster_produce_consume_through_moves():
    topic, group = f"kp-moves-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    partitions, records = 4, 3000
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(topic, partitions, 1)])

    committed_seen = {}

    def committed_offsets():
        # A coordinator that moved answers NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS
        # (retriable) for a moment; never an empty answer. kafka-python 3's admin client caches
        # coordinators for good, so a new client looks the coordinator up again.
        nonlocal admin
        last = None
        for _ in range(100):
            try:
                if hasattr(admin, "list_group_offsets"):  # kafka-python 3
                    return admin.list_group_offsets({group: None}).get(group, {})
                return admin.list_consumer_group_offsets(group)
            except Exception as e:  # noqa: BLE001 - only retriable errors are retried
                if not getattr(e, "retriable", False):
                    raise
                last = e
                time.sleep(0.1)
                admin.close()
                admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        raise RuntimeError(f"committed offsets unavailable for 10 s: {last!r}")

    def committed_never_backwards():
        offsets = committed_offsets()
        for tp, meta in offsets.items():
            before = committed_seen.get(tp.partition, -1)
            assert meta.offset >= before, f"committed offset of {tp} went back {before} -> {meta.offset}"
            committed_seen[tp.partition] = meta.offset

    # Idempotent producers (the kafka-python 3 default) need InitProducerId: issue 10. One request
    # in flight keeps each partition's records in order across retries.
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=False,
                             retries=1000, retry_backoff_ms=50, linger_ms=5,
                             max_in_flight_requests_per_connection=1)
    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=10000, heartbeat_interval_ms=500,
                             retry_backoff_ms=50)
    seen = {}  # (partition, offset) -> value
    reads = {"n": 0}
    stop_consumer = threading.Event()

    def consume():
        while not stop_consumer.is_set():
            batch = consumer.poll(timeout_ms=200)
            for tp, messages in batch.items():
                for m in messages:
                    old = seen.setdefault((tp.partition, m.offset), m.value)
                    assert old == m.value, f"offset {tp.partition}/{m.offset} read as {old} and {m.value}"
                    reads["n"] += 1
            if batch:
                try:
                    consumer.commit()
                except Exception as e:  # noqa: BLE001 - a commit during a coordinator move may fail; the next one covers it
                    print(f"commit failed (retried with the next poll): {e!r}", flush=True)

    consumer_errors = []

    def consume_reporting():
        try:
            consume()
        except Exception as e:  # noqa: BLE001
            consumer_errors.append(e)
            traceback.print_exc()

    reader = threading.Thread(target=consume_reporting, daemon=True)
    reader.start()
    mover = Mover([(topic, p) for p in range(partitions)] + [("__consumer_offsets", 0)], 0.5,
                  committed_never_backwards)
    mover.start()
    acked = {}  # value -> (partition, offset)
    futures = []
    start = time.time()
    for i in range(records):
        value = f"{i}".encode()
        futures.append((value, producer.send(topic, value=value, partition=i % partitions)))
        time.sleep(0.004)
    for value, future in futures:
        meta = future.get(timeout=120)
        acked[value] = (meta.partition, meta.offset)
    producer.close()
    end = time.time() + 90
    while not all(seen.get(at) == v for v, at in acked.items()) and time.time() < end and not consumer_errors:
        time.sleep(0.2)
    time.sleep(1.5)  # a last commit
    mover.stop()
    stop_consumer.set()
    reader.join(30)
    consumer.close()
    committed_never_backwards()
    admin.close()
    if consumer_errors:
        raise consumer_errors[0]
    moves_of_coordinator = sum(1 for m in mover.moves if m[0] == "__consumer_offsets")
    print(f"  {len(acked)} records acknowledged in {time.time() - start:.1f}s, {reads['n']} reads, "
          f"{len(mover.moves)} moves ({moves_of_coordinator} of the group coordinator)", flush=True)
    assert len(mover.moves) >= 10, f"only {len(mover.moves)} moves"
    assert moves_of_coordinator >= 2, f"group coordinator moved {moves_of_coordinator} times"
    missing = [v for v, at in acked.items() if seen.get(at) != v]
    assert not missing, f"{len(missing)} acknowledged records not read back at their offsets, e.g. {missing[:5]}"
    assert len(seen) == len(acked), f"{len(seen)} offsets read for {len(acked)} acknowledged records"
    for p in range(partitions):
        values = [int(v) for (q, _), v in sorted(seen.items()) if q == p]
        assert values == sorted(values), f"partition {p} out of order"
        ends = max(o for (q, o) in seen if q == p) + 1
        assert committed_seen.get(p) == ends, f"partition {p} committed {committed_seen.get(p)}, end {ends}"


if __name__ == "__main__":
    kp_cluster_produce_consume_through_moves()
    failed = [n for n, e in RESULTS if e is not None]
    print(f"compat: {len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
