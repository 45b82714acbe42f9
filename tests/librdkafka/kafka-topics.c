/*
 * Stand-in for Apache Kafka's bin/kafka-topics.sh, which a few of librdkafka's tests run (through
 * KAFKA_PATH) to create, delete or grow topics outside the client under test. Does the same
 * through librdkafka's admin API, so no Kafka distribution (or JVM) is needed. run.sh builds it
 * against the librdkafka it builds.
 *
 *   kafka-topics.sh --bootstrap-server HOST:PORT --create --topic T --partitions N
 *                   [--replication-factor R] [--config K=V]...
 *   kafka-topics.sh --bootstrap-server HOST:PORT --delete --topic T
 *   kafka-topics.sh --bootstrap-server HOST:PORT --alter --topic T --partitions N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdkafka.h"

#define MAX_CONFIGS 32

static void die(const char *what, const char *detail) {
        fprintf(stderr, "kafka-topics: %s%s%s\n", what, detail ? ": " : "",
                detail ? detail : "");
        exit(1);
}

/* Waits for the admin result and fails on its error or its (only) topic's error. */
static void await_result(rd_kafka_queue_t *q) {
        const rd_kafka_topic_result_t **results = NULL;
        size_t cnt                              = 0;
        rd_kafka_event_t *ev                    = rd_kafka_queue_poll(q, 60000);

        if (!ev)
                die("no answer in time", NULL);
        if (rd_kafka_event_error(ev))
                die(rd_kafka_err2name(rd_kafka_event_error(ev)),
                    rd_kafka_event_error_string(ev));
        switch (rd_kafka_event_type(ev)) {
        case RD_KAFKA_EVENT_CREATETOPICS_RESULT:
                results = rd_kafka_CreateTopics_result_topics(
                    rd_kafka_event_CreateTopics_result(ev), &cnt);
                break;
        case RD_KAFKA_EVENT_DELETETOPICS_RESULT:
                results = rd_kafka_DeleteTopics_result_topics(
                    rd_kafka_event_DeleteTopics_result(ev), &cnt);
                break;
        case RD_KAFKA_EVENT_CREATEPARTITIONS_RESULT:
                results = rd_kafka_CreatePartitions_result_topics(
                    rd_kafka_event_CreatePartitions_result(ev), &cnt);
                break;
        default:
                die("unexpected event", rd_kafka_event_name(ev));
        }
        if (cnt != 1)
                die("unexpected number of topic results", NULL);
        if (rd_kafka_topic_result_error(results[0]))
                die(rd_kafka_err2name(rd_kafka_topic_result_error(results[0])),
                    rd_kafka_topic_result_error_string(results[0]));
        rd_kafka_event_destroy(ev);
}

int main(int argc, char **argv) {
        const char *bootstrap = NULL, *topic = NULL, *action = NULL;
        const char *configs[MAX_CONFIGS];
        int config_cnt = 0, partitions = -1, replication = -1, i;
        char errstr[512];
        rd_kafka_conf_t *conf;
        rd_kafka_t *rk;
        rd_kafka_queue_t *q;
        rd_kafka_AdminOptions_t *options;

        for (i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!strcmp(a, "--create") || !strcmp(a, "--delete") ||
                    !strcmp(a, "--alter")) {
                        action = a + 2;
                        continue;
                }
                if (!v)
                        die("missing value of", a);
                i++;
                if (!strcmp(a, "--bootstrap-server"))
                        bootstrap = v;
                else if (!strcmp(a, "--topic"))
                        topic = v;
                else if (!strcmp(a, "--partitions"))
                        partitions = atoi(v);
                else if (!strcmp(a, "--replication-factor"))
                        replication = atoi(v);
                else if (!strcmp(a, "--config") && config_cnt < MAX_CONFIGS)
                        configs[config_cnt++] = v;
                else
                        die("unsupported argument", a);
        }
        if (!bootstrap || !topic || !action)
                die("need --bootstrap-server, --topic and one of --create, --delete, --alter",
                    NULL);

        conf = rd_kafka_conf_new();
        if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK)
                die("bad --bootstrap-server", errstr);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk)
                die("cannot create client", errstr);
        q       = rd_kafka_queue_new(rk);
        options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_ANY);
        rd_kafka_AdminOptions_set_request_timeout(options, 30000, errstr,
                                                  sizeof(errstr));
        rd_kafka_AdminOptions_set_operation_timeout(options, 30000, errstr,
                                                    sizeof(errstr));

        if (!strcmp(action, "create")) {
                rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(
                    topic, partitions, replication, errstr, sizeof(errstr));
                if (!nt)
                        die("bad topic", errstr);
                for (i = 0; i < config_cnt; i++) {
                        char *kv = strdup(configs[i]), *eq = strchr(kv, '=');
                        if (!eq)
                                die("--config needs KEY=VALUE", configs[i]);
                        *eq = '\0';
                        rd_kafka_NewTopic_set_config(nt, kv, eq + 1);
                        free(kv);
                }
                rd_kafka_CreateTopics(rk, &nt, 1, options, q);
                await_result(q);
                rd_kafka_NewTopic_destroy(nt);
        } else if (!strcmp(action, "delete")) {
                rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(topic);
                rd_kafka_DeleteTopics(rk, &dt, 1, options, q);
                await_result(q);
                rd_kafka_DeleteTopic_destroy(dt);
        } else {
                rd_kafka_NewPartitions_t *np = rd_kafka_NewPartitions_new(
                    topic, (size_t)partitions, errstr, sizeof(errstr));
                if (!np)
                        die("bad --partitions", errstr);
                rd_kafka_CreatePartitions(rk, &np, 1, options, q);
                await_result(q);
                rd_kafka_NewPartitions_destroy(np);
        }
        rd_kafka_AdminOptions_destroy(options);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        printf("%s topic %s: done\n", action, topic);
        return 0;
}
