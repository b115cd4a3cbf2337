//! Real framework libraries (cut out of their public wheels by scripts/framework-fixtures.sh)
//! laid out as pip installs them, judged by `check --rootfs` against host profiles: a library
//! none of whose modules loads blocks only where the framework launches from it, and the
//! headline is the error the workload meets first (issue 21). Where each library's use is decided
//! is cited per row of src/knowledge/framework_kernels.tsv (S1-S8) and per case below.
//!
//! Needs scripts/framework-fixtures.sh to have run (scripts/test.sh runs it); without its files
//! these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{BIN, cache};

const SITE: &str = "usr/local/lib/python3.12/site-packages";

const FA2: (&str, &str) = (
    "vllm-0.13.0/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
    "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
);
const FA3: (&str, &str) = (
    "vllm-0.13.0/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so",
    "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so",
);
const FLASHMLA: (&str, &str) = (
    "vllm-0.13.0/vllm/_flashmla_C.abi3.so",
    "vllm/_flashmla_C.abi3.so",
);
const FLASHMLA_EXT: (&str, &str) = (
    "vllm-0.13.0/vllm/_flashmla_extension_C.abi3.so",
    "vllm/_flashmla_extension_C.abi3.so",
);
const CUSPARSELT: (&str, &str) = (
    "cusparselt-cu12-0.6.2/cusparselt/lib/libcusparseLt.so.0",
    "cusparselt/lib/libcusparseLt.so.0",
);
const TORCH_CUDA: (&str, &str) = (
    "torch-2.6.0/torch/lib/libtorch_cuda.so",
    "torch/lib/libtorch_cuda.so",
);
const TORCH_LINALG: (&str, &str) = (
    "torch-2.6.0/torch/lib/libtorch_cuda_linalg.so",
    "torch/lib/libtorch_cuda_linalg.so",
);

const VLLM: &[(&str, &str)] = &[FA2, FA3, FLASHMLA, FLASHMLA_EXT];
const NCCL: (&str, &str) = (
    "nccl-cu12-2.21.5/nvidia/nccl/lib/libnccl.so.2",
    "nvidia/nccl/lib/libnccl.so.2",
);

const TORCH: &[(&str, &str)] = &[TORCH_CUDA, TORCH_LINALG, CUSPARSELT, NCCL];

fn fixture(rel: &str) -> PathBuf {
    let p = cache().join("frameworks").join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/framework-fixtures.sh first",
        p.display()
    );
    p
}

/// A rootfs with the fixtures at their site-packages paths: hard links where the cache shares
/// the file system (these files are 1-900 MB), else copies.
fn rootfs(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("rootfs");
    for (from, to) in files {
        let src = fixture(from);
        let dst = root.join(SITE).join(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("host")).unwrap();
    // The trees carry only the libraries under test, not the NVIDIA wheels torch links (cuBLAS,
    // cuDNN, … several GB): the loader's finding about them is lowered to a warning so the
    // kernel findings decide the verdict and the headline.
    std::fs::write(
        dir.join("config.toml"),
        "[severity]\n\"image-library-missing\" = \"warn\"\n",
    )
    .unwrap();
    root
}

/// `check --rootfs` on one example host profile: exit code, the JSON, and the human headline
/// (first line of the text output).
fn check(dir: &Path, root: &Path, profile: &str) -> (i32, Value, String) {
    let run = |json: bool| {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "120", BIN, "check", "--rootfs"])
            .arg(root)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--host-root")
            .arg(dir.join("host"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--host-profile")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("examples/hosts/{profile}.json")),
            );
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let o = run(true);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let text = run(false);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&text.stderr),
        String::from_utf8_lossy(&text.stdout)
    );
    let head = all.lines().next().unwrap_or("").to_string();
    (o.status.code().unwrap_or(-1), doc, head)
}

/// Kernel findings as (id, severity, predicted code, file name).
fn kernel_findings(doc: &Value) -> Vec<(String, String, Option<i64>, String)> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["id"]
                .as_str()
                .unwrap()
                .starts_with("kernel-image-missing")
        })
        .map(|f| {
            let ev = f["evidence"].as_str().unwrap();
            let path = ev.split(':').next().unwrap();
            (
                f["id"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
                f["predicted"]["code"].as_i64(),
                path.rsplit('/').next().unwrap().to_string(),
            )
        })
        .collect()
}

fn blocks(doc: &Value) -> Vec<&Value> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "block")
        .collect()
}

/// The seed (GaMS on vLLM 0.13 on a 32 GB GPU: "the provided PTX was compiled with an
/// unsupported toolchain"): vLLM's FA2 carries sm_80 SASS and compute_80 PTX at ISA 8.8 (CUDA
/// 12.9); an RTX 5090 (sm_120) can only JIT that PTX, and driver 570 (CUDA 12.8) knows ISA 8.7:
/// 222, and the headline says so with its fix. FA3 and FlashMLA (sm_90a/sm_100a only) are never
/// launched there (vLLM fa_utils.py: FA3 only on major 9; flashmla.py: MLA models on 9.x/10.x).
#[test]
fn seed_vllm_fa2_on_rtx5090_driver_570_blocks_with_222_as_headline() {
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path(), VLLM);
    let (rc, doc, head) = check(dir.path(), &root, "rtx5090-570");
    assert_eq!(rc, 1, "{doc:#}");
    let b = blocks(&doc);
    assert_eq!(b.len(), 1, "only FA2 blocks: {b:#?}");
    assert_eq!(b[0]["id"], "kernel-image-missing");
    assert_eq!(b[0]["predicted"]["code"], 222);
    assert!(
        b[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("_vllm_fa2_C.abi3.so: none of its GPU modules (60) loads"),
        "{}",
        b[0]["evidence"]
    );
    let fix = b[0]["fix"].as_str().unwrap();
    assert!(
        fix.contains("a driver that JITs PTX ISA 8.8, i.e. 575 or newer")
            && fix.contains("a vLLM build with sm_120 SASS"),
        "{fix}"
    );
    assert!(
        head.starts_with("cuda-preflight: blocked")
            && head.contains("_vllm_fa2_C.abi3.so")
            && head.contains("222 CUDA_ERROR_UNSUPPORTED_PTX_VERSION"),
        "{head}"
    );
    let mut k = kernel_findings(&doc);
    k.sort();
    assert_eq!(
        k,
        [
            (
                "kernel-image-missing".into(),
                "block".into(),
                Some(222),
                "_vllm_fa2_C.abi3.so".into()
            ),
            (
                "kernel-image-missing-conditional".into(),
                "warn".into(),
                Some(209),
                "_flashmla_C.abi3.so".into()
            ),
            (
                "kernel-image-missing-conditional".into(),
                "warn".into(),
                Some(209),
                "_flashmla_extension_C.abi3.so".into()
            ),
            (
                "kernel-image-missing-conditional".into(),
                "warn".into(),
                Some(209),
                "_vllm_fa3_C.abi3.so".into()
            ),
        ]
    );
}

/// The same libraries on hosts where vLLM 0.13 starts: no block. 580 (CUDA 13.0) JITs ISA 8.8
/// on the 5090; the A100 runs FA2's sm_80 SASS and never launches FA3/FlashMLA; the H100 runs
/// FA3's and FlashMLA's sm_90a.
#[test]
fn vllm_extensions_do_not_block_where_vllm_starts() {
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path(), VLLM);
    // (profile, conditional warnings expected)
    let cases: &[(&str, &[&str])] = &[
        (
            "rtx5090-580",
            &[
                "_flashmla_C.abi3.so",
                "_flashmla_extension_C.abi3.so",
                "_vllm_fa3_C.abi3.so",
            ],
        ),
        (
            "a100-535",
            &[
                "_flashmla_C.abi3.so",
                "_flashmla_extension_C.abi3.so",
                "_vllm_fa3_C.abi3.so",
            ],
        ),
        ("h100-580", &[]),
    ];
    for (profile, warned) in cases {
        let (rc, doc, _) = check(dir.path(), &root, profile);
        assert!(blocks(&doc).is_empty(), "{profile}: {:#?}", blocks(&doc));
        assert_eq!(rc, 0, "{profile}");
        let mut got: Vec<String> = kernel_findings(&doc)
            .into_iter()
            .map(|(id, sev, _, name)| {
                assert_eq!(
                    (id.as_str(), sev.as_str()),
                    ("kernel-image-missing-conditional", "warn")
                );
                name
            })
            .collect();
        got.sort();
        assert_eq!(got, *warned, "{profile}");
    }
}

/// torch 2.6.0 (cu124) with its cuSPARSELt 0.6.2. On a T4 with driver 550 (CUDA 12.4, ISA 8.4)
/// cuSPARSELt's only usable image is compute_52 PTX at ISA 8.5 (222), but torch calls it only
/// for 2:4 sparsity (cuSPARSELtOps.cpp): a warning, and the start works (publicly reported for
/// a T4 on 550.163.01 with the cu124 wheel). On an RTX 5090 the core library has no sm_120 and
/// no PTX: 209 on the first CUDA op, whatever the driver; libtorch_cuda_linalg (loaded lazily by
/// LinearAlgebraStubs.cpp) and NCCL 2.21.5 (multi-GPU collectives only) are only warnings.
#[test]
fn torch_core_blocks_on_blackwell_and_cusparselt_only_warns_on_t4() {
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path(), TORCH);
    let (rc, doc, _) = check(dir.path(), &root, "t4-550");
    assert!(blocks(&doc).is_empty(), "{:#?}", blocks(&doc));
    assert_eq!(rc, 0);
    assert_eq!(
        kernel_findings(&doc),
        [(
            "kernel-image-missing-conditional".into(),
            "warn".into(),
            Some(222),
            "libcusparseLt.so.0".into()
        )]
    );
    let w = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "kernel-image-missing-conditional")
        .unwrap();
    assert!(
        w["evidence"]
            .as_str()
            .unwrap()
            .contains("PyTorch launches it only for 2:4 semi-structured sparsity"),
        "{}",
        w["evidence"]
    );
    assert!(
        w["fix"].as_str().unwrap().contains("555 or newer"),
        "ISA 8.5 is CUDA 12.5's: {}",
        w["fix"]
    );
    for profile in ["rtx5090-570", "rtx5090-580"] {
        let (rc, doc, head) = check(dir.path(), &root, profile);
        assert_eq!(rc, 1, "{profile}");
        let b = blocks(&doc);
        assert_eq!(b.len(), 1, "{profile}: {b:#?}");
        assert_eq!(b[0]["predicted"]["code"], 209, "{profile}");
        assert!(
            head.contains("libtorch_cuda.so") && head.contains("209 CUDA_ERROR_NO_BINARY_FOR_GPU"),
            "{profile}: {head}"
        );
        assert!(
            b[0]["fix"]
                .as_str()
                .unwrap()
                .starts_with("use a PyTorch build that includes sm_120"),
            "{}",
            b[0]["fix"]
        );
        // linalg is loaded lazily (LinearAlgebraStubs.cpp); NCCL 2.21.5 has nothing for sm_120
        // either, but only multi-GPU collectives launch it (ProcessGroupNCCL.hpp).
        let mut k = kernel_findings(&doc);
        k.sort();
        let cond = |name: &str| {
            (
                "kernel-image-missing-conditional".to_string(),
                "warn".to_string(),
                Some(209),
                name.to_string(),
            )
        };
        assert_eq!(
            k,
            [
                (
                    "kernel-image-missing".into(),
                    "block".into(),
                    Some(209),
                    "libtorch_cuda.so".into()
                ),
                cond("libnccl.so.2"),
                cond("libtorch_cuda_linalg.so"),
            ],
            "{profile}"
        );
    }
}

/// Both stacks in one image on the 5090 with 570: torch's core fails on the first CUDA op,
/// before vLLM's attention ever runs, so its 209 is the headline although the walk meets vLLM's
/// FA2 (222) first.
#[test]
fn headline_is_the_core_library_met_first() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<(&str, &str)> = VLLM.iter().chain(TORCH).copied().collect();
    let root = rootfs(dir.path(), &all);
    let (rc, doc, head) = check(dir.path(), &root, "rtx5090-570");
    assert_eq!(rc, 1);
    let b = blocks(&doc);
    let names: Vec<&str> = b
        .iter()
        .map(|f| f["evidence"].as_str().unwrap().split(':').next().unwrap())
        .map(|p| p.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["libtorch_cuda.so", "_vllm_fa2_C.abi3.so"]);
    assert!(head.contains("libtorch_cuda.so"), "{head}");
}

/// A library no table row knows keeps today's behaviour: FlashMLA's real extension copied under
/// another name blocks on the 5090 (209), where as vLLM's it only warns.
#[test]
fn unknown_library_still_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path(), &[FLASHMLA_EXT]);
    // A copy, not a link: the walk judges one inode once.
    let other = root.join(SITE).join("myattn/_kernels.abi3.so");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::copy(fixture(FLASHMLA_EXT.0), &other).unwrap();
    let (rc, doc, head) = check(dir.path(), &root, "rtx5090-580");
    assert_eq!(rc, 1);
    assert!(head.contains("myattn/_kernels.abi3.so"), "{head}");
    let mut k = kernel_findings(&doc);
    k.sort();
    assert_eq!(
        k,
        [
            (
                "kernel-image-missing".into(),
                "block".into(),
                Some(209),
                "_kernels.abi3.so".into()
            ),
            (
                "kernel-image-missing-conditional".into(),
                "warn".into(),
                Some(209),
                "_flashmla_extension_C.abi3.so".into()
            ),
        ]
    );
}
