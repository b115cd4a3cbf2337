//! Minimal CLI: parse, run the command, exit with its code (0 ok, 1 finding, 2 error).

use clap::{Parser, Subcommand};
use cuda_preflight::commands::scan::{self, ScanArgs};

#[derive(Parser)]
#[command(name = "cuda-preflight", version, about = "Will CUDA work in this container on this host?")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU code in CUDA binaries and judge whether it loads on a GPU.
    Scan(ScanArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Scan(args) => scan::run(args, &mut std::io::stdout().lock()),
    };
    let code = result.unwrap_or_else(|e| {
        eprintln!("cuda-preflight: {e:#}");
        2
    });
    std::process::exit(code);
}
