//! The operator console (issue 9) in a real headless Chromium (gated by `WEIR_BROWSER_TESTS=1`):
//! the page loads, shows live numbers after traffic, and starts a dry-run replay.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::dispatch::{call, create, produce_events, serve};
use reqwest::Method;
use serde_json::json;
use weir_tests::browser::{self, Browser};
use weir_tests::receiver::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_live_numbers_and_starts_a_dry_run() {
    if !browser::enabled("the_console_shows_live_numbers_and_starts_a_dry_run") {
        return;
    }
    let (node, _dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    let endpoint = create(
        &admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["shop"]}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    produce_events(&node.bootstrap(), "shop", "s-", 25, "{}").await;
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r.len() >= 25)
            .await
    );

    let mut page = Browser::open(&format!("{admin}/console")).await;
    let loaded = page
        .wait_for(
            "document.body.dataset.loaded === 'yes' && \
             document.querySelectorAll('#endpoints tbody tr').length",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(loaded, json!(1), "the page loads and lists the endpoint");
    let delivered = page
        .wait_for(
            "+document.getElementById('delivered-total').textContent >= 25 && \
             document.getElementById('delivered-total').textContent",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(delivered, json!("25"), "live numbers");
    let row = page
        .eval("document.querySelector('#endpoints tbody tr').textContent")
        .await;
    let row = row.as_str().unwrap();
    assert!(
        row.contains(&id) && row.contains("100.0%") && row.contains("closed"),
        "{row}"
    );

    // A dry run from the form: the page shows the job; it counts the 25 events.
    page.eval(
        "document.getElementById('replay-from').value = '1970-01-01T00:00:00Z'; \
         document.getElementById('dry-run').click(); true",
    )
    .await;
    let job = page
        .wait_for(
            "document.getElementById('replay-message').dataset.job || ''",
            Duration::from_secs(20),
        )
        .await;
    let job = job.as_str().unwrap().to_owned();
    assert!(job.starts_with("rp_"), "{job}");
    let shown = page
        .wait_for(
            &format!(
                "[...document.querySelectorAll('#jobs tbody tr')].some(r => \
                 r.textContent.includes('{job}') && r.textContent.includes('completed') && \
                 r.querySelector('.sent').textContent === '25')"
            ),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(shown, json!(true), "the dry run's result on the page");
    let (_, view) = call(Method::GET, format!("{admin}/v1/replays/{job}"), None).await;
    assert_eq!(view["request"]["dry_run"], json!(true), "{view}");
    assert_eq!(view["status"], "completed");
    let audited = page
        .wait_for(
            "[...document.querySelectorAll('#audit tbody tr')].some(r => \
             r.textContent.includes('replay.create'))",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(audited, json!(true), "the audit log on the page");
    assert!(receiver.received().len() == 25, "a dry run sends nothing");
}
