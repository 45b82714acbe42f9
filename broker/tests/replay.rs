//! Replays and redrives with their safety rails (issue 9), against real HTTP receivers: a replay of
//! a time window delivers exactly the matching events at no more than its rate; a dry run's counts
//! are what the real run sends; an unapproved job sends nothing; a cancelled one stops within a
//! second; a redrive empties the dead letters it targeted; tokens, roles, a second operator's
//! approval and the audit log.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::dispatch::{
    DispatcherProcess, call, call_as, create, produce, produce_events, serve, serve_with,
};
use reqwest::Method;
use serde_json::{Value, json};
use weir_dispatcher::config::{ApiToken, Role};
use weir_tests::receiver::{Received, Receiver};

fn rfc3339(t: std::time::SystemTime) -> String {
    let ms = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let secs = i64::try_from(ms / 1000).unwrap();
    let dt = chrono::DateTime::from_timestamp(secs, u32::try_from(ms % 1000).unwrap() * 1_000_000)
        .unwrap();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Waits until a job reaches one of `statuses`; its view.
async fn wait_job(admin: &str, id: &str, statuses: &[&str], within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, job) = call(Method::GET, format!("{admin}/v1/replays/{id}"), None).await;
        assert_eq!(code, 200, "{job}");
        if statuses.contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        assert!(Instant::now() < deadline, "job never {statuses:?}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a job sent (or would send) to `endpoint`, over all partitions.
fn sent_to(job: &Value, endpoint: &str) -> u64 {
    job["progress"]["counts"][endpoint]
        .as_object()
        .map_or(0, |m| m.values().map(|v| v.as_u64().unwrap()).sum())
}

fn replayed<'a>(received: &'a [Received], job: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.header("webhook-replay-id") == Some(job))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_time_window_sends_exactly_its_events_within_its_rate() {
    let (node, _dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    let endpoint = create(
        &admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["orders"], "event_types": ["order.*"]}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let bootstrap = node.bootstrap();
    let events = |prefix: &str, n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("k{i}"), format!("{prefix}-{i}")))
            .collect()
    };
    let send = |list: Vec<(String, String)>, tenant: &'static str| {
        let bootstrap = bootstrap.clone();
        async move {
            let refs: Vec<(&str, &str, &str)> = list
                .iter()
                .map(|(k, id)| (k.as_str(), id.as_str(), "{}"))
                .collect();
            produce(&bootstrap, "orders", &refs, &[("tenant", tenant)]).await;
        }
    };
    send(events("before", 20), "acme").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = rfc3339(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(events("in", 30), "acme").await;
    send(events("other", 10), "globex").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let to = rfc3339(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(events("after", 20), "acme").await;
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r.len() >= 80)
            .await,
        "the first deliveries"
    );

    // The dry run counts; the real run sends exactly that, each in-window acme event once.
    let scope = json!({"endpoint_ids": [id], "tenant": "acme", "from_time": from, "to_time": to});
    let mut dry = scope.clone();
    dry["dry_run"] = json!(true);
    let (code, job) = call(Method::POST, format!("{admin}/v1/replays"), Some(dry)).await;
    assert_eq!(code, 201, "{job}");
    let dry = wait_job(
        &admin,
        job["id"].as_str().unwrap(),
        &["completed"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(sent_to(&dry, &id), 30, "{dry}");
    let mut real = scope.clone();
    real["rate_limit_per_s"] = json!(20);
    let (code, job) = call(Method::POST, format!("{admin}/v1/replays"), Some(real)).await;
    assert_eq!(code, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let done = wait_job(&admin, &job_id, &["completed"], Duration::from_secs(60)).await;
    assert_eq!(sent_to(&done, &id), sent_to(&dry, &id), "{done}");
    assert!(
        receiver
            .wait(Duration::from_secs(10), |r| replayed(r, &job_id).len()
                >= 30)
            .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = receiver.received();
    let got = replayed(&all, &job_id);
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    let wanted: HashSet<String> = (0..30).map(|i| format!("in-{i}")).collect();
    assert_eq!(ids.len(), 30, "each once: {ids:?}");
    assert_eq!(
        unique,
        wanted.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    // 20/s: no second holds more than 20 (plus one at the window's edge), and 30 take > 1.4 s.
    let mut at: Vec<Instant> = got.iter().map(|r| r.at).collect();
    at.sort();
    for (i, t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(1))
            .count();
        assert!(within <= 21, "{within} deliveries within a second at 20/s");
    }
    assert!(
        *at.last().unwrap() - at[0] >= Duration::from_millis(1400),
        "{:?}",
        *at.last().unwrap() - at[0]
    );
    // Both jobs are in the audit log.
    let (_, audit) = call(
        Method::GET,
        format!("{admin}/v1/audit?action=replay.create"),
        None,
    )
    .await;
    assert_eq!(audit["audit"].as_array().unwrap().len(), 2, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapproved_job_sends_nothing_a_paused_one_waits_and_a_cancelled_one_stops_within_a_second()
 {
    let (node, _dispatcher, admin) = serve_with(|d| d.replay_approval_threshold = 10).await;
    let receiver = Receiver::start().await;
    let endpoint = create(
        &admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["events"]}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    produce_events(&node.bootstrap(), "events", "e-", 100, "{}").await;
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r.len() >= 100)
            .await
    );

    let request = json!({"endpoint_ids": [id], "from_time": "1970-01-01T00:00:00Z",
                         "rate_limit_per_s": 10});
    let (code, job) = call(Method::POST, format!("{admin}/v1/replays"), Some(request)).await;
    assert_eq!(code, 201, "{job}");
    assert_eq!(job["status"], "awaiting_approval", "{job}");
    assert_eq!(job["planned_records"], 100);
    let job_id = job["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        replayed(&receiver.received(), &job_id).is_empty(),
        "an unapproved job sent something"
    );

    // Development mode: the same (loopback) operator may approve.
    let (code, job) = call(
        Method::POST,
        format!("{admin}/v1/replays/{job_id}/approve"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{job}");
    assert!(
        receiver
            .wait(Duration::from_secs(10), |r| replayed(r, &job_id).len()
                >= 10)
            .await,
        "an approved job sends"
    );
    // Paused, it sends nothing (after a second for what was under way); resumed, it goes on.
    let (code, job) = call(
        Method::POST,
        format!("{admin}/v1/replays/{job_id}/pause"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["status"], "paused");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = replayed(&receiver.received(), &job_id).len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        replayed(&receiver.received(), &job_id).len(),
        before,
        "a paused job sent"
    );
    let (code, job) = call(
        Method::POST,
        format!("{admin}/v1/replays/{job_id}/resume"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{job}");
    assert!(
        receiver
            .wait(Duration::from_secs(10), |r| replayed(r, &job_id).len()
                >= before + 5)
            .await,
        "a resumed job sends again"
    );
    let (code, job) = call(
        Method::POST,
        format!("{admin}/v1/replays/{job_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["status"], "cancelled");
    let cancelled = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = receiver.received();
    let got = replayed(&all, &job_id);
    let late: Vec<Duration> = got
        .iter()
        .filter(|r| r.at > cancelled)
        .map(|r| r.at - cancelled)
        .collect();
    assert!(
        late.iter().all(|d| *d < Duration::from_secs(1)),
        "deliveries after the cancel: {late:?}"
    );
    assert!(got.len() < 100, "cancelled, yet it sent all {}", got.len());
    let (code, _) = call(
        Method::POST,
        format!("{admin}/v1/replays/{job_id}/resume"),
        None,
    )
    .await;
    assert_eq!(code, 409, "a cancelled job cannot be resumed");
}

async fn dead_letters(admin: &str, endpoint: &str) -> Vec<Value> {
    let (_, dlq) = call(
        Method::GET,
        format!("{admin}/v1/dlq?endpoint_id={endpoint}"),
        None,
    )
    .await;
    dlq["dead_letters"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_empties_the_dead_letters_it_targeted() {
    let (node, _dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    let failing = create(
        &admin,
        json!({"url": receiver.url("/status/500"), "source_topics": ["payments"],
               "retry_schedule_s": []}),
    )
    .await;
    let failing = failing["id"].as_str().unwrap().to_owned();
    let refused = create(
        &admin,
        json!({"url": receiver.url("/status/400"), "source_topics": ["payments"]}),
    )
    .await;
    let refused = refused["id"].as_str().unwrap().to_owned();
    produce_events(&node.bootstrap(), "payments", "p-", 12, "{\"amount\":1}").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead_letters(&admin, &failing).await.len() < 12
        || dead_letters(&admin, &refused).await.len() < 12
    {
        assert!(Instant::now() < deadline, "dead letters never appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The receiver is fixed; the server errors are redriven, the refusals left alone.
    let (code, _) = call(
        Method::PATCH,
        format!("{admin}/v1/endpoints/{failing}"),
        Some(json!({"url": receiver.url("/ok")})),
    )
    .await;
    assert_eq!(code, 200);
    let scope = json!({"error_class": "server", "rate_limit_per_s": 100});
    let mut dry = scope.clone();
    dry["dry_run"] = json!(true);
    let (code, job) = call(Method::POST, format!("{admin}/v1/redrives"), Some(dry)).await;
    assert_eq!(code, 201, "{job}");
    let dry = wait_job(
        &admin,
        job["id"].as_str().unwrap(),
        &["completed"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(sent_to(&dry, &failing), 12, "{dry}");
    assert_eq!(sent_to(&dry, &refused), 0, "{dry}");
    let (code, job) = call(
        Method::POST,
        format!("{admin}/v1/redrives"),
        Some(scope.clone()),
    )
    .await;
    assert_eq!(code, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let done = wait_job(&admin, &job_id, &["completed"], Duration::from_secs(60)).await;
    assert_eq!(sent_to(&done, &failing), 12, "{done}");
    let all = receiver.received();
    let redriven: HashSet<&str> = replayed(&all, &job_id)
        .iter()
        .filter(|r| r.path == "/ok")
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(redriven.len(), 12, "each dead letter's event delivered");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dead_letters(&admin, &failing).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the redriven letters are still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead_letters(&admin, &refused).await.len(), 12, "untargeted");
    // A second redrive of the same scope finds nothing left.
    let mut again = scope;
    again["dry_run"] = json!(true);
    let (_, job) = call(Method::POST, format!("{admin}/v1/redrives"), Some(again)).await;
    let again = wait_job(
        &admin,
        job["id"].as_str().unwrap(),
        &["completed"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(sent_to(&again, &failing), 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_have_roles_a_second_operator_approves_and_everything_is_audited() {
    let token = |name: &str, roles: &[Role]| ApiToken {
        name: name.into(),
        token: Some(format!("{name}-secret")),
        token_sha256: None,
        roles: roles.to_vec(),
    };
    let (node, _dispatcher, admin) = serve_with(|d| {
        d.replay_approval_threshold = 2;
        d.tokens = vec![
            token("alice", &[Role::Operator]),
            token("bob", &[Role::Approver]),
            token("vera", &[Role::Viewer]),
            token("pat", &[Role::Payloads]),
        ];
    })
    .await;
    let receiver = Receiver::start().await;
    let url = |p: &str| format!("{admin}{p}");
    let (code, _) = call(Method::GET, url("/v1/endpoints"), None).await;
    assert_eq!(code, 401, "no token");
    let page = reqwest::get(url("/console")).await.unwrap();
    assert_eq!(page.status(), 200, "the console page itself needs no token");
    let (code, _) = call_as(Some("nobody"), Method::GET, url("/v1/endpoints"), None).await;
    assert_eq!(code, 401, "unknown token");
    let (code, _) = call_as(Some("vera-secret"), Method::GET, url("/v1/endpoints"), None).await;
    assert_eq!(code, 200, "a viewer reads");
    let body = json!({"url": receiver.url("/ok"), "source_topics": ["audited"]});
    let (code, _) = call_as(
        Some("vera-secret"),
        Method::POST,
        url("/v1/endpoints"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(code, 403, "a viewer does not write");
    let (code, endpoint) = call_as(
        Some("alice-secret"),
        Method::POST,
        url("/v1/endpoints"),
        Some(body),
    )
    .await;
    assert_eq!(code, 201, "{endpoint}");
    let id = endpoint["id"].as_str().unwrap().to_owned();
    produce(
        &node.bootstrap(),
        "audited",
        &[
            ("a", "x-1", "{\"card\":\"4242\"}"),
            ("b", "x-2", "{}"),
            ("c", "x-3", "{}"),
        ],
        &[],
    )
    .await;
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r.len() >= 3)
            .await
    );

    let request = json!({"endpoint_ids": [id], "from_time": "1970-01-01T00:00:00Z"});
    let (code, job) = call_as(
        Some("alice-secret"),
        Method::POST,
        url("/v1/replays"),
        Some(request),
    )
    .await;
    assert_eq!(code, 201, "{job}");
    assert_eq!(job["status"], "awaiting_approval");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let approve = format!("/v1/replays/{job_id}/approve");
    let (code, _) = call_as(Some("alice-secret"), Method::POST, url(&approve), None).await;
    assert_eq!(code, 403, "an operator without the approver role");
    let (code, job) = call_as(Some("bob-secret"), Method::POST, url(&approve), None).await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["control"]["approved_by"], "bob");
    assert!(
        receiver
            .wait(Duration::from_secs(20), |r| replayed(r, &job_id).len() >= 3)
            .await
    );

    // Payloads: only with the permission, and every look is audited.
    let event = url("/v1/events/audited/0/0");
    let (code, _) = call_as(Some("alice-secret"), Method::GET, event.clone(), None).await;
    assert_eq!(code, 403);
    let (code, found) = call_as(Some("pat-secret"), Method::GET, event, None).await;
    assert_eq!(code, 200, "{found}");
    assert!(found["payload"].is_string(), "{found}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, audit) = call_as(Some("vera-secret"), Method::GET, url("/v1/audit"), None).await;
        let seen: HashSet<(String, String, String)> = audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["actor"].as_str().unwrap().to_owned(),
                    a["action"].as_str().unwrap().to_owned(),
                    a["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let wanted = [
            ("alice", "endpoint.create", "ok"),
            ("alice", "replay.create", "awaiting_approval"),
            ("bob", "replay.approve", "ok"),
            ("alice", "event.inspect", "denied"),
            ("pat", "event.inspect", "ok"),
        ];
        if wanted
            .iter()
            .all(|(a, b, c)| seen.contains(&((*a).into(), (*b).into(), (*c).into())))
        {
            break;
        }
        assert!(Instant::now() < deadline, "audit: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_replay_starts_and_shows_jobs() {
    let (node, _dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    let endpoint = create(
        &admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["cli"]}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    produce(
        &node.bootstrap(),
        "cli",
        &[("a", "c-1", "{}"), ("b", "c-2", "{}"), ("c", "c-3", "{}")],
        &[],
    )
    .await;
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r.len() >= 3)
            .await
    );
    let weir = |args: &[&str]| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("replay")
            .arg("--url")
            .arg(&admin)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "weir replay {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Offsets 1 and 2 of the only partition the topic has: two events, by offset range.
    let job = tokio::task::block_in_place(|| {
        weir(&[
            "start",
            "--endpoint",
            &id,
            "--range",
            "cli:0:1:3",
            "--rate",
            "50",
        ])
    });
    let job_id = job["id"].as_str().unwrap().to_owned();
    let done = wait_job(&admin, &job_id, &["completed"], Duration::from_secs(30)).await;
    assert_eq!(sent_to(&done, &id), 2, "{done}");
    assert!(
        receiver
            .wait(Duration::from_secs(10), |r| replayed(r, &job_id).len() >= 2)
            .await
    );
    let shown = tokio::task::block_in_place(|| weir(&["show", &job_id]));
    assert_eq!(shown["status"], "completed");
    let mut ids: Vec<String> = replayed(&receiver.received(), &job_id)
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["c-2", "c-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_outlives_the_dispatcher_running_it() {
    let node = common::InProcess::start_with(|c| c.dispatcher.enabled = false).await;
    let key = weir_dispatcher::crypto::SecretKey::generate();
    let receiver = Receiver::start().await;
    let first = DispatcherProcess::start(&node.bootstrap(), &key, true);
    let second = DispatcherProcess::start(&node.bootstrap(), &key, true);
    let endpoint = create(
        &first.admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["ledger"]}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    produce_events(&node.bootstrap(), "ledger", "l-", 200, "{}").await;
    assert!(
        receiver
            .wait(Duration::from_secs(60), |r| r.len() >= 200)
            .await
    );
    let request = json!({"endpoint_ids": [id], "from_time": "1970-01-01T00:00:00Z",
                         "rate_limit_per_s": 25});
    let (code, job) = call(
        Method::POST,
        format!("{}/v1/replays", first.admin),
        Some(request),
    )
    .await;
    assert_eq!(code, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| replayed(r, &job_id).len()
                >= 40)
            .await,
        "the replay runs"
    );
    // Kill the instance running it (its checkpoint is at most a second old).
    let deadline = Instant::now() + Duration::from_secs(10);
    let runner = loop {
        let (_, job) = call(
            Method::GET,
            format!("{}/v1/replays/{job_id}", second.admin),
            None,
        )
        .await;
        if let Some(r) = job["progress"]["runner"].as_str() {
            break r.to_owned();
        }
        assert!(Instant::now() < deadline, "no runner: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, stats) = call(Method::GET, format!("{}/v1/stats", first.admin), None).await;
    let (killed, survivor) = if stats["instance"] == runner.as_str() {
        (first, second)
    } else {
        (second, first)
    };
    killed.kill9();
    let done = wait_job(
        &survivor.admin,
        &job_id,
        &["completed"],
        Duration::from_secs(90),
    )
    .await;
    let (_, stats) = call(Method::GET, format!("{}/v1/stats", survivor.admin), None).await;
    assert_eq!(
        done["progress"]["runner"], stats["instance"],
        "taken over: {done}"
    );
    let all = receiver.received();
    let ids: HashSet<&str> = replayed(&all, &job_id)
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 200, "every event replayed at least once");
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_redrive_loses_no_dead_letter() {
    let (node, _dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    let endpoint = create(
        &admin,
        json!({"url": receiver.url("/status/500"), "source_topics": ["refunds"],
               "retry_schedule_s": []}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    produce_events(&node.bootstrap(), "refunds", "r-", 30, "{}").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead_letters(&admin, &id).await.len() < 30 {
        assert!(Instant::now() < deadline, "dead letters never appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = call(
        Method::PATCH,
        format!("{admin}/v1/endpoints/{id}"),
        Some(json!({"url": receiver.url("/ok")})),
    )
    .await;
    assert_eq!(code, 200);
    let (code, job) = call(
        Method::POST,
        format!("{admin}/v1/redrives"),
        Some(json!({"endpoint_ids": [id], "rate_limit_per_s": 4})),
    )
    .await;
    assert_eq!(code, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    assert!(
        receiver
            .wait(Duration::from_secs(20), |r| replayed(r, &job_id).len() >= 3)
            .await
    );
    let (code, _) = call(
        Method::POST,
        format!("{admin}/v1/redrives/{job_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Every event is either delivered by the redrive or still a dead letter.
    let delivered: HashSet<String> = replayed(&receiver.received(), &job_id)
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert!(delivered.len() < 30, "cancelled, yet all were sent");
    let listed: HashSet<String> = dead_letters(&admin, &id)
        .await
        .iter()
        .map(|d| d["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<String> = (0..30)
        .map(|i| format!("r-{i}"))
        .filter(|e| !delivered.contains(e) && !listed.contains(e))
        .collect();
    assert!(
        lost.is_empty(),
        "neither delivered nor a dead letter: {lost:?}"
    );
}
