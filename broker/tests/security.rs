//! SASL and ACLs (issue 11): users made with `weir admin scram set`; SCRAM-SHA-256/512 exchanges
//! over the raw protocol (SaslHandshake v1 + SaslAuthenticate, and v0 with bare tokens) and
//! librdkafka logging in with PLAIN; wrong passwords and requests before a login close the
//! connection; with `authorizer = "acl"` a consumer without a READ ACL cannot read, one with it
//! can, a super user can do everything, and ACLs made with `weir admin acl` take effect.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use sha2::{Digest, Sha256, Sha512};
use weir_broker::config::{AuthorizerKind, ListenerConfig, SecurityProtocol};

use common::{InProcess, Raw};

fn sasl_listener() -> Vec<ListenerConfig> {
    vec![ListenerConfig {
        name: "SASL".into(),
        address: "127.0.0.1:0".parse().unwrap(),
        advertised: None,
        security_protocol: SecurityProtocol::SaslPlaintext,
    }]
}

/// `weir admin scram set USER --mechanism M --password-stdin` against the node.
fn add_user(node: &InProcess, user: &str, mechanism: &str, password: &str) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "admin",
            "--url",
            &format!("http://{}", node.server.admin_addr()),
            "--token-file",
            &token_file(node),
            "scram",
            "set",
            user,
            "--mechanism",
            mechanism,
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .output_piped();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "weir admin scram set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `weir admin acl ARGS...` against the node.
fn admin_acl(node: &InProcess, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "admin",
            "--url",
            &format!("http://{}", node.server.admin_addr()),
            "--token-file",
            &token_file(node),
            "acl",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weir admin acl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node's admin token file (its data directory's `admin.token`).
fn token_file(node: &InProcess) -> String {
    node.dir.path().join("admin.token").display().to_string()
}

trait Piped {
    fn output_piped(&mut self) -> std::process::Child;
}

impl Piped for std::process::Command {
    fn output_piped(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SCRAM-SHA-256",
            Hash::Sha512 => "SCRAM-SHA-512",
        }
    }
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key).unwrap();
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }
    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
    fn salted(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out.to_vec()
            }
            Hash::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// The SCRAM client's two messages for `server_first`: (client-final, expected server-final).
fn client_final(hash: Hash, password: &str, bare: &str, server_first: &str) -> (String, String) {
    let attr = |k: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    let (nonce, salt, iterations) = (attr("r="), B64.decode(attr("s=")).unwrap(), attr("i="));
    let salted = hash.salted(password, &salt, iterations.parse().unwrap());
    let client_key = hash.hmac(&salted, b"Client Key");
    let without_proof = format!("c=biws,r={nonce}");
    let auth = format!("{bare},{server_first},{without_proof}");
    let signature = hash.hmac(&hash.hash(&client_key), auth.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = hash.hmac(&salted, b"Server Key");
    (
        format!("{without_proof},p={}", B64.encode(proof)),
        format!("v={}", B64.encode(hash.hmac(&server_key, auth.as_bytes()))),
    )
}

/// A SCRAM login over SaslHandshake v1 + SaslAuthenticate: whether it succeeded.
fn scram_login(raw: &mut Raw, hash: Hash, user: &str, password: &str) -> bool {
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(hash.name()));
    let mut body = raw.request(ApiKey::SaslHandshake, 1, &handshake).unwrap();
    let answer = SaslHandshakeResponse::decode(&mut body, 1).unwrap();
    assert_eq!(answer.error_code, 0, "mechanisms: {:?}", answer.mechanisms);
    let bare = format!("n={user},r=rOprNGfwEbeRWgbNEkqO");
    let first =
        SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(format!("n,,{bare}")));
    let mut body = raw.request(ApiKey::SaslAuthenticate, 2, &first).unwrap();
    let answer = SaslAuthenticateResponse::decode(&mut body, 2).unwrap();
    assert_eq!(answer.error_code, 0, "{:?}", answer.error_message);
    let server_first = String::from_utf8(answer.auth_bytes.to_vec()).unwrap();
    let (last, expected) = client_final(hash, password, &bare, &server_first);
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(last));
    let mut body = raw.request(ApiKey::SaslAuthenticate, 2, &request).unwrap();
    let answer = SaslAuthenticateResponse::decode(&mut body, 2).unwrap();
    if answer.error_code != 0 {
        assert_eq!(answer.error_code, 58, "SASL_AUTHENTICATION_FAILED");
        return false;
    }
    assert_eq!(
        String::from_utf8(answer.auth_bytes.to_vec()).unwrap(),
        expected,
        "the server proves it holds the ServerKey"
    );
    true
}

fn metadata_ok(raw: &mut Raw) -> bool {
    match raw.request(ApiKey::Metadata, 12, &MetadataRequest::default()) {
        Some(mut body) => MetadataResponse::decode(&mut body, 12).is_ok(),
        None => false,
    }
}

fn plain_client(node: &InProcess, user: &str, password: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", node.bootstrap())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("message.timeout.ms", "10000");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_and_plain_log_in_and_wrong_passwords_fail() {
    let node = InProcess::start_with(|c| c.listeners = sasl_listener()).await;
    tokio::task::block_in_place(|| {
        add_user(&node, "alice", "SCRAM-SHA-256", "alice-secret");
        add_user(&node, "alice", "SCRAM-SHA-512", "alice-secret");
        let addr = node.server.kafka_addr();
        for hash in [Hash::Sha256, Hash::Sha512] {
            let mut raw = Raw::connect_to(addr);
            assert!(
                scram_login(&mut raw, hash, "alice", "alice-secret"),
                "{}",
                hash.name()
            );
            assert!(metadata_ok(&mut raw), "served once logged in");

            let mut raw = Raw::connect_to(addr);
            assert!(
                !scram_login(&mut raw, hash, "alice", "wrong"),
                "{}",
                hash.name()
            );
            assert!(raw.is_closed(), "a failed login closes the connection");
        }
        // Anything but ApiVersions and the SASL exchange before a login closes the connection.
        let mut raw = Raw::connect_to(addr);
        assert!(!metadata_ok(&mut raw));

        // SaslHandshake v0: the tokens follow as bare frames.
        let mut raw = Raw::connect_to(addr);
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
        let mut body = raw.request(ApiKey::SaslHandshake, 0, &handshake).unwrap();
        assert_eq!(
            SaslHandshakeResponse::decode(&mut body, 0)
                .unwrap()
                .error_code,
            0
        );
        raw.send_frame(b"\0alice\0alice-secret");
        assert_eq!(raw.read_frame().unwrap().len(), 0, "PLAIN's empty answer");
        assert!(metadata_ok(&mut raw));
    });

    // librdkafka with PLAIN (checked against the SCRAM credential): produce and read back.
    let producer: FutureProducer = plain_client(&node, "alice", "alice-secret")
        .create()
        .unwrap();
    let delivered = producer
        .send(
            FutureRecord::to("logins").payload("hello").key("k"),
            Duration::from_secs(10),
        )
        .await;
    assert!(delivered.is_ok(), "{delivered:?}");
    let consumer: BaseConsumer = plain_client(&node, "alice", "alice-secret")
        .set("group.id", "readers")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["logins"]).unwrap();
    let read = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                return m.payload().map(<[u8]>::to_vec);
            }
        }
        None
    });
    assert_eq!(read.as_deref(), Some(&b"hello"[..]));

    // A wrong password: no metadata, an authentication error.
    let wrong: BaseConsumer = plain_client(&node, "alice", "nope").create().unwrap();
    let result = tokio::task::block_in_place(|| wrong.fetch_metadata(None, Duration::from_secs(5)));
    assert!(result.is_err(), "logged in with a wrong password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_decide_who_reads_and_writes() {
    let node = InProcess::start_with(|c| {
        c.listeners = sasl_listener();
        c.authorizer = AuthorizerKind::Acl;
        c.super_users = vec!["User:admin".into()];
    })
    .await;
    tokio::task::block_in_place(|| {
        for user in ["admin", "alice", "bob"] {
            add_user(&node, user, "SCRAM-SHA-256", &format!("{user}-pw"));
        }
    });
    // The super user creates the topic and writes to it.
    let admin: FutureProducer = plain_client(&node, "admin", "admin-pw").create().unwrap();
    for i in 0..5 {
        admin
            .send(
                FutureRecord::to("payments")
                    .payload(&format!("p{i}"))
                    .key("k"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    // Alice may read the topic in her group; Bob may nothing.
    tokio::task::block_in_place(|| {
        admin_acl(
            &node,
            &[
                "add",
                "--principal",
                "User:alice",
                "--operation",
                "READ",
                "--topic",
                "payments",
            ],
        );
        admin_acl(
            &node,
            &[
                "add",
                "--principal",
                "User:alice",
                "--operation",
                "READ",
                "--group",
                "billing",
                "--prefixed",
            ],
        );
    });
    let read = |user: &str, group: &str| -> Result<usize, KafkaError> {
        let consumer: BaseConsumer = plain_client(&node, user, &format!("{user}-pw"))
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["payments"]).unwrap();
        let mut seen = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen < 5 && std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(_)) => seen += 1,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok(seen)
    };
    let alice = tokio::task::block_in_place(|| read("alice", "billing-1"));
    assert_eq!(alice.unwrap(), 5, "alice reads with her ACLs");
    let bob = tokio::task::block_in_place(|| read("bob", "billing-2"));
    match bob {
        Err(KafkaError::MessageConsumption(
            RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed,
        )) => {}
        other => panic!("bob read without an ACL: {other:?}"),
    }
    // Alice may not write; after an ACL she may.
    let alice: FutureProducer = plain_client(&node, "alice", "alice-pw").create().unwrap();
    let refused = alice
        .send(
            FutureRecord::to("payments").payload("x").key("k"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
                _
            ))
        ),
        "{refused:?}"
    );
    tokio::task::block_in_place(|| {
        admin_acl(
            &node,
            &[
                "add",
                "--principal",
                "User:alice",
                "--operation",
                "WRITE",
                "--topic",
                "pay",
                "--prefixed",
            ],
        );
    });
    let alice: FutureProducer = plain_client(&node, "alice", "alice-pw").create().unwrap();
    let written = alice
        .send(
            FutureRecord::to("payments").payload("x").key("k"),
            Duration::from_secs(10),
        )
        .await;
    assert!(written.is_ok(), "{written:?}");
    // A DENY wins over the ALLOW; removing it restores the right.
    tokio::task::block_in_place(|| {
        admin_acl(
            &node,
            &[
                "add",
                "--principal",
                "User:alice",
                "--operation",
                "READ",
                "--topic",
                "payments",
                "--deny",
            ],
        );
    });
    let denied = tokio::task::block_in_place(|| read("alice", "billing-3"));
    assert!(denied.is_err(), "DENY ignored: {denied:?}");
    tokio::task::block_in_place(|| {
        admin_acl(
            &node,
            &[
                "remove",
                "--principal",
                "User:alice",
                "--operation",
                "READ",
                "--topic",
                "payments",
                "--deny",
            ],
        );
    });
    let again = tokio::task::block_in_place(|| read("alice", "billing-4"));
    assert_eq!(again.unwrap(), 5);
}

/// A SCRAM-SHA-256 login on a new raw connection.
fn logged_in(node: &InProcess, user: &str, password: &str) -> Raw {
    let mut raw = Raw::connect_to(node.server.kafka_addr());
    assert!(
        scram_login(&mut raw, Hash::Sha256, user, password),
        "{user} logs in"
    );
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_topic_actions_need_their_acls() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{
        CreateTopicsRequest, CreateTopicsResponse, DescribeAclsRequest, DescribeAclsResponse,
        ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
    };
    let node = InProcess::start_with(|c| {
        c.listeners = sasl_listener();
        c.authorizer = AuthorizerKind::Acl;
        c.super_users = vec!["User:admin".into()];
    })
    .await;
    tokio::task::block_in_place(|| {
        add_user(&node, "admin", "SCRAM-SHA-256", "admin-pw");
        add_user(&node, "mallory", "SCRAM-SHA-256", "mallory-pw");
        let create = |name: &'static str| {
            CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str(name)))
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                ])
                .with_timeout_ms(10_000)
        };
        let created = |raw: &mut Raw, name| {
            let mut body = raw.request(ApiKey::CreateTopics, 7, &create(name)).unwrap();
            CreateTopicsResponse::decode(&mut body, 7).unwrap().topics[0].error_code
        };
        let mut admin = logged_in(&node, "admin", "admin-pw");
        assert_eq!(created(&mut admin, "payments"), 0, "a super user creates");
        let mut mallory = logged_in(&node, "mallory", "mallory-pw");
        assert_eq!(
            created(&mut mallory, "mine"),
            29,
            "TOPIC_AUTHORIZATION_FAILED"
        );

        // Transaction markers are a cluster action: no client writes them without the ACL.
        let markers = WriteTxnMarkersRequest::default().with_markers(vec![
            WritableTxnMarker::default()
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(0)
                .with_transaction_result(true)
                .with_topics(vec![
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str("payments")))
                        .with_partition_indexes(vec![0]),
                ]),
        ]);
        let mut body = mallory
            .request(ApiKey::WriteTxnMarkers, 1, &markers)
            .unwrap();
        let answer = WriteTxnMarkersResponse::decode(&mut body, 1).unwrap();
        assert_eq!(
            answer.markers[0].topics[0].partitions[0].error_code, 31,
            "CLUSTER_AUTHORIZATION_FAILED"
        );

        // Metadata of all topics lists none of those mallory may not describe.
        let mut body = mallory
            .request(
                ApiKey::Metadata,
                12,
                &MetadataRequest::default().with_topics(None),
            )
            .unwrap();
        let topics = MetadataResponse::decode(&mut body, 12).unwrap().topics;
        assert!(topics.is_empty(), "{topics:?}");
        let mut body = admin
            .request(
                ApiKey::Metadata,
                12,
                &MetadataRequest::default().with_topics(None),
            )
            .unwrap();
        let topics = MetadataResponse::decode(&mut body, 12).unwrap().topics;
        assert!(
            topics
                .iter()
                .any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "payments")),
            "{topics:?}"
        );

        // DescribeAcls needs DESCRIBE on the cluster.
        let filter = DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1);
        let mut body = mallory.request(ApiKey::DescribeAcls, 3, &filter).unwrap();
        assert_eq!(
            DescribeAclsResponse::decode(&mut body, 3)
                .unwrap()
                .error_code,
            31
        );
        let mut body = admin.request(ApiKey::DescribeAcls, 3, &filter).unwrap();
        assert_eq!(
            DescribeAclsResponse::decode(&mut body, 3)
                .unwrap()
                .error_code,
            0
        );
    });
}

/// In a cluster, credentials and ACLs changed on one broker (through the active controller, over
/// gRPC) hold on every broker: a user made on broker 2 is listed by broker 1, and an ACL made on
/// broker 2 lets clients write to partitions led by either broker, while others stay refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_changes_hold_on_every_broker_of_a_cluster() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let env: Vec<(String, String)> = [
        ("WEIR_CLUSTER__SESSION_TIMEOUT_MS", "2000"),
        ("WEIR_CLUSTER__HEARTBEAT_INTERVAL_MS", "300"),
        ("WEIR_OBJECT_WAL__FLUSH_INTERVAL_MS", "20"),
        ("WEIR_OFFSETS_TOPIC_PARTITIONS", "2"),
        ("WEIR_AUTHORIZER", "acl"),
        ("WEIR_SUPER_USERS", r#"["User:admin"]"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut cluster =
        weir_tests::cluster::Cluster::new(env!("CARGO_BIN_EXE_weir").as_ref(), &url, &env);
    cluster.start(1, true);
    cluster.start(2, false);
    let weir = |broker: u32, args: &[&str], stdin: &str| {
        let url = format!("http://{}", cluster.broker(broker).admin);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["admin", "--url", &url, "--token-file"])
            .arg(cluster.data_dir(broker).join("admin.token"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .output_piped();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "weir admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    tokio::task::block_in_place(|| {
        weir(
            2,
            &["scram", "set", "carol", "--password-stdin"],
            "carol-pw\n",
        );
        weir(
            2,
            &[
                "acl",
                "add",
                "--principal",
                "User:ANONYMOUS",
                "--operation",
                "ALL",
                "--topic",
                "shared",
            ],
            "",
        );
    });
    // Broker 1 (the controller) knows the user made through broker 2.
    let users = tokio::task::block_in_place(|| weir(1, &["scram", "list"], ""));
    assert!(users.contains("\"carol\""), "{users}");
    // Without the token the endpoint refuses.
    let (status, refused) = cluster.admin_get(1, "/v1/security/scram");
    assert_eq!(status, 401, "{refused}");

    // Clients without a login may use "shared" on both brokers, and nothing else.
    let bootstrap = cluster.bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            [
                &NewTopic::new("shared", 4, TopicReplication::Fixed(1)),
                &NewTopic::new("private", 1, TopicReplication::Fixed(1)),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    assert!(
        matches!(
            created[1],
            Err((_, RDKafkaErrorCode::TopicAuthorizationFailed))
        ),
        "{created:?}"
    );
    let leaders = tokio::task::block_in_place(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some("shared"), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.leader())
            .collect::<std::collections::BTreeSet<_>>()
    });
    assert_eq!(leaders.len(), 2, "partitions on both brokers: {leaders:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    for partition in 0..4 {
        let sent = producer
            .send(
                FutureRecord::to("shared")
                    .partition(partition)
                    .payload("x")
                    .key("k"),
                Duration::from_secs(10),
            )
            .await;
        assert!(sent.is_ok(), "partition {partition}: {sent:?}");
    }
}

/// AlterUserScramCredentials answers each refusal with Kafka's error, and a user with one refused
/// change gets none of its changes; only clients with ALTER on the cluster may change anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credential_changes_report_their_refusals() {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
    use kafka_protocol::messages::{
        AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
        DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    };
    let node = InProcess::start_with(|c| {
        c.listeners = sasl_listener();
        c.authorizer = AuthorizerKind::Acl;
        c.super_users = vec!["User:admin".into()];
    })
    .await;
    tokio::task::block_in_place(|| {
        add_user(&node, "admin", "SCRAM-SHA-256", "admin-pw");
        add_user(&node, "mallory", "SCRAM-SHA-256", "mallory-pw");
        let upsert = |user: &'static str, mechanism: i8, iterations: i32| {
            ScramCredentialUpsertion::default()
                .with_name(StrBytes::from_static_str(user))
                .with_mechanism(mechanism)
                .with_iterations(iterations)
                .with_salt(Bytes::from_static(b"0123456789abcdef"))
                .with_salted_password(Bytes::from(Hash::Sha256.salted(
                    "pw",
                    b"0123456789abcdef",
                    4096,
                )))
        };
        let alter = |raw: &mut Raw, request: &AlterUserScramCredentialsRequest| {
            let mut body = raw
                .request(ApiKey::AlterUserScramCredentials, 0, request)
                .unwrap();
            let answer = AlterUserScramCredentialsResponse::decode(&mut body, 0).unwrap();
            answer
                .results
                .into_iter()
                .map(|r| (r.user.to_string(), r.error_code))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let mut admin = logged_in(&node, "admin", "admin-pw");
        let request = AlterUserScramCredentialsRequest::default()
            .with_upsertions(vec![
                upsert("dave", 1, 4096),
                upsert("erin", 1, 100),
                upsert("erin", 2, 4096),
                upsert("__weir_internal", 1, 4096),
                upsert("frank", 7, 4096),
            ])
            .with_deletions(vec![
                ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_static_str("ghost"))
                    .with_mechanism(1),
            ]);
        let results = alter(&mut admin, &request);
        let unacceptable = ResponseError::UnacceptableCredential.code();
        assert_eq!(results["dave"], 0);
        assert_eq!(results["erin"], unacceptable, "too few iterations");
        assert_eq!(results["__weir_internal"], unacceptable, "reserved");
        assert_eq!(
            results["frank"],
            ResponseError::UnsupportedSaslMechanism.code()
        );
        assert_eq!(results["ghost"], ResponseError::ResourceNotFound.code());
        // dave was made; erin's acceptable SCRAM-SHA-512 change was not applied either.
        let describe = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            UserName::default().with_name(StrBytes::from_static_str("dave")),
            UserName::default().with_name(StrBytes::from_static_str("erin")),
        ]));
        let mut body = admin
            .request(ApiKey::DescribeUserScramCredentials, 0, &describe)
            .unwrap();
        let described = DescribeUserScramCredentialsResponse::decode(&mut body, 0).unwrap();
        let codes: Vec<(String, i16, usize)> = described
            .results
            .iter()
            .map(|r| (r.user.to_string(), r.error_code, r.credential_infos.len()))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("dave".to_string(), 0, 1),
                (
                    "erin".to_string(),
                    ResponseError::ResourceNotFound.code(),
                    0
                )
            ]
        );
        // Without ALTER on the cluster nothing changes.
        let mut mallory = logged_in(&node, "mallory", "mallory-pw");
        let results = alter(
            &mut mallory,
            &AlterUserScramCredentialsRequest::default()
                .with_upsertions(vec![upsert("admin", 1, 4096)]),
        );
        assert_eq!(
            results["admin"],
            ResponseError::ClusterAuthorizationFailed.code()
        );
        assert!(
            scram_login(
                &mut Raw::connect_to(node.server.kafka_addr()),
                Hash::Sha256,
                "admin",
                "admin-pw"
            ),
            "the admin's password is unchanged"
        );
    });
}

/// Transactional batches without a transactional id are refused (as Kafka): no coordinator
/// would ever end their transaction, and the partition's last stable offset would stick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_batches_need_a_transactional_id() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    let node = InProcess::start().await;
    tokio::task::block_in_place(|| {
        let mut batch = common::producer_batch(&[Bytes::from_static(b"x")], 1, 7, 0, 0).to_vec();
        // The transactional attribute bit, and the CRC-32C over attributes..end again.
        batch[22] |= 0x10;
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("orphans")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from(batch))),
                    ]),
            ]);
        let mut raw = Raw::connect(&node);
        let mut body = raw.request(ApiKey::Produce, 9, &request).unwrap();
        let answer = ProduceResponse::decode(&mut body, 9).unwrap();
        assert_eq!(
            answer.responses[0].partition_responses[0].error_code,
            kafka_protocol::error::ResponseError::TransactionalIdAuthorizationFailed.code()
        );
    });
}
