//! `wasmpool agent --nats URL`: serve a NATS JetStream server's tasks with a local pool.

use std::path::PathBuf;
use std::time::Duration;

use wasmpool::remote::agent::{self, AgentOptions};

use super::EXIT_OK;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The NATS server, e.g. nats://10.0.0.5:4222 (several separated by commas).
    #[arg(long, value_name = "URL")]
    nats: String,
    /// A NATS credentials file.
    #[arg(long, value_name = "FILE")]
    creds: Option<PathBuf>,
    /// This agent's name in results and logs (default: host name and process id).
    #[arg(long)]
    name: Option<String>,
    /// How long a task held by an agent that went silent waits before it is delivered
    /// again, e.g. 10s; set by the first agent that creates the shared consumer.
    #[arg(long, default_value = "10s", value_parser = parse_positive)]
    ack_wait: Duration,
    /// On SIGTERM, how long running tasks may take to finish before they are stopped and
    /// handed back, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_positive)]
    drain_timeout: Duration,
    /// The local pool that runs the tasks: its workers and walls (the tasks' limits are
    /// their clients').
    #[command(flatten)]
    pool: super::LocalPoolArgs,
}

fn parse_positive(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => Ok(d),
        Ok(_) => Err(format!("`{s}` is out of range (100ms to 1h)")),
        Err(e) => Err(format!("`{s}` is not a duration (such as 10s): {e}")),
    }
}

pub fn agent(args: AgentArgs) -> anyhow::Result<i32> {
    let pool = args.pool.builder().build()?;
    let mut remote = wasmpool::Remote::new(&args.nats).ack_wait(args.ack_wait);
    if let Some(creds) = &args.creds {
        remote = remote.creds(creds);
    }
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let options = AgentOptions {
        remote,
        name: name.clone(),
        drain_timeout: args.drain_timeout,
    };
    let summary = agent::serve(options, pool, stop_signal()?)?;
    eprintln!(
        "agent {name} stopped: {} results, {} tasks handed back, {} dead letters, {} foreign messages refused",
        summary.results, summary.handed_back, summary.dead, summary.refused
    );
    Ok(EXIT_OK)
}

/// Resolves at the first SIGTERM or SIGINT (the service's self-pipe handlers: tokio's own
/// signal driver would leave a socket open in every worker the agent's pool spawns).
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let stop = super::serve::signals::termination()?;
    Ok(async move {
        let _ = stop.await;
        tracing::info!("signal received: draining");
    })
}
