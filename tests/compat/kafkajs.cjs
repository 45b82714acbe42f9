// KafkaJS against weir serve. Run by tests/compat/run.sh with WEIR_BOOTSTRAP set and kafkajs on
// NODE_PATH. KafkaJS speaks only non-flexible (older) protocol versions, which this exercises.
// Prints PASS/FAIL per scenario and a last line "compat: N passed, M failed".
const { AssignerProtocol, ConfigResourceTypes, Kafka, logLevel } = require("kafkajs");

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
  // Idempotent: InitProducerId and sequence numbers (KafkaJS requires one request in flight).
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
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

async function createTopic(admin, topic, numPartitions, configEntries = []) {
  await admin.createTopics({ topics: [{ topic, numPartitions, configEntries }], waitForLeaders: true });
}

async function produce(topic, keys, partitions, extra = () => ({})) {
  const producer = kafka.producer();
  await producer.connect();
  const messages = keys.map((key, i) => ({ key, value: `v-${key}`, partition: i % partitions, ...extra(i) }));
  await producer.send({ topic, messages, acks: -1 });
  await producer.disconnect();
}

async function waitUntil(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(100);
  assert(cond(), `timed out waiting for ${typeof what === "function" ? what() : what}`);
}

const range = (n, f) => Array.from({ length: n }, (_, i) => f(i));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const groupConf = (groupId) => ({ groupId, sessionTimeout: 6000, rebalanceTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 500 });

// A group member recording every message it gets and its latest assignment of `topic`.
async function member(groupId, topic, onMessage) {
  const consumer = kafka.consumer(groupConf(groupId));
  const state = { consumer, assigned: null };
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    state.assigned = (e.payload.memberAssignment[topic] || []).slice().sort((x, y) => x - y);
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({ eachMessage: async ({ partition, message }) => onMessage(partition, message) });
  return state;
}

async function kjsGroupRebalance() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = fresh("kjs-reb");
  const groupId = fresh("g");
  await createTopic(admin, topic, 6);
  const batch = (b) => range(300, (i) => `${b}${i}`);
  await produce(topic, batch("a"), 6);
  const seen = new Set();
  const record = (_, m) => { seen.add(m.key.toString()); };
  const a = await member(groupId, topic, record);
  await waitUntil(() => seen.size === 300, 30000, "the first member to read 300");
  const b = await member(groupId, topic, record);
  // Both hold partitions, none twice, all six between the two (each notes its own join).
  const split = () => a.assigned && b.assigned && a.assigned.length && b.assigned.length
    && same([...a.assigned, ...b.assigned].sort(), range(6, (i) => i));
  await waitUntil(split, 30000, () => `the partitions to be split (${a.assigned} / ${b.assigned})`);
  await produce(topic, batch("b"), 6);
  await waitUntil(() => seen.size === 600, 30000, "the members to read 600");
  await b.consumer.disconnect(); // leaves the group: its partitions move to the first member
  await waitUntil(() => a.assigned.length === 6, 30000, () => `the survivor to own all partitions (${a.assigned})`);
  await produce(topic, batch("c"), 6);
  await waitUntil(() => seen.size === 900, 30000, "all 900 records");
  await a.consumer.disconnect();
  const want = ["a", "b", "c"].flatMap(batch);
  assert(want.every((k) => seen.has(k)) && seen.size === 900, "no record lost");
  // Committed offsets are the log ends; a restarted member resumes there.
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const offsets = committed.partitions.map((p) => [p.partition, p.offset]).sort((x, y) => x[0] - y[0]);
  assert(same(offsets, range(6, (i) => [i, "150"])), `committed ${JSON.stringify(offsets)}`);
  await produce(topic, range(6, (i) => `new${i}`), 6);
  const later = [];
  const c = await member(groupId, topic, (p, m) => later.push([p, m.offset, m.key.toString()]));
  await waitUntil(() => later.length >= 6, 30000, "the new records");
  await sleep(1000); // anything older would show up by now
  await c.consumer.disconnect();
  later.sort((x, y) => x[0] - y[0]);
  assert(same(later, range(6, (i) => [i, "150", `new${i}`])), `restart read ${JSON.stringify(later)}`);
  await admin.disconnect();
}

async function kjsSeekPauseResume() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = fresh("kjs-seek");
  await createTopic(admin, topic, 1);
  await admin.disconnect();
  await produce(topic, range(20, (i) => `k${i}`), 1);
  const offsets = [];
  const { consumer } = await member(fresh("g"), topic, (_, m) => offsets.push(Number(m.offset)));
  await waitUntil(() => offsets.length >= 20, 30000, "the first 20");
  assert(same(offsets, range(20, (i) => i)), `read ${offsets}`);
  consumer.seek({ topic, partition: 0, offset: "5" });
  await waitUntil(() => offsets.length >= 35, 30000, "the records after the seek");
  assert(same(offsets.slice(20), range(15, (i) => 5 + i)), `after seek ${offsets.slice(20)}`);
  consumer.pause([{ topic }]);
  assert(same(consumer.paused(), [{ topic, partitions: [0] }]), `paused ${JSON.stringify(consumer.paused())}`);
  await produce(topic, range(5, (i) => `p${i}`), 1);
  await sleep(1500);
  assert(offsets.length === 35, `paused partition delivered ${offsets.slice(35)}`);
  consumer.resume([{ topic }]);
  await waitUntil(() => offsets.length >= 40, 30000, "the records after resume");
  assert(same(offsets.slice(35), range(5, (i) => 20 + i)), `after resume ${offsets.slice(35)}`);
  await consumer.disconnect();
}

async function kjsOffsetsByTimestamp() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = fresh("kjs-ts");
  await createTopic(admin, topic, 2);
  const base = 1700000000000;
  // Partition 0 holds i = 0, 2, 4, ... at offset i / 2; partition 1 the odd ones.
  await produce(topic, range(40, (i) => `k${i}`), 2, (i) => ({ timestamp: `${base + i * 1000}` }));
  const found = await admin.fetchTopicOffsetsByTimestamp(topic, base + 10500);
  const byPart = found.map((p) => [p.partition, p.offset]).sort((x, y) => x[0] - y[0]);
  assert(same(byPart, [[0, "6"], [1, "5"]]), `by timestamp ${JSON.stringify(byPart)}`);
  // Past the last timestamp: the log end (KafkaJS maps the broker's -1 to the high watermark).
  const past = await admin.fetchTopicOffsetsByTimestamp(topic, base + 100000);
  assert(same(past.map((p) => p.offset).sort(), ["20", "20"]), `past the end ${JSON.stringify(past)}`);
  const ends = await admin.fetchTopicOffsets(topic);
  assert(ends.every((p) => p.low === "0" && p.high === "20"), `watermarks ${JSON.stringify(ends)}`);
  await admin.disconnect();
}

async function kjsAdminGroupsConfigs() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = fresh("kjs-adm");
  const groupId = fresh("g");
  await createTopic(admin, topic, 2, [{ name: "retention.ms", value: "3600000" }]);
  const cfg = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ["retention.ms", "cleanup.policy"] }],
    includeSynonyms: false,
  });
  const entries = cfg.resources[0].configEntries.map((e) => [e.configName, e.configValue]).sort();
  assert(same(entries, [["cleanup.policy", "delete"], ["retention.ms", "3600000"]]), `configs ${JSON.stringify(entries)}`);
  await produce(topic, range(10, (i) => `k${i}`), 2);
  let got = 0;
  const m = await member(groupId, topic, () => { got += 1; });
  await waitUntil(() => got === 10, 30000, "10 records");
  let [group] = (await admin.describeGroups([groupId])).groups;
  assert(group.state === "Stable" && group.protocolType === "consumer" && group.protocol === "RoundRobinAssigner",
    `described ${JSON.stringify({ ...group, members: undefined })}`);
  assert(group.members.length === 1 && group.members[0].clientId === "weir-compat", `members ${group.members.length}`);
  const { assignment } = AssignerProtocol.MemberAssignment.decode(group.members[0].memberAssignment);
  assert(same(assignment, { [topic]: [0, 1] }), `member assignment ${JSON.stringify(assignment)}`);
  const listed = (await admin.listGroups()).groups.find((g) => g.groupId === groupId);
  assert(listed && listed.protocolType === "consumer", `listed ${JSON.stringify(listed)}`);
  const offsetsOf = async () => (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions
    .map((p) => [p.partition, p.offset]).sort((x, y) => x[0] - y[0]);
  // Commits follow each batch, so they may trail the last record briefly.
  let offsets;
  const end = Date.now() + 10000;
  while (Date.now() < end && !same((offsets = await offsetsOf()), [[0, "5"], [1, "5"]])) await sleep(200);
  assert(same(offsets, [[0, "5"], [1, "5"]]), `committed ${JSON.stringify(offsets)}`);
  await m.consumer.disconnect();
  [group] = (await admin.describeGroups([groupId])).groups;
  assert(group.state === "Empty" && group.members.length === 0, `after leaving ${group.state}`);
  // Offsets of an empty group can be set and reset through the admin client.
  await admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: "2" }, { partition: 1, offset: "3" }] });
  assert(same(await offsetsOf(), [[0, "2"], [1, "3"]]), "set offsets");
  // resetOffsets commits the special offset -2 (earliest); fetchOffsets resolves it on request.
  await admin.resetOffsets({ groupId, topic, earliest: true });
  offsets = await offsetsOf();
  assert(same(offsets, [[0, "-2"], [1, "-2"]]), `reset offsets ${JSON.stringify(offsets)}`);
  const [deleted] = await admin.deleteGroups([groupId]);
  assert(deleted.groupId === groupId && deleted.errorCode === 0, `deleted ${JSON.stringify(deleted)}`);
  assert(!(await admin.listGroups()).groups.some((g) => g.groupId === groupId), "deleted group still listed");
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
}

(async () => {
  await scenario("kjs_admin_create_list_delete", kjsAdmin);
  await scenario("kjs_group_round_trip", kjsGroupRoundTrip);
  await scenario("kjs_group_rebalance_and_committed_offsets", kjsGroupRebalance);
  await scenario("kjs_seek_pause_resume", kjsSeekPauseResume);
  await scenario("kjs_offsets_by_timestamp", kjsOffsetsByTimestamp);
  await scenario("kjs_admin_groups_offsets_configs", kjsAdminGroupsConfigs);
  const failed = results.filter(([, e]) => e !== null).length;
  console.log(`compat: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
