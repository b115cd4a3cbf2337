//! Minimal entry point for the `facts` command on the `versions` branch; the real CLI (all
//! commands) replaces it at merge.

use clap::{Parser, Subcommand};

use cuda_preflight::commands::facts::{self, FactsArgs};

#[derive(Parser)]
#[command(name = "cuda-preflight", version, about = "Will CUDA work in this container on this host?")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the host profile (driver, CUDA version, GPUs, device majors).
    Facts(FactsArgs),
}

fn main() {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let code = match &cli.command {
        Command::Facts(a) => facts::run(a, &mut out),
    };
    std::process::exit(match code {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cuda-preflight: {e:#}");
            2
        }
    });
}
