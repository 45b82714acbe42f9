// KafkaJS through partition moves on a Weir cluster (issue 7). Run by tests/compat/cluster.sh with
// WEIR_BOOTSTRAP (the brokers' Kafka listeners) and WEIR_ADMIN (an admin HTTP listener) set and
// kafkajs on NODE_PATH. While a producer (acks=all) writes and a consumer group reads and commits,
// partitions of the topic and the group's `__consumer_offsets` partition move between brokers every
// half second. The audit: every acknowledged record is read back at the offset it was acknowledged
// at, once; values are in order within each partition; committed offsets never go backwards.
// Prints PASS/FAIL and a last line "compat: N passed, M failed".
const { Kafka, logLevel } = require("kafkajs");

const kafka = new Kafka({
  clientId: "weir-compat-cluster",
  brokers: process.env.WEIR_BOOTSTRAP.split(","),
  logLevel: logLevel.NOTHING,
  retry: { initialRetryTime: 100, maxRetryTime: 2000, retries: 30 },
});
const ADMIN = process.env.WEIR_ADMIN;
const results = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fresh = (p) => `${p}-${Math.random().toString(16).slice(2, 10)}`;

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function adminCall(method, path, body) {
  const answer = await fetch(`http://${ADMIN}${path}`, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return [answer.status, await answer.json()];
}

// Moves each of `partitions` ([topic, partition]) in turn to another live broker every `every` ms
// and runs `check` after each move, until stopped.
function mover(partitions, every, check) {
  const state = { moves: [], error: null, stopped: false };
  state.done = (async () => {
    let turn = 0;
    while (!state.stopped) {
      await sleep(every);
      try {
        const [, view] = await adminCall("GET", "/v1/cluster");
        const live = view.brokers.filter((b) => !b.fenced && !b.drained).map((b) => b.id).sort();
        const [topic, partition] = partitions[turn++ % partitions.length];
        const p = view.partitions.find((x) => x.topic === topic && x.partition === partition);
        if (p.target !== 0) continue; // still moving
        const i = live.indexOf(p.owner);
        const to = live[(i + 1) % live.length];
        const [status] = await adminCall("POST", "/v1/cluster/reassign", { topic, partition, broker: to });
        if (status === 200) state.moves.push([topic, partition, p.owner, to]);
        await check();
      } catch (e) {
        state.error = e;
        state.stopped = true;
      }
    }
  })();
  state.stop = async () => {
    state.stopped = true;
    await state.done;
    if (state.error) throw state.error;
  };
  return state;
}

async function kjsClusterProduceConsumeThroughMoves() {
  const topic = fresh("kjs-moves");
  const groupId = fresh("g");
  const partitions = 4;
  const sends = 300; // of 10 records each, to one partition
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });

  const committedSeen = new Map();
  // A coordinator that moved answers NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS (retriable)
  // for a moment, which KafkaJS's admin passes on; never an empty answer.
  const fetchOffsets = async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await admin.fetchOffsets({ groupId, topics: [topic] });
      } catch (e) {
        if (!e.retriable || attempt >= 100) throw e;
        await sleep(100);
      }
    }
  };
  const committedNeverBackwards = async () => {
    const [entry] = await fetchOffsets();
    for (const { partition, offset } of entry ? entry.partitions : []) {
      const before = committedSeen.get(partition) ?? -1;
      assert(Number(offset) >= before, `committed offset of ${partition} went back ${before} -> ${offset}`);
      committedSeen.set(partition, Number(offset));
    }
  };

  const seen = new Map(); // "partition/offset" -> value
  let reads = 0;
  const consumer = kafka.consumer({
    groupId, sessionTimeout: 10000, rebalanceTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 200,
    retry: { initialRetryTime: 100, maxRetryTime: 2000, retries: 30 },
  });
  let consumerCrash = null;
  consumer.on(consumer.events.CRASH, (e) => { consumerCrash = e.payload.error; });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommitInterval: 200,
    eachMessage: async ({ partition, message }) => {
      const at = `${partition}/${message.offset}`;
      const value = message.value.toString();
      if (!seen.has(at)) seen.set(at, value);
      assert(seen.get(at) === value, `offset ${at} read as ${seen.get(at)} and ${value}`);
      reads++;
    },
  });

  const moves = mover([...Array(partitions).keys()].map((p) => [topic, p]).concat([["__consumer_offsets", 0]]),
    500, committedNeverBackwards);
  // One request in flight keeps each partition's records in order across retries; idempotent
  // producers need InitProducerId (issue 10).
  const producer = kafka.producer({ maxInFlightRequests: 1, idempotent: false });
  await producer.connect();
  const acked = new Map(); // value -> "partition/offset"
  const start = Date.now();
  for (let s = 0; s < sends; s++) {
    const partition = s % partitions;
    const messages = Array.from({ length: 10 }, (_, i) => ({ value: `${s * 10 + i}`, partition }));
    const [meta] = await producer.send({ topic, messages, acks: -1, timeout: 30000 });
    messages.forEach((m, i) => acked.set(m.value, `${meta.partition}/${Number(meta.baseOffset) + i}`));
    await sleep(20);
  }
  await producer.disconnect();
  const end = Date.now() + 90000;
  const allRead = () => [...acked].every(([v, at]) => seen.get(at) === v);
  while (!allRead() && Date.now() < end && !consumerCrash) await sleep(200);
  await sleep(1500); // a last commit
  await moves.stop();
  await consumer.disconnect();
  await committedNeverBackwards();
  await admin.disconnect();
  if (consumerCrash) throw consumerCrash;

  const coordinatorMoves = moves.moves.filter((m) => m[0] === "__consumer_offsets").length;
  console.log(`  ${acked.size} records acknowledged in ${((Date.now() - start) / 1000).toFixed(1)}s, ${reads} reads, ` +
    `${moves.moves.length} moves (${coordinatorMoves} of the group coordinator)`);
  assert(moves.moves.length >= 10, `only ${moves.moves.length} moves`);
  assert(coordinatorMoves >= 2, `group coordinator moved ${coordinatorMoves} times`);
  const missing = [...acked].filter(([v, at]) => seen.get(at) !== v);
  assert(missing.length === 0, `${missing.length} acknowledged records not read back at their offsets, e.g. ${JSON.stringify(missing.slice(0, 5))}`);
  assert(seen.size === acked.size, `${seen.size} offsets read for ${acked.size} acknowledged records`);
  for (let p = 0; p < partitions; p++) {
    const inPartition = [...seen].map(([at, v]) => [at.split("/").map(Number), Number(v)]).filter(([[q]]) => q === p)
      .sort(([[, a]], [[, b]]) => a - b);
    const values = inPartition.map(([, v]) => v);
    assert(values.every((v, i) => i === 0 || values[i - 1] < v), `partition ${p} out of order`);
    const ends = inPartition[inPartition.length - 1][0][1] + 1;
    assert(committedSeen.get(p) === ends, `partition ${p} committed ${committedSeen.get(p)}, end ${ends}`);
  }
}

(async () => {
  const start = Date.now();
  const name = "kjs_cluster_produce_consume_through_moves";
  try {
    await kjsClusterProduceConsumeThroughMoves();
    results.push([name, null]);
    console.log(`PASS ${name} (${((Date.now() - start) / 1000).toFixed(1)}s)`);
  } catch (e) {
    results.push([name, e]);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
  const failed = results.filter(([, e]) => e !== null).length;
  console.log(`compat: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
