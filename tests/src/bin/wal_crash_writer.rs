//! Appends to a file WAL as fast as it can from several tasks and prints a line for every append the
//! WAL acknowledged: `ACK <stream> <seq> <position>`. The `wal_kill9` test kills it with SIGKILL at a
//! random moment and checks that the WAL recovers every acknowledged record.
//!
//! Usage: `wal-crash-writer DIR APPENDERS`

use std::io::Write;
use std::sync::Arc;

use weir_common::{Epoch, Offset, StreamId};
use weir_wal::{FileWal, FileWalConfig, Wal, WalRecord};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: wal-crash-writer DIR APPENDERS")?;
    let appenders: u64 = args.next().ok_or("missing APPENDERS")?.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let config = FileWalConfig {
            // Small segments: the crash often lands near a roll.
            segment_bytes: 256 << 10,
            max_record_bytes: 64 << 10,
            ..FileWalConfig::default()
        };
        let (wal, recovery) = FileWal::open(std::path::Path::new(&dir), config)?;
        println!("READY {}", recovery.records.len());
        let wal = Arc::new(wal);
        let tasks: Vec<_> = (0..appenders)
            .map(|stream| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    for seq in 0.. {
                        let record = WalRecord {
                            stream_id: StreamId(stream),
                            epoch: Epoch(1),
                            base_offset: Offset(seq),
                            count: 1,
                            payload: weir_tests::payload(stream, seq),
                        };
                        let Ok(pending) = wal.append(record) else {
                            return;
                        };
                        let Ok(position) = pending.await else { return };
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ACK {stream} {seq} {}", position.0);
                        let _ = out.flush();
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
