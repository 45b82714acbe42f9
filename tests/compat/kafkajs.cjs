// KafkaJS against weir serve. Run by tests/compat/run.sh with WEIR_BOOTSTRAP set and kafkajs on
// NODE_PATH. KafkaJS speaks only non-flexible (older) protocol versions, which this exercises.
// Prints PASS/FAIL per scenario and a last line "compat: N passed, M failed".
const { Kafka, logLevel } = require("kafkajs");

const kafka = new Kafka({ clientId: "weir-compat", brokers: [process.env.WEIR_BOOTSTRAP], logLevel: logLevel.NOTHING });
const results = [];
const fresh = (p) => `${p}-${Math.random().toString(16).slice(2, 10)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function scenario(name, fn) {
  const start = Date.now();
  try {
    await fn();
    results.push([name, null]);
    console.log(`PASS ${name} (${((Date.now() - start) / 1000).toFixed(1)}s)`);
  } catch (e) {
    results.push([name, e]);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function kjsAdmin() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = fresh("kjs-admin");
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  assert((await admin.listTopics()).includes(topic), "created topic listed");
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  assert(md.topics[0].partitions.length === 3, "three partitions");
  await admin.deleteTopics({ topics: [topic] });
  assert(!(await admin.listTopics()).includes(topic), "deleted topic gone");
  await admin.disconnect();
}

async function kjsGroupRoundTrip() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = fresh("kjs-rt");
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 300; i++) {
    messages.push({ key: `k${i}`, value: `v${i}`, partition: i % 3, headers: { h: `${i}` } });
  }
  await producer.send({ topic, messages, acks: -1 });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: fresh("g"), sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const seen = new Map();
  await consumer.run({
    eachMessage: async ({ message }) => {
      seen.set(message.key.toString(), [message.value.toString(), message.headers.h.toString()]);
    },
  });
  const end = Date.now() + 30000;
  while (seen.size < 300 && Date.now() < end) await sleep(100);
  await consumer.disconnect();
  assert(seen.size === 300, `consumed ${seen.size} of 300`);
  assert(seen.get("k42")[0] === "v42" && seen.get("k42")[1] === "42", "value and header intact");
  const offsets = await admin.fetchTopicOffsets(topic);
  assert(offsets.reduce((s, p) => s + Number(p.high), 0) === 300, "high watermarks add up");
  await admin.disconnect();
}

(async () => {
  await scenario("kjs_admin_create_list_delete", kjsAdmin);
  await scenario("kjs_group_round_trip", kjsGroupRoundTrip);
  const failed = results.filter(([, e]) => e !== null).length;
  console.log(`compat: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
