//! The controller role over gRPC, in one process: election through the log, brokers registering and
//! heartbeating, partition placement, moves, fencing of a silent broker and the recovery of its
//! partitions, and a deposed controller that can commit nothing.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::memory::InMemory;
use tokio::sync::watch;
use weir_common::StreamId;
use weir_controller::{
    ControllerConfig, ControllerError, Registration, RemoteController, Role, RoleConfig, State,
};
use weir_storage::StreamMetadata;

const SESSION: Duration = Duration::from_millis(1500);

struct Node {
    role: Arc<Role>,
    rpc: String,
    recovered: Arc<Mutex<Vec<(u32, String)>>>,
    _stop: watch::Sender<bool>,
}

async fn controller_node(store: &Arc<dyn ObjectStore>, node_id: u32) -> Node {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let rpc = format!("http://{}", listener.local_addr().unwrap());
    let recovered: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
    let log = recovered.clone();
    let role = Role::new(
        store.clone(),
        RoleConfig {
            node_id,
            rpc: rpc.clone(),
            session_timeout: SESSION,
            controller: ControllerConfig::default(),
            recover: Arc::new(move |node, wal| {
                log.lock().unwrap().push((node, wal));
                Box::pin(async { Ok(()) })
            }),
            gc_interval: Duration::from_secs(3600),
            gc_grace_ms: 60_000,
            balance_interval: None,
        },
    );
    let (stop, stopped) = watch::channel(false);
    let service = role.service();
    let mut shutdown = stopped.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = shutdown.changed().await;
                },
            )
            .await
            .unwrap();
    });
    tokio::spawn(role.clone().supervise(Duration::from_millis(100), stopped));
    Node {
        role,
        rpc,
        recovered,
        _stop: stop,
    }
}

struct Broker {
    remote: RemoteController,
    stop: watch::Sender<bool>,
}

async fn broker(store: &Arc<dyn ObjectStore>, node_id: u32) -> Broker {
    let remote = RemoteController::open(store.clone(), Duration::from_secs(10))
        .await
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(remote.clone().follow(stopped.clone()));
    let registration = Registration {
        node_id,
        host: "127.0.0.1".into(),
        port: 9000 + node_id,
        rpc: String::new(),
        admin: String::new(),
        controller: false,
        wal: "object".into(),
    };
    tokio::spawn(remote.clone().keep_registered(
        registration,
        Duration::from_millis(200),
        Arc::new(Vec::new),
        stopped,
    ));
    Broker { remote, stop }
}

async fn until(what: &str, remote: &RemoteController, f: impl Fn(&State) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !remote.read(&f) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_join_partitions_move_and_a_silent_broker_is_replaced() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let c1 = controller_node(&store, 1).await;
    assert!(
        c1.role.try_elect(None).await.unwrap(),
        "the first candidate wins"
    );
    let brokers = [
        broker(&store, 1).await,
        broker(&store, 2).await,
        broker(&store, 3).await,
    ];
    let r = &brokers[0].remote;
    until("three live brokers", r, |s| s.live_brokers() == [1, 2, 3]).await;
    assert_eq!(
        r.read(|s| s.controller.as_ref().map(|a| (a.node_id, a.rpc.clone()))),
        Some((1, c1.rpc.clone()))
    );

    // Placement: six partitions, two per broker; every replica sees it once the call returns.
    let topic = r.create_topic("t", 6, Default::default()).await.unwrap();
    let owners: Vec<u32> = r.read(|s| {
        topic
            .partitions
            .iter()
            .map(|p| s.streams[p].owner)
            .collect()
    });
    for b in 1..=3 {
        assert_eq!(owners.iter().filter(|o| **o == b).count(), 2, "{owners:?}");
    }
    let other = &brokers[1].remote;
    until("the topic on another broker", other, |s| {
        s.topics.contains_key("t")
    })
    .await;
    assert!(matches!(
        r.create_topic("t", 1, Default::default()).await,
        Err(ControllerError::TopicExists(_))
    ));

    // A move: the target leads at once; the old owner's report makes it the owner.
    let stream = topic.partitions[0];
    let from = owners[0];
    let to = if from == 1 { 2 } else { 1 };
    let opened = r.open_stream(stream).await.unwrap();
    assert_eq!(
        r.read(|s| s.streams[&stream].epoch),
        opened.epoch,
        "read your writes"
    );
    r.reassign(stream, to).await.unwrap();
    assert_eq!(
        r.read(|s| (s.streams[&stream].owner, s.streams[&stream].leader())),
        (from, to)
    );
    assert!(
        r.move_done(stream, weir_common::Epoch(opened.epoch.get() + 7))
            .await
            .is_err(),
        "a report at another epoch is refused"
    );
    r.move_done(stream, opened.epoch).await.unwrap();
    assert_eq!(
        r.read(|s| (s.streams[&stream].owner, s.streams[&stream].target)),
        (to, 0)
    );

    // Broker 3 goes silent: fenced after the session timeout, its WAL recovered, its partitions
    // given to the others.
    brokers[2].stop.send_replace(true);
    until("broker 3 fenced and its partitions moved", r, |s| {
        s.brokers[&3].fenced && s.streams.values().all(|st| st.owner != 3)
    })
    .await;
    assert_eq!(
        c1.recovered.lock().unwrap().as_slice(),
        &[(3, "object".to_string())]
    );

    // A second controller takes over; the first can commit nothing any more and steps down.
    let c2 = controller_node(&store, 2).await;
    let deposed = c1.role.active().unwrap();
    assert!(
        !c2.role.try_elect(Some(0)).await.unwrap(),
        "a candidate that did not see the current election gives up"
    );
    assert!(c2.role.try_elect(Some(1)).await.unwrap());
    assert!(matches!(
        deposed.create_topic("never", 1, Default::default()).await,
        Err(ControllerError::LostLeadership { .. })
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while c1.role.active().is_some() {
        assert!(
            Instant::now() < deadline,
            "the deposed controller did not step down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Brokers follow the new controller: calls and the replica keep working.
    r.create_topic("after", 2, Default::default())
        .await
        .unwrap();
    until("the new topic on another broker", other, |s| {
        s.topics.contains_key("after") && !s.topics.contains_key("never")
    })
    .await;
    assert_eq!(
        r.read(|s| s.controller.as_ref().map(|a| a.node_id)),
        Some(2)
    );
    let stream = StreamId(r.read(|s| s.topics["after"].partitions[0].get()));
    other.open_stream(stream).await.unwrap();
}
