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
    /// Run one broker of a cluster: brokers share one object store (the bucket) and nothing else.
    Broker(BrokerArgs),
    /// Operate a cluster through a broker's admin API.
    Admin(AdminArgs),
    /// Run the webhook dispatcher alone, against Weir or any Kafka.
    Dispatcher(DispatcherArgs),
    /// Replay events or redrive dead letters through the dispatcher's admin API.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The dispatcher's admin HTTP address (`weir serve`'s admin listener)
    #[arg(long, env = "WEIR_ADMIN_URL", default_value = "http://127.0.0.1:9644")]
    url: String,
    /// An admin API token (none: development mode, loopback only)
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    action: ReplayAction,
}

/// What a replay or redrive covers.
#[derive(Debug, clap::Args)]
struct Scope {
    /// An endpoint (repeat for several); a replay sends only to these
    #[arg(long = "endpoint")]
    endpoints: Vec<String>,
    /// Only events of this tenant
    #[arg(long)]
    tenant: Option<String>,
    /// Only events of this type (`*` wildcards; repeat for several)
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// From this time (RFC 3339)
    #[arg(long)]
    from: Option<String>,
    /// Up to this time, excluded (RFC 3339)
    #[arg(long)]
    to: Option<String>,
    /// Deliveries per second of this job
    #[arg(long)]
    rate: Option<u32>,
    /// Count only: what would be sent, per endpoint and partition
    #[arg(long)]
    dry_run: bool,
}

impl Scope {
    fn request(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoint_ids": self.endpoints,
            "tenant": self.tenant,
            "event_types": self.event_types,
            "from_time": self.from,
            "to_time": self.to,
            "rate_limit_per_s": self.rate,
            "dry_run": self.dry_run,
        })
    }
}

#[derive(Debug, Subcommand)]
enum ReplayAction {
    /// Start a replay of a source topic's events
    Start {
        #[command(flatten)]
        scope: Scope,
        /// Instead of a time range: TOPIC:PARTITION:FROM:TO (offsets, TO excluded; repeatable)
        #[arg(long = "range")]
        ranges: Vec<String>,
        /// Send new webhook-ids instead of the events' own
        #[arg(long)]
        new_webhook_ids: bool,
    },
    /// Start a redrive of dead letters
    Redrive {
        #[command(flatten)]
        scope: Scope,
        /// Only dead letters of this error class (timeout, connect, tls, server, throttled, ...)
        #[arg(long)]
        error_class: Option<String>,
    },
    /// List the jobs
    List,
    /// Show a job
    Show { id: String },
    /// Approve a job (an approver other than its creator)
    Approve { id: String },
    /// Pause a job
    Pause { id: String },
    /// Resume a paused job
    Resume { id: String },
    /// Cancel a job (its queued deliveries are dropped)
    Cancel { id: String },
}

#[derive(Debug, clap::Args)]
struct DispatcherArgs {
    /// Kafka bootstrap servers
    #[arg(long, env = "WEIR_DISPATCHER__BOOTSTRAP")]
    bootstrap: String,
    /// Admin HTTP listener (the dispatcher's API, health)
    #[arg(long, default_value = "127.0.0.1:9646")]
    admin_listen: SocketAddr,
    /// TOML config file with a [dispatcher] section; WEIR_DISPATCHER__<KEY> variables override it
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// A broker's admin HTTP address
    #[arg(long, env = "WEIR_ADMIN_URL", default_value = "http://127.0.0.1:9644")]
    url: String,
    /// The broker's admin token (scram and acl commands): its data_dir/admin.token
    #[arg(
        long,
        env = "WEIR_ADMIN_TOKEN_FILE",
        default_value = "weir-data/admin.token"
    )]
    token_file: PathBuf,
    #[command(subcommand)]
    action: AdminAction,
}

#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Show the brokers, the controller and who leads each partition
    Cluster,
    /// Move a partition to a broker (no data is copied)
    Reassign {
        /// Topic name
        topic: String,
        /// Partition index
        partition: u32,
        /// Node id of the broker to move it to
        broker: u32,
    },
    /// Move every partition off a broker (before stopping it)
    Drain {
        /// Node id of the broker to empty
        broker: u32,
    },
    /// SCRAM credentials (SASL logins; PLAIN checks passwords against them too)
    Scram {
        #[command(subcommand)]
        action: ScramAction,
    },
    /// ACLs (enforced with `authorizer = "acl"`)
    Acl {
        #[command(subcommand)]
        action: AclAction,
    },
}

#[derive(Debug, Subcommand)]
enum ScramAction {
    /// Create or replace a user's credential (the password is salted and hashed here)
    Set {
        /// User name
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        /// PBKDF2 iterations (4096 to 16384)
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
        /// Read the password from standard input (its first line)
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Delete a user's credential
    Delete {
        user: String,
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
    },
    /// List users and their mechanisms
    List,
}

#[derive(Debug, clap::Args)]
struct AclSpec {
    /// The principal, e.g. User:alice (User:* for everyone)
    #[arg(long)]
    principal: String,
    /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
    /// ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL
    #[arg(long)]
    operation: String,
    /// A topic
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// A transactional id
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    /// The cluster
    #[arg(long, group = "resource")]
    cluster: bool,
    /// The name is a prefix
    #[arg(long)]
    prefixed: bool,
    /// Deny instead of allow
    #[arg(long)]
    deny: bool,
    /// Only from this IP address
    #[arg(long, default_value = "*")]
    host: String,
}

impl AclSpec {
    fn view(&self) -> anyhow::Result<weir_broker::security::http::AclView> {
        let (resource_type, resource_name) =
            match (&self.topic, &self.group, &self.transactional_id) {
                (Some(t), _, _) => ("TOPIC", t.clone()),
                (_, Some(g), _) => ("GROUP", g.clone()),
                (_, _, Some(t)) => ("TRANSACTIONAL_ID", t.clone()),
                _ if self.cluster => ("CLUSTER", weir_broker::security::acl::CLUSTER.to_string()),
                _ => anyhow::bail!(
                    "name a resource: --topic, --group, --transactional-id or --cluster"
                ),
            };
        Ok(weir_broker::security::http::AclView {
            resource_type: resource_type.into(),
            resource_name,
            pattern_type: if self.prefixed { "PREFIXED" } else { "LITERAL" }.into(),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.clone(),
            permission: if self.deny { "DENY" } else { "ALLOW" }.into(),
        })
    }
}

#[derive(Debug, Subcommand)]
enum AclAction {
    /// Add an ACL
    Add(AclSpec),
    /// Remove an ACL
    Remove(AclSpec),
    /// List the ACLs
    List,
}

#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// This broker's node id (1 and up), unique in the cluster
    #[arg(long, env = "WEIR_NODE_ID")]
    node_id: Option<i32>,
    /// Kafka listener [default: 127.0.0.1:9092]
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address clients should connect to, host:port [default: the listen address]
    #[arg(long, env = "WEIR_ADVERTISED_LISTENER")]
    advertised_listener: Option<String>,
    /// Admin HTTP listener [default: 127.0.0.1:9644]
    #[arg(long, env = "WEIR_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// gRPC listener for the controller and brokers [default: 127.0.0.1:9645]
    #[arg(long, env = "WEIR_RPC_LISTEN")]
    rpc_listen: Option<SocketAddr>,
    /// gRPC address other brokers reach this one at, host:port [default: the rpc listen address]
    #[arg(long, env = "WEIR_ADVERTISED_RPC")]
    advertised_rpc: Option<String>,
    /// The bucket every broker shares: s3://bucket[/prefix] (AWS_* variables), file:///path
    #[arg(long, env = "WEIR_OBJECT_STORE")]
    object_store: Option<String>,
    /// The WAL: `object` (in the bucket: a survivor recovers it) or `file:DIR`
    #[arg(long, env = "WEIR_WAL")]
    wal: Option<String>,
    /// This broker may become the active controller
    #[arg(long)]
    controller: bool,
    /// Local directory for caches and a default file WAL [default: ./weir-data]
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file; WEIR_<KEY> (and WEIR_<SECTION>__<KEY>) variables, then flags, override it
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
}

impl BrokerArgs {
    fn config(self) -> anyhow::Result<ServeConfig> {
        let mut config = ServeConfig::load(self.config.as_deref(), std::env::vars())?;
        if let Some(id) = self.node_id {
            config.node_id = id;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(adv) = self.advertised_listener {
            config.advertised_listener = Some(adv);
        }
        if let Some(admin) = self.admin_listen {
            config.admin_listen = admin;
        }
        if let Some(rpc) = self.rpc_listen {
            config.cluster.rpc_listen = rpc;
        }
        if let Some(adv) = self.advertised_rpc {
            config.cluster.advertised_rpc = Some(adv);
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(url) = self.object_store {
            config.object_store = Some(url);
        }
        if self.controller {
            config.cluster.controller = true;
        }
        match self.wal.as_deref() {
            None => {}
            Some("object") => config.wal_kind = weir_broker::config::WalKind::Object,
            Some(file) => match file.strip_prefix("file:") {
                Some(dir) if !dir.is_empty() => {
                    config.wal_kind = weir_broker::config::WalKind::File;
                    config.cluster.wal_dir = Some(PathBuf::from(dir));
                }
                _ => anyhow::bail!("invalid --wal {file:?}: `object` or `file:DIR`"),
            },
        }
        if config.object_store.is_none() {
            anyhow::bail!(
                "weir broker needs --object-store (object_store): the bucket the brokers share"
            );
        }
        Ok(config)
    }
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
            Command::Broker(args) => broker(args.config()?).await,
            Command::Admin(args) => admin(args).await,
            Command::Dispatcher(args) => dispatcher(args).await,
            Command::Replay(args) => replay(args).await,
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
    let server = Server::start(config.clone()).await?;
    let dispatcher = weir_broker::dispatch::start_in_serve(&server, &config).await?;
    // One line on stdout with the bound addresses (ports may have been 0), for scripts and tests.
    // `listeners=`: every Kafka listener, in the configured order (then the internal one).
    let listeners: Vec<String> = server
        .kafka_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "weir serving kafka={} admin={} listeners={}",
        server.kafka_addr(),
        server.admin_addr(),
        listeners.join(",")
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    wait_for_signal().await;
    tracing::info!("shutting down: draining and uploading");
    if let Some(d) = dispatcher {
        d.shutdown().await;
    }
    server.shutdown().await
}

async fn broker(config: ServeConfig) -> anyhow::Result<()> {
    let server = Server::start_cluster(config.clone()).await?;
    let dispatcher = weir_broker::dispatch::start_in_broker(&server, &config).await?;
    println!(
        "weir serving kafka={} admin={} rpc={}",
        server.kafka_addr(),
        server.admin_addr(),
        server
            .rpc_addr()
            .map_or_else(String::new, |a| a.to_string())
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let node = server.node();
    tokio::select! {
        () = wait_for_signal() => {}
        // Nothing to hand over: the partitions are served elsewhere, the WAL cannot take writes.
        () = node.controller.fenced() => anyhow::bail!(
            "this broker was fenced and its partitions given to other brokers; \
             restart it to rejoin the cluster"
        ),
    }
    tracing::info!("shutting down: handing partitions over and uploading");
    if let Some(d) = dispatcher {
        d.shutdown().await;
    }
    server.shutdown().await
}

async fn dispatcher(args: DispatcherArgs) -> anyhow::Result<()> {
    let mut config = ServeConfig::load(args.config.as_deref(), std::env::vars())?.dispatcher;
    config.bootstrap = args.bootstrap;
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin): {e}", args.admin_listen))?;
    let admin = listener.local_addr()?;
    weir_broker::metrics::render_process(); // installs the recorder before any metric is made
    let dispatcher = weir_dispatcher::Dispatcher::start(config).await?;
    let app = dispatcher
        .router()
        .route("/health/live", axum::routing::get(|| async { "live\n" }))
        .route(
            "/metrics",
            axum::routing::get(|| async { weir_broker::metrics::render_process() }),
        );
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.changed().await;
            })
            .await;
    });
    println!("weir dispatcher serving admin={admin}");
    use std::io::Write;
    std::io::stdout().flush()?;
    wait_for_signal().await;
    let _ = stop.send(true);
    let _ = serving.await;
    dispatcher.shutdown().await;
    Ok(())
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::new();
    let (path, body) = match &args.action {
        AdminAction::Cluster => {
            let view: weir_broker::admin::ClusterView = client
                .get(format!("{base}/v1/cluster"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            println!("cluster {} controller {}", view.cluster_id, view.controller);
            for b in &view.brokers {
                let state = if b.fenced { "fenced" } else { "live" };
                println!("broker {} {} {state} epoch {}", b.id, b.kafka, b.epoch);
            }
            for p in &view.partitions {
                let moving = if p.target != 0 {
                    format!(" moving to {}", p.target)
                } else {
                    String::new()
                };
                println!(
                    "{} {} owner {} epoch {}{moving}",
                    p.topic, p.partition, p.owner, p.epoch
                );
            }
            return Ok(());
        }
        AdminAction::Reassign {
            topic,
            partition,
            broker,
        } => (
            "/v1/cluster/reassign",
            serde_json::json!({ "topic": topic, "partition": partition, "broker": broker }),
        ),
        AdminAction::Drain { broker } => {
            ("/v1/cluster/drain", serde_json::json!({ "broker": broker }))
        }
        AdminAction::Scram { action } => {
            let client = with_admin_token(&args.token_file)?;
            return admin_scram(&client, &base, action).await;
        }
        AdminAction::Acl { action } => {
            let client = with_admin_token(&args.token_file)?;
            return admin_acl(&client, &base, action).await;
        }
    };
    let answer = client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await?;
    let status = answer.status();
    let text = answer.text().await?;
    if !status.is_success() {
        anyhow::bail!("{path}: {status}: {text}");
    }
    println!("{text}");
    Ok(())
}

/// Sends an admin request; prints the answer, or fails with it.
async fn admin_call(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<String> {
    let answer = request.send().await?;
    let status = answer.status();
    let text = answer.text().await?;
    if !status.is_success() {
        anyhow::bail!("{what}: {status}: {text}");
    }
    Ok(text)
}

/// An HTTP client presenting the broker's admin token (read from its file).
fn with_admin_token(path: &std::path::Path) -> anyhow::Result<reqwest::Client> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the admin token {} ({e}): give the broker's data_dir/admin.token with \
             --token-file",
            path.display()
        )
    })?;
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))?;
    value.set_sensitive(true);
    let headers = [(reqwest::header::AUTHORIZATION, value)]
        .into_iter()
        .collect();
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

async fn admin_scram(
    client: &reqwest::Client,
    base: &str,
    action: &ScramAction,
) -> anyhow::Result<()> {
    use weir_broker::security::scram::Mechanism;
    let mechanism_of = |name: &str| {
        Mechanism::from_name(name).ok_or_else(|| {
            anyhow::anyhow!("unknown mechanism {name:?}: SCRAM-SHA-256 or SCRAM-SHA-512")
        })
    };
    let url = format!("{base}/v1/security/scram");
    let text = match action {
        ScramAction::Set {
            user,
            mechanism,
            iterations,
            password_stdin: _,
        } => {
            let mechanism = mechanism_of(mechanism)?;
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(
                !password.is_empty(),
                "an empty password was read from standard input"
            );
            let set = weir_broker::security::http::ScramSet::from_password(
                user,
                mechanism,
                password,
                *iterations,
            );
            admin_call(client.post(&url).json(&set), "scram set").await?
        }
        ScramAction::Delete { user, mechanism } => {
            let mechanism = mechanism_of(mechanism)?;
            admin_call(
                client.delete(format!("{url}/{user}/{}", mechanism.name())),
                "scram delete",
            )
            .await?
        }
        ScramAction::List => admin_call(client.get(&url), "scram list").await?,
    };
    println!("{text}");
    Ok(())
}

async fn admin_acl(client: &reqwest::Client, base: &str, action: &AclAction) -> anyhow::Result<()> {
    let url = format!("{base}/v1/security/acls");
    let text = match action {
        AclAction::Add(spec) => {
            admin_call(client.post(&url).json(&spec.view()?), "acl add").await?
        }
        AclAction::Remove(spec) => {
            admin_call(client.delete(&url).json(&spec.view()?), "acl remove").await?
        }
        AclAction::List => admin_call(client.get(&url), "acl list").await?,
    };
    println!("{text}");
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_owned();
    let control = |id: &str, action: &str| {
        (
            reqwest::Method::POST,
            format!("/v1/replays/{id}/{action}"),
            None,
        )
    };
    let (method, path, body) = match &args.action {
        ReplayAction::Start {
            scope,
            ranges,
            new_webhook_ids,
        } => {
            let mut request = scope.request();
            let mut parsed = Vec::new();
            for range in ranges {
                let parts: Vec<&str> = range.rsplitn(4, ':').collect();
                let [to, from, partition, topic] = parts.as_slice() else {
                    anyhow::bail!("--range {range}: expected TOPIC:PARTITION:FROM:TO");
                };
                parsed.push(serde_json::json!({
                    "topic": topic,
                    "partition": partition.parse::<i32>()?,
                    "from": from.parse::<i64>()?,
                    "to": to.parse::<i64>()?,
                }));
            }
            request["ranges"] = parsed.into();
            if *new_webhook_ids {
                request["keep_webhook_id"] = false.into();
            }
            (
                reqwest::Method::POST,
                "/v1/replays".to_owned(),
                Some(request),
            )
        }
        ReplayAction::Redrive { scope, error_class } => {
            let mut request = scope.request();
            request["error_class"] = error_class.clone().into();
            (
                reqwest::Method::POST,
                "/v1/redrives".to_owned(),
                Some(request),
            )
        }
        ReplayAction::List => (reqwest::Method::GET, "/v1/replays".to_owned(), None),
        ReplayAction::Show { id } => (reqwest::Method::GET, format!("/v1/replays/{id}"), None),
        ReplayAction::Approve { id } => control(id, "approve"),
        ReplayAction::Pause { id } => control(id, "pause"),
        ReplayAction::Resume { id } => control(id, "resume"),
        ReplayAction::Cancel { id } => control(id, "cancel"),
    };
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await?;
    let status = answer.status();
    let text = answer.text().await?;
    if !status.is_success() {
        anyhow::bail!("{path}: {status}: {text}");
    }
    println!("{text}");
    Ok(())
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
