//! `cairn up` and `cairn demo`: the whole platform in this process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::os::unix::process::ExitStatusExt;
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
    /// Threads the load balancer serves on, each accepting its own share of connections [default: one per CPU]
    #[arg(long)]
    proxy_threads: Option<NonZeroUsize>,
    /// Seconds a stopping member gets between SIGTERM and SIGKILL
    #[arg(long, default_value_t = 5)]
    stop_grace: u64,
}

#[derive(Args, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    up: UpArgs,
    /// Do not send the load spike that shows autoscaling
    #[arg(long)]
    no_load: bool,
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
            proxy_threads: args.proxy_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
            }),
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

/// Logs at `default` level unless `CAIRN_LOG` says otherwise.
fn init_tracing(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| default.into());
    // Colours only for a terminal, not for a file the output goes to.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colours)
        .init();
}

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_tracing("info");
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
    let config = server.platform.config();
    let offset = match config.proxy_port_offset {
        0 => String::new(),
        offset => format!(", each proxy port plus {offset}"),
    };
    println!(
        "  load balancer {}{offset}, {} threads",
        config.proxy_bind, config.proxy_threads
    );
    wait_for_stop().await;
    shut_down(&server).await;
    Ok(ExitCode::SUCCESS)
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // The demo tells the events itself; the log would say everything twice.
    init_tracing("warn");
    let dir = match args.up.data_dir.clone() {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("cairn-demo-{}", std::process::id())),
    };
    let offset = args.up.proxy_port_offset;
    let server = start(args.up, dir.clone()).await?;
    let checked = cairn_model::check_yaml("examples/three-tier.yaml", DEMO_BLUEPRINT);
    let bundle = checked
        .clone()
        .into_result()
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
    server
        .platform
        .add(&checked, cairn_server::Registration::Any, None)?;
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
    tokio::spawn(narrate(server.platform.clone(), app.clone()));
    if !args.no_load {
        tokio::spawn(spike(server.platform.clone(), app, entry));
    }
    wait_for_stop().await;
    shut_down(&server).await;
    Ok(ExitCode::SUCCESS)
}

/// Prints what an operator would want to see scroll by: lifecycle and scaling events.
async fn narrate(platform: std::sync::Arc<cairn_server::Platform>, app: String) {
    let mut feed = platform.events().follow();
    loop {
        match feed.recv().await {
            Ok(event) if event.application == app => {
                let worth = event.decision.is_some()
                    || event.subject == "application"
                    || event.message == "active"
                    || event.message.starts_with("draining")
                    || event.message.starts_with("faulted");
                if worth {
                    let at = cairn_engine::view::rfc3339(event.at);
                    println!("{}  {:<28} {}", &at[11..23], event.subject, event.message);
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Once the application is Active: a 30 s spike of slow requests at the entry point, sent by
/// `cairn load` in its own process, so the scale-up and the scale-down after it can be watched.
async fn spike(platform: std::sync::Arc<cairn_server::Platform>, app: String, entry: u16) {
    while !platform
        .view(&app)
        .is_some_and(|v| v.status == cairn_engine::Status::Active)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let url = format!("http://127.0.0.1:{entry}/");
    println!("\n--- spike: 40 clients sending 200 ms requests to {url} for 30 s ---\n");
    let status = tokio::process::Command::new(exe)
        .args([
            "load",
            &url,
            "--concurrency",
            "40",
            "--duration",
            "30s",
            "--latency-ms",
            "200",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => println!(
            "\n--- spike over, no request failed; watch the clusters scale back down ---\n"
        ),
        // Ctrl-C reaches the load's process too, which then stops without a summary.
        Ok(s) if s.signal().is_some() => println!("\n--- spike cut short ---\n"),
        Ok(_) => println!("\n--- spike over; some requests failed (see above) ---\n"),
        Err(e) => println!("\n--- could not start the load: {e} ---\n"),
    }
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
