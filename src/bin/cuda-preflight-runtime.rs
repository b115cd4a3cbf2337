//! `cuda-preflight-runtime`: an OCI runtime shim that adds the cuda-preflight hook on `create`
//! and execs the real runtime (`src/shim.rs`).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(cuda_preflight::shim::run(
        std::env::args_os().skip(1).collect(),
    ))
}
