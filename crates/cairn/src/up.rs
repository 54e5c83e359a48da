//! `cairn up` and `cairn demo`: the whole platform in this process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

/// The demo's application: three tiers, a nested group, a startup order, a proxied entry point.
const DEMO_BLUEPRINT: &str = include_str!("../../../examples/three-tier.yaml");

#[derive(Args, Clone)]
pub struct UpArgs {
    /// Where the store, logs and certificates live [default: $CAIRN_DATA_DIR or ~/.local/share/cairn]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the native API listens
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Serve the Stratos 4.1 compatible API (HTTPS, basic auth) here, e.g. 127.0.0.1:9443
    #[arg(long)]
    stratos_api: Option<SocketAddr>,
    #[arg(long, default_value = "admin")]
    stratos_user: String,
    #[arg(long, env = "CAIRN_STRATOS_PASSWORD", default_value = "admin")]
    stratos_password: String,
    /// The load balancer listens on each proxy port plus this offset (e.g. 10000 puts port 80 on 10080)
    #[arg(long, default_value_t = 0)]
    proxy_port_offset: u16,
    /// The address the load balancer binds
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    proxy_bind: IpAddr,
    /// Seconds a stopping member gets between SIGTERM and SIGKILL
    #[arg(long, default_value_t = 5)]
    stop_grace: u64,
}

#[derive(Args, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    up: UpArgs,
}

fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given.or_else(|| std::env::var_os("CAIRN_DATA_DIR").map(PathBuf::from)) {
        return Ok(dir);
    }
    let home =
        std::env::var_os("HOME").context("neither --data-dir, CAIRN_DATA_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/cairn"))
}

async fn start(args: UpArgs, data_dir: PathBuf) -> anyhow::Result<cairn_server::Server> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    // Members carry the data directory as their mark; one spelling of it must find them again.
    let data_dir = std::fs::canonicalize(&data_dir)
        .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let exe = std::env::current_exe()
        .context("cannot find the cairn executable to run the built-in workload")?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let config = cairn_server::ServerConfig {
        platform: cairn_server::PlatformConfig {
            data_dir,
            proxy_port_offset: args.proxy_port_offset,
            proxy_bind: args.proxy_bind,
            workload_command: vec![exe.display().to_string(), "workload".into()],
            host,
            stop_grace: Duration::from_secs(args.stop_grace),
        },
        api: args.listen,
        stratos_api: args.stratos_api,
        stratos_user: args.stratos_user,
        stratos_password: args.stratos_password,
    };
    Ok(cairn_server::start(config).await?)
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let dir = data_dir(args.data_dir.clone())?;
    let server = start(args, dir.clone()).await?;
    println!("cairn is up: data in {}", dir.display());
    println!(
        "  native API    http://{}  (openapi at /openapi.json)",
        server.api
    );
    if let Some(stratos) = server.stratos_api {
        println!("  Stratos API   https://{stratos}/api");
    }
    wait_for_stop().await;
    shut_down(&server).await;
    Ok(ExitCode::SUCCESS)
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let dir = match args.up.data_dir.clone() {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("cairn-demo-{}", std::process::id())),
    };
    let offset = args.up.proxy_port_offset;
    let server = start(args.up, dir.clone()).await?;
    let bundle = cairn_model::parse_yaml("examples/three-tier.yaml", DEMO_BLUEPRINT)
        .map_err(|e| anyhow::anyhow!("the demo blueprint does not parse: {e}"))?;
    let app = bundle
        .applications
        .first()
        .map(|a| a.id.clone())
        .context("the demo blueprint has no application")?;
    let policy = bundle
        .deploy_with
        .clone()
        .context("the demo blueprint names no application policy")?;
    server.platform.add(bundle, true)?;
    if !server.platform.is_deployed(&app) {
        server.platform.deploy(&app, &policy).await?;
    }
    let entry = 8080u16.saturating_add(offset);
    println!();
    println!(
        "cairn demo: application `{app}` (web -> backend group [cache-tier group -> api] -> db) is starting"
    );
    println!("  entry point     http://127.0.0.1:{entry}/");
    println!(
        "  runtime tree    CAIRN_URL=http://{} cairn status {app}",
        server.api
    );
    println!(
        "  events          CAIRN_URL=http://{} cairn events {app} -f",
        server.api
    );
    println!(
        "  logs            CAIRN_URL=http://{} cairn logs {app} web -f",
        server.api
    );
    println!("  data            {}", dir.display());
    println!("  stop with Ctrl-C");
    println!();
    wait_for_stop().await;
    shut_down(&server).await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn shut_down(server: &cairn_server::Server) {
    println!("stopping members (their desired state stays stored)");
    server.platform.shutdown().await;
}
