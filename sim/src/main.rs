//! jobctl-sim: serves every platform's API on one port for offline testing.

use clap::Parser;
use jobctl_sim::{self as sim, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "jobctl-sim",
    version,
    about = "Offline simulator of CloudPSS, AC/SCNet, octoplant, NebulaGraph Explorer and slurmrestd",
    after_help = "Example:\n  jobctl-sim --listen 127.0.0.1:8700 &\n  eval \"$(jobctl-sim --listen 127.0.0.1:8700 --print-env)\"\n  jobctl -b cloudpss submit --opt function=function/CloudPSS/hello --wait"
)]
struct Cli {
    #[command(flatten)]
    config: SimConfig,
    /// Print `export VAR=value` lines that point jobctl at this simulator, then exit.
    #[arg(long)]
    print_env: bool,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if cli.print_env {
        let scheme = if cli.config.tls { "https" } else { "http" };
        let base = format!("{scheme}://{}", cli.config.listen);
        for (k, v) in sim::env_vars(&base, &cli.config) {
            println!("export {k}={}", shell_words::quote(&v));
        }
        return;
    }
    let handle = match sim::start(cli.config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("jobctl-sim: cannot start: {e}");
            std::process::exit(7);
        }
    };
    eprintln!("jobctl-sim listening on {}", handle.base_url);
    if let Some(pem) = &handle.cert_pem {
        eprintln!("self-signed certificate (trust it with ca_cert):\n{pem}");
    }
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown();
}
