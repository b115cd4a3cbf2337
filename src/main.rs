//! argv → command → exit code. Nothing else lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cuda_preflight::commands::{
    check, doctor, explain, facts, hook, install, nri, report as reports, scan, webhook,
};

/// Will CUDA work in this container on this host? An OCI hook and its offline tools.
#[derive(Parser)]
#[command(name = "cuda-preflight", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// OCI hook: reads the container state on stdin; exits 1 only to block the start
    Hook(hook::HookArgs),
    /// Judge a bundle without starting it; exit 0 allow/warn, 1 block, 2 bad input
    Check(Box<check::CheckArgs>),
    /// Print the host profile (driver, CUDA version, GPUs, device majors); --json is the profile format
    Facts(facts::FactsArgs),
    /// List the GPU code in CUDA binaries (like cuobjdump --list-elf --list-ptx) and judge whether it loads on a GPU
    Scan(scan::ScanArgs),
    /// Show the report the hook recorded for a container, or list the latest
    Report(reports::ReportArgs),
    /// Internal: the probe child, started by the hook inside the container's namespaces
    #[command(hide = true)]
    ProbeChild,
    /// Explain a CUDA error: its driver name and text, causes in containers, the check that catches it
    Explain(explain::ExplainArgs),
    /// Check the whole host: driver, modules, device nodes, GPUs, toolkit, CDI, engines, a real context, disk space
    Doctor(doctor::DoctorArgs),
    /// Register the hook with docker (daemon.json runtime), podman (hooks directory) or containerd (prints the snippet)
    Install(install::InstallArgs),
    /// Undo `install`: docker's runtime entry and default, podman's hooks-directory entry
    Uninstall(install::InstallArgs),
    /// NRI plugin for containerd and CRI-O: judges GPU containers at creation and adds the hook
    Nri(nri::NriArgs),
    /// Kubernetes admission webhook (HTTPS): refuses a GPU pod no node can run, else steers it to those that can
    Webhook(webhook::WebhookArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Hook(args) => hook::run_guarded(&args, std::io::stdin()),
        Command::Check(args) => report(check::run(&args, &mut std::io::stdout().lock())),
        Command::Facts(args) => report(facts::run(&args, &mut std::io::stdout().lock())),
        Command::Scan(args) => report(scan::run(&args, &mut std::io::stdout().lock())),
        Command::Report(args) => report(reports::run(&args, &mut std::io::stdout().lock())),
        Command::ProbeChild => cuda_preflight::facts::probe::child::main(std::io::stdin()),
        Command::Explain(args) => report(explain::run(&args, &mut std::io::stdout().lock())),
        Command::Doctor(args) => report(doctor::run(&args, &mut std::io::stdout().lock())),
        Command::Install(args) => report(install::run(&args, &mut std::io::stdout().lock())),
        Command::Uninstall(args) => {
            report(install::run_uninstall(&args, &mut std::io::stdout().lock()))
        }
        Command::Nri(args) => report(nri::run(&args)),
        Command::Webhook(args) => report(webhook::run(&args)),
    };
    ExitCode::from(code as u8)
}

/// Map a command's result to its exit code: bad input is 2, with one line naming what was wrong.
/// A reader that closed our stdout early (`… | head`) is a normal end: exit 0, nothing said (Rust
/// ignores SIGPIPE, so the write fails with EPIPE instead of killing us).
fn report(r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("cuda-preflight: {e:#}");
            2
        }
    }
}

/// A write to a closed pipe, directly or inside serde_json's writer error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                == Some(BrokenPipe)
    })
}
