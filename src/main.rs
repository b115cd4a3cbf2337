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
        Command::Check(args) => report(check::run(&args, &mut stdout())),
        Command::Facts(args) => report(facts::run(&args, &mut stdout())),
        Command::Scan(args) => report(scan::run(&args, &mut stdout())),
        Command::Report(args) => report(reports::run(&args, &mut stdout())),
        Command::ProbeChild => cuda_preflight::facts::probe::child::main(std::io::stdin()),
        Command::Explain(args) => report(explain::run(&args, &mut stdout())),
        Command::Doctor(args) => report(doctor::run(&args, &mut stdout())),
        Command::Install(args) => report(install::run(&args, &mut stdout())),
        Command::Uninstall(args) => report(install::run_uninstall(&args, &mut stdout())),
        Command::Nri(args) => report(nri::run(&args)),
        Command::Webhook(args) => report(webhook::run(&args)),
    };
    ExitCode::from(code as u8)
}

/// Standard output as every command writes it: a reader that closed it early (`… | head`) is a
/// normal end, and the command's own exit code (a block is 1) stands.
fn stdout() -> cuda_preflight::output::ClosedPipeOk<std::io::StdoutLock<'static>> {
    cuda_preflight::output::ClosedPipeOk::new(std::io::stdout().lock())
}

/// Map a command's result to its exit code: bad input is 2, with one line naming what was wrong.
fn report(r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cuda-preflight: {e:#}");
            2
        }
    }
}
