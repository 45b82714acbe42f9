//! A real crash: a process appending to a file WAL is killed with SIGKILL at a random moment; the WAL,
//! reopened, must hold every record the process saw acknowledged, at the position it was given, with
//! the bytes it wrote. Repeated several times on the same directory, so later rounds also recover
//! the torn tails and fresh segments of earlier ones.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weir_wal::{FileWal, FileWalConfig};

const ROUNDS: u64 = 6;

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("wal_kill9 seed {seed} (kill delays derive from it)");
    // (round, stream, seq) -> position, over all rounds.
    let mut acked: HashMap<(u64, u64, u64), u64> = HashMap::new();
    let mut recovered_before = 0usize;
    for round in 0..ROUNDS {
        let delay_ms = 50 + (seed.rotate_left(round as u32 * 7) % 400);
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-crash-writer"))
            .arg(dir.path())
            .arg("16")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("writer starts");
        let recovered: usize = first.strip_prefix("READY ").unwrap().parse().unwrap();
        assert!(
            recovered >= recovered_before,
            "round {round}: the WAL lost records between runs"
        );
        let deadline = Instant::now() + Duration::from_millis(delay_ms);
        let mut this_round = 0;
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(5)) {
                record_ack(&line, round, &mut acked);
                this_round += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acknowledgements already printed before the kill are acknowledged too.
        reader.join().unwrap();
        while let Ok(line) = rx.try_recv() {
            record_ack(&line, round, &mut acked);
            this_round += 1;
        }
        assert!(
            this_round > 0,
            "round {round}: the writer acknowledged nothing in {delay_ms} ms"
        );

        let (wal, recovery) = FileWal::open(dir.path(), wal_config()).unwrap();
        recovered_before = recovery.records.len();
        let by_position: HashMap<u64, &weir_wal::WalRecord> = recovery
            .records
            .iter()
            .map(|r| (r.position.0, &r.record))
            .collect();
        for ((acked_round, stream, seq), position) in &acked {
            let record = by_position.get(position).unwrap_or_else(|| {
                panic!("round {round}: record {stream}/{seq} of round {acked_round}, acknowledged at position {position}, lost")
            });
            assert_eq!(
                (record.stream_id.get(), record.base_offset.get()),
                (*stream, *seq)
            );
            assert_eq!(
                record.payload,
                weir_tests::payload(*stream, *seq),
                "bytes of {stream}/{seq}"
            );
        }
        // Closed, not just dropped: a drop leaves the writer thread, which holds the directory's
        // lock, to stop on its own, and the next round's writer would find the WAL still locked.
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(weir_wal::Wal::close(&wal))
            .unwrap();
        drop(wal);
        eprintln!(
            "round {round}: killed after {delay_ms} ms, {this_round} acks, {} records recovered, torn tail: {:?}",
            recovery.records.len(),
            recovery.torn_tail.map(|t| t.reason)
        );
    }
}

fn record_ack(line: &str, round: u64, acked: &mut HashMap<(u64, u64, u64), u64>) {
    let parts: Vec<u64> = line
        .strip_prefix("ACK ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    // Each round restarts sequence numbers, so the round is part of the key.
    acked.insert((round, parts[0], parts[1]), parts[2]);
}

fn wal_config() -> FileWalConfig {
    FileWalConfig {
        segment_bytes: 256 << 10,
        max_record_bytes: 64 << 10,
        ..FileWalConfig::default()
    }
}
