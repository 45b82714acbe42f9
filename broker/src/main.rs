//! The `weir` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use weir_broker::{ServeConfig, Server};

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "A Kafka-compatible broker on a WAL and object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single node: broker and controller in one process, data under --data-dir.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Kafka listener [default: 127.0.0.1:9092]
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Admin HTTP listener (health) [default: 127.0.0.1:9644]
    #[arg(long, env = "WEIR_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Data directory [default: ./weir-data]
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Object store URL: file:///path, memory:// or s3://bucket[/prefix] (S3 settings from the AWS_*
    /// variables: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP) [default: file://DATA_DIR/objects]
    #[arg(long, env = "WEIR_OBJECT_STORE")]
    object_store: Option<String>,
    /// Where the WAL lives: file (data_dir/wal) or object (the object store) [default: file]
    #[arg(long, env = "WEIR_WAL_KIND", value_enum)]
    wal: Option<weir_broker::config::WalKind>,
    /// Address clients should connect to, host:port [default: the listen address]
    #[arg(long, env = "WEIR_ADVERTISED_LISTENER")]
    advertised_listener: Option<String>,
    /// TOML config file; WEIR_<KEY> (and WEIR_<SECTION>__<KEY>) variables, then flags, override it
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<ServeConfig> {
        let mut config = ServeConfig::load(self.config.as_deref(), std::env::vars())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(admin) = self.admin_listen {
            config.admin_listen = admin;
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(kind) = self.wal {
            config.wal_kind = kind;
        }
        if let Some(url) = self.object_store {
            config.object_store = Some(url);
        }
        if let Some(adv) = self.advertised_listener {
            config.advertised_listener = Some(adv);
        }
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Logs on stderr; stdout carries only the "weir serving" line.
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args.config()?).await,
        }
    })
}

/// glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
/// which fetched object ranges and upload buffers come from the heap arenas, fragment them, and stay
/// resident: a broker holding 384 MiB of caches measured 800-960 MiB RSS after a catch-up read. With
/// a fixed threshold large buffers are mapped and unmapped on their own, free heap is returned above
/// 1 MiB, and arenas are capped at one per core (BENCHMARKS.md). The threshold is 1 MiB, above the
/// 512 KiB blocks of the block cache and most request buffers: at 256 KiB every cached block was a
/// mapping of its own and cold catch-up reads fell from 331 to 178 MB/s. `MALLOC_*` environment
/// variables still override these.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |param: libc::c_int, variable: &str, value: usize| {
            let Ok(value) = libc::c_int::try_from(value) else {
                return;
            };
            if std::env::var_os(variable).is_some() {
                return;
            }
            // SAFETY: mallopt only adjusts allocator parameters; called before any thread exists.
            unsafe { libc::mallopt(param, value) };
        };
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        set(libc::M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 1 << 20);
        set(libc::M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 1 << 20);
        set(libc::M_ARENA_MAX, "MALLOC_ARENA_MAX", cores);
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    // One line on stdout with the bound addresses (ports may have been 0), for scripts and tests.
    println!(
        "weir serving kafka={} admin={}",
        server.kafka_addr(),
        server.admin_addr()
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    wait_for_signal().await;
    tracing::info!("shutting down: draining and uploading");
    server.shutdown().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
