//! The `cairn` binary: the CLI and the long-running subcommands (`up`, `demo`, `workload`).
//!
//! Thin by design: client commands only speak the public REST API, and `up` only wires the
//! server crate together.

mod client;
mod duration;
mod load;
mod render;
mod simulate;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

// hyper's server takes a fresh 8 KiB read buffer for every request the proxy serves; mimalloc
// recycles it from a thread-local free list, where the system allocator consolidates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: composite applications, deployed, balanced, healed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform on this machine: control plane, agent, load balancer, store
    Up(up::UpArgs),
    /// Run the platform with a sample three-tier application and print where to look
    Demo(up::DemoArgs),
    /// Register a YAML blueprint's artifacts and deploy its application
    Deploy {
        file: PathBuf,
        /// Return once the deployment is accepted instead of waiting for Active
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List applications
    Apps {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an application's runtime tree: groups, clusters, members
    Status {
        application: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop every member of an application, in reverse dependency order
    Undeploy {
        application: String,
        /// Return once the undeploy is accepted instead of waiting until every member stopped
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forget an undeployed application (its cartridges and policies stay registered)
    Delete {
        application: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the output of a cluster's members
    Logs {
        application: String,
        alias: String,
        /// Keep following new output
        #[arg(short, long)]
        follow: bool,
        /// Lines from the end of each member's log
        #[arg(long, default_value_t = 100)]
        tail: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show what happened to an application, and why
    Events {
        application: String,
        /// Keep following new events
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set a cluster's size by hand (per group instance); its autoscaling stays suspended until `cairn autoscale … on`
    Scale {
        application: String,
        alias: String,
        size: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Turn a cluster's autoscaling on, or off (holding its current size)
    Autoscale {
        application: String,
        alias: String,
        #[arg(value_enum)]
        state: Switch,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check blueprints (YAML) and Stratos JSON artifacts without running anything
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the problems as text, or as JSON
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run the built-in workload: a small HTTP server configured by its environment
    Workload,
    /// Send HTTP load to a target on this machine for a bounded time, with a line per second
    Load(load::LoadArgs),
    /// Replay a load trace offline through the autoscaler and an HPA baseline; totals and a chart
    Simulate(simulate::SimulateArgs),
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// The Cairn server's native API
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:7070", value_parser = server_url)]
    url: String,
    /// Print as text, or as JSON (logs always print their lines as written)
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// The server's base URL, without a trailing `/`.
fn server_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("{e}: expected a URL like http://127.0.0.1:7070"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected a URL like http://127.0.0.1:7070".into());
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Validate { files, output } = &cli.command {
        return client::validate(files, *output);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(code) => code,
        // A reader that stopped reading (`| head`) is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => up::up(args).await,
        Command::Demo(args) => up::demo(args).await,
        Command::Workload => {
            let config = cairn_workload::WorkloadConfig::from_env()?;
            cairn_workload::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy {
            file,
            no_wait,
            timeout,
            client,
        } => client::deploy(&client, &file, no_wait, timeout).await,
        Command::Apps { client } => client::apps(&client).await,
        Command::Status {
            application,
            client,
        } => client::status(&client, &application).await,
        Command::Undeploy {
            application,
            no_wait,
            timeout,
            client,
        } => client::undeploy(&client, &application, no_wait, timeout).await,
        Command::Delete {
            application,
            client,
        } => client::delete(&client, &application).await,
        Command::Logs {
            application,
            alias,
            follow,
            tail,
            client,
        } => client::logs(&client, &application, &alias, follow, tail).await,
        Command::Events {
            application,
            follow,
            client,
        } => client::events(&client, &application, follow).await,
        Command::Scale {
            application,
            alias,
            size,
            client,
        } => {
            client::scale(
                &client,
                &application,
                &alias,
                serde_json::json!({ "size": size }),
                "scale",
            )
            .await
        }
        Command::Autoscale {
            application,
            alias,
            state,
            client,
        } => {
            let body = serde_json::json!({ "enabled": state == Switch::On });
            client::scale(&client, &application, &alias, body, "autoscale").await
        }
        Command::Load(args) => load::load(args).await,
        Command::Simulate(args) => simulate::simulate(args),
        Command::Validate { .. } => unreachable!("handled before the runtime starts"),
    }
}
