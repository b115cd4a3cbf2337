//! The fatbin reader against `cuobjdump --list-elf --list-ptx` (CUDA 13.5, from NVIDIA's
//! wheels) on fixtures that nvcc builds here, and on real NVIDIA libraries. cuobjdump's output
//! is parsed and compared in the test, never transcribed.
//!
//! Needs `scripts/cuda-tools.sh` to have run; without it these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Command;

use cuda_preflight::formats::fatbin::{self, EntryKind, Format, Inventory, Variant};

fn cache() -> PathBuf {
    std::env::var_os("CUDA_PREFLIGHT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/cuda-preflight-cache".into())
}

fn bin(tool: &str) -> PathBuf {
    let p = cache()
        .join("cuda-tools/13.5.37/nvidia/cu13/bin")
        .join(tool);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/cuda-tools.sh first (it installs NVIDIA's nvcc and cuobjdump wheels)",
        p.display()
    );
    p
}

fn lib(rel: &str) -> PathBuf {
    let p = cache().join("cuda-libs").join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/cuda-tools.sh first",
        p.display()
    );
    p
}

const KERNEL: &str = "__global__ void add(float *a, const float *b, int n) {\n\
    int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] += b[i]; }\n";
const KERNEL2: &str = "__global__ void scale(float *a, float s, int n) {\n\
    int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] *= s; }\n";

/// Build (once; cached by recipe) `out` in the fixture cache with nvcc `args`; `{src}`/`{src2}`
/// are the kernel sources, `{ptx:V}` the kernel's PTX rewritten to `.version V`.
fn fixture(name: &str, args: &[&str]) -> PathBuf {
    let key = format!(
        "{:016x}",
        fnv(&format!("{name}|{}|{KERNEL}|{KERNEL2}", args.join(" ")))
    );
    let dir = cache()
        .join("fixtures/13.5.37")
        .join(format!("{name}-{key}"));
    let out = dir.join(name);
    if out.is_file() {
        return out;
    }
    let nvcc = bin("nvcc");
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("k.cu"), KERNEL).unwrap();
    std::fs::write(tmp.join("k2.cu"), KERNEL2).unwrap();
    let mut cmd_args: Vec<String> = Vec::new();
    for a in args {
        if let Some(v) = a.strip_prefix("{ptx:").and_then(|s| s.strip_suffix('}')) {
            // PTX at another ISA version: nvcc 13.5 writes 9.5; edit the `.version` line.
            let ptx = tmp.join("k.ptx");
            run(Command::new(&nvcc)
                .args(["-ptx", "-arch=compute_80", "-o"])
                .arg(&ptx)
                .arg(tmp.join("k.cu")));
            let text = std::fs::read_to_string(&ptx).unwrap();
            assert!(
                text.contains(".version 9.5"),
                "nvcc 13.5 PTX should say .version 9.5"
            );
            let edited = tmp.join(format!("k{}.ptx", v.replace('.', "")));
            std::fs::write(
                &edited,
                text.replace(".version 9.5", &format!(".version {v}")),
            )
            .unwrap();
            cmd_args.push(edited.display().to_string());
        } else {
            cmd_args.push(
                a.replace("{src}", &tmp.join("k.cu").display().to_string())
                    .replace("{src2}", &tmp.join("k2.cu").display().to_string()),
            );
        }
    }
    run(Command::new(&nvcc)
        .args(&cmd_args)
        .arg("-o")
        .arg(tmp.join(name)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).unwrap();
    out
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `(kind, arch)` per line of `cuobjdump --list-elf --list-ptx`, in its order:
/// `ELF file    1: name.1.sm_90a.cubin` → `("ELF", "sm_90a")`.
fn cuobjdump_list(path: &Path) -> Result<Vec<(String, String)>, String> {
    let o = Command::new(bin("cuobjdump"))
        .args(["--list-elf", "--list-ptx"])
        .arg(path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(text);
    }
    let mut out = Vec::new();
    for line in text.lines() {
        let kind = if line.starts_with("ELF file") {
            "ELF"
        } else if line.starts_with("PTX file") {
            "PTX"
        } else {
            continue;
        };
        let name = line.rsplit(": ").next().unwrap();
        let stem = name.rsplit_once('.').unwrap().0; // drop .cubin / .ptx
        let arch = stem.rsplit('.').next().unwrap();
        out.push((kind.to_string(), arch.to_string()));
    }
    Ok(out)
}

/// Our inventory in cuobjdump's terms. cuobjdump names a family cubin by its plain arch
/// (`sm_100f` SASS is listed as `sm_100`), keeps `a` on cubins, and both suffixes on PTX.
fn ours_as_cuobjdump(inv: &Inventory) -> Vec<(String, String)> {
    inv.entries
        .iter()
        .filter_map(|e| {
            let kind = match e.kind {
                EntryKind::Sass => "ELF",
                EntryKind::Ptx => "PTX",
                EntryKind::Other(_) => return None,
            };
            let mut arch = e.arch;
            if e.kind == EntryKind::Sass && arch.variant == Variant::Family {
                arch.variant = Variant::Plain;
            }
            Some((kind.to_string(), arch.to_string()))
        })
        .collect()
}

fn assert_matches_cuobjdump(path: &Path) -> Inventory {
    let inv = fatbin::read_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want = cuobjdump_list(path)
        .unwrap_or_else(|e| panic!("cuobjdump failed on {}: {e}", path.display()));
    let got = ours_as_cuobjdump(&inv);
    assert!(
        !want.is_empty(),
        "{}: cuobjdump lists nothing",
        path.display()
    );
    assert_eq!(
        got,
        want,
        "{}: inventory differs from cuobjdump --list-elf --list-ptx",
        path.display()
    );
    assert_compressed_flag_matches_payload(path, &inv);
    inv
}

/// cuobjdump does not list compression, so check our flag against the payload itself: a cubin
/// is stored plain exactly when it starts with the ELF magic; a PTX entry flagged plain must be
/// PTX text, and one starting with the zstd magic must be flagged compressed. (CUDA 12's LZ-style
/// compression keeps leading literals, so compressed PTX can itself start like text.)
fn assert_compressed_flag_matches_payload(path: &Path, inv: &Inventory) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    for e in inv
        .entries
        .iter()
        .filter(|e| e.header_size > 0 && e.payload_size >= 4)
    {
        let mut head = vec![0u8; e.payload_size.min(4096) as usize];
        f.read_exact_at(&mut head, e.offset + e.header_size)
            .unwrap();
        let what = format!(
            "{}: entry at {:#x} payload starts {:02x?}",
            path.display(),
            e.offset,
            &head[..4]
        );
        match e.kind {
            EntryKind::Sass => assert_eq!(e.compressed, !head.starts_with(b"\x7fELF"), "{what}"),
            _ if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) => assert!(e.compressed, "{what}"),
            _ if !e.compressed => {
                let text = String::from_utf8_lossy(&head);
                assert!(
                    text.contains(".version"),
                    "{what}: flagged plain but is not PTX text"
                );
            }
            _ => {}
        }
    }
}

fn summary(inv: &Inventory) -> Vec<String> {
    inv.entries
        .iter()
        .map(|e| {
            let isa = e
                .ptx_isa
                .map(|(a, b)| format!(" {a}.{b}"))
                .unwrap_or_default();
            format!(
                "{} {}{isa}{}",
                e.kind.as_str(),
                e.arch,
                if e.compressed { " z" } else { "" }
            )
        })
        .collect()
}

#[test]
fn cubins_match_cuobjdump() {
    for (arch, want) in [
        ("sm_80", "sass sm_80"),
        ("sm_90a", "sass sm_90a"),
        ("sm_100a", "sass sm_100a"),
        // a family cubin is indistinguishable from a plain one, for cuobjdump too
        ("sm_103f", "sass sm_103"),
        ("sm_120", "sass sm_120"),
    ] {
        let f = fixture(
            &format!("{arch}.cubin"),
            &["-cubin", &format!("-arch={arch}"), "{src}"],
        );
        let inv = assert_matches_cuobjdump(&f);
        assert_eq!(inv.format, Format::Cubin);
        assert_eq!(summary(&inv), [want], "{arch}");
    }
}

#[test]
fn fatbins_match_cuobjdump() {
    // (name, nvcc args, expected entries in our terms)
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "other-major.fatbin",
            &["-fatbin", "-gencode", "arch=compute_80,code=sm_80", "{src}"],
            &["sass sm_80"],
        ),
        (
            "sm90a.fatbin",
            &[
                "-fatbin",
                "-gencode",
                "arch=compute_90a,code=[sm_90a,compute_90a]",
                "{src}",
            ],
            &["sass sm_90a", "ptx sm_90a 9.5 z"],
        ),
        (
            "family.fatbin",
            &[
                "-fatbin",
                "-gencode",
                "arch=compute_100f,code=[sm_100f,compute_100f]",
                "-gencode",
                "arch=compute_120f,code=sm_121f",
                "{src}",
            ],
            &["sass sm_100f", "ptx sm_100f 9.5 z", "sass sm_121f"],
        ),
        (
            "ptx-only.fatbin",
            &[
                "-fatbin",
                "-gencode",
                "arch=compute_75,code=compute_75",
                "{src}",
            ],
            &["ptx sm_75 9.5 z"],
        ),
        (
            "ptx-newer.fatbin",
            &[
                "-fatbin",
                "-gencode",
                "arch=compute_120,code=compute_120",
                "{src}",
            ],
            &["ptx sm_120 9.5 z"],
        ),
        (
            "uncompressed.fatbin",
            &[
                "-fatbin",
                "--no-compress",
                "-gencode",
                "arch=compute_80,code=[sm_80,compute_80]",
                "{src}",
            ],
            &["sass sm_80", "ptx sm_80 9.5"],
        ),
        (
            "compress-all.fatbin",
            &[
                "-fatbin",
                "-Xfatbin",
                "-compress-all",
                "-gencode",
                "arch=compute_80,code=[sm_80,compute_80]",
                "{src}",
            ],
            &["sass sm_80 z", "ptx sm_80 9.5 z"],
        ),
        (
            "isa78.fatbin",
            &[
                "-fatbin",
                "-arch=compute_80",
                "-code=compute_80",
                "{ptx:7.8}",
            ],
            &["ptx sm_80 7.8 z"],
        ),
        (
            "isa85.fatbin",
            &[
                "-fatbin",
                "--no-compress",
                "-arch=compute_80",
                "-code=compute_80",
                "{ptx:8.5}",
            ],
            &["ptx sm_80 8.5"],
        ),
        (
            "isa90.fatbin",
            &[
                "-fatbin",
                "-arch=compute_80",
                "-code=compute_80",
                "{ptx:9.0}",
            ],
            &["ptx sm_80 9.0 z"],
        ),
    ];
    for (name, args, want) in cases {
        let f = fixture(name, args);
        let inv = assert_matches_cuobjdump(&f);
        assert_eq!(inv.format, Format::Fatbin, "{name}");
        assert_eq!(summary(&inv), *want, "{name}");
    }
}

#[test]
fn shared_libraries_and_rdc_match_cuobjdump() {
    // Two translation units: a container (module) each, plus one nvcc adds for the statically
    // linked CUDA runtime.
    let so = fixture(
        "libtwo.so",
        &[
            "-shared",
            "-Xcompiler",
            "-fPIC",
            "-gencode",
            "arch=compute_80,code=[sm_80,compute_80]",
            "-gencode",
            "arch=compute_90a,code=sm_90a",
            "{src}",
            "{src2}",
        ],
    );
    let inv = assert_matches_cuobjdump(&so);
    assert_eq!(inv.format, Format::Elf);
    assert_eq!(inv.containers.len(), 3);
    assert_eq!(inv.entries.len(), 8);

    // -rdc=true object: only a relocatable fatbin, as cuobjdump lists by default.
    let obj = fixture(
        "rdc.o",
        &[
            "-rdc=true",
            "-c",
            "-gencode",
            "arch=compute_80,code=[sm_80,compute_80]",
            "{src}",
        ],
    );
    let inv = assert_matches_cuobjdump(&obj);
    assert_eq!(inv.format, Format::ElfRelocatable);
    assert_eq!(summary(&inv), ["sass sm_80 z", "ptx sm_80 9.5 z"]);

    // -rdc=true shared library: the device-linked executable fatbin is what loads (no PTX).
    let rso = fixture(
        "librdc.so",
        &[
            "-shared",
            "-Xcompiler",
            "-fPIC",
            "-rdc=true",
            "-gencode",
            "arch=compute_80,code=[sm_80,compute_80]",
            "{src}",
        ],
    );
    let inv = assert_matches_cuobjdump(&rso);
    assert_eq!(inv.format, Format::Elf);
    assert_eq!(summary(&inv).len(), 1);
}

#[test]
fn raw_ptx_file() {
    let _ = bin("nvcc");
    let f = fixture("k.ptx", &["-ptx", "-arch=compute_100f", "{src}"]);
    let inv = fatbin::read_path(&f).unwrap();
    assert_eq!(inv.format, Format::Ptx);
    assert_eq!(summary(&inv), ["ptx sm_100f 9.5"]);
}

#[test]
fn real_cuda13_and_cuda12_libraries_match_cuobjdump() {
    for rel in [
        "nvjpeg-13.3.2.43/nvidia/cu13/lib/libnvjpeg.so.13",
        "nvjpeg-cu12-12.4.0.76/nvidia/nvjpeg/lib/libnvjpeg.so.12",
    ] {
        let path = lib(rel);
        let inv = assert_matches_cuobjdump(&path);
        assert_tiles(&path, &inv);
        eprintln!(
            "{rel}: {} entries in {} containers equal cuobjdump's",
            inv.entries.len(),
            inv.containers.len()
        );
    }
}

#[test]
fn real_cuda11_library_by_structure() {
    let path = lib("nvjpeg-cu11-11.9.0.86/nvidia/nvjpeg/lib/libnvjpeg.so.11");
    let inv = fatbin::read_path(&path).unwrap();
    // The premise: cuobjdump 13 cannot list it at all.
    match cuobjdump_list(&path) {
        Err(msg) => assert!(msg.contains("sm_35"), "{msg}"),
        Ok(list) => assert_eq!(ours_as_cuobjdump(&inv), list),
    }
    assert_tiles(&path, &inv);
    assert!(
        inv.entries
            .iter()
            .any(|e| e.kind == EntryKind::Sass && e.arch.sm() == 35),
        "sm_35 SASS expected"
    );
    assert!(
        inv.entries
            .iter()
            .any(|e| e.kind == EntryKind::Ptx && e.ptx_isa == Some((7, 8))),
        "CUDA 11.8 PTX is ISA 7.8"
    );
}

/// Every byte of `.nv_fatbin` is accounted for: containers back to back (zero padding between
/// them only), and in each container the entries (header + payload) exactly fill it.
fn assert_tiles(path: &Path, inv: &Inventory) {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let sec = elf.section_by_name(".nv_fatbin").expect(".nv_fatbin");
    let (start, size) = sec.file_range().unwrap();
    let end = start + size;
    let mut pos = start;
    for (i, c) in inv.containers.iter().enumerate() {
        assert!(c.offset >= pos, "container {i} overlaps the previous one");
        assert!(
            data[pos as usize..c.offset as usize]
                .iter()
                .all(|&b| b == 0),
            "non-zero gap before container {i}"
        );
        let mut e_pos = c.offset + 16;
        for e in inv.entries.iter().filter(|e| e.container == i) {
            assert_eq!(e.offset, e_pos, "container {i}: gap before entry");
            e_pos += e.header_size + e.payload_size;
        }
        assert_eq!(
            e_pos,
            c.offset + c.size,
            "container {i}: entries do not fill it"
        );
        pos = c.offset + c.size;
    }
    assert!(pos <= end);
    assert!(
        data[pos as usize..end as usize].iter().all(|&b| b == 0),
        "non-zero bytes after the last container"
    );
    assert!(!inv.containers.is_empty());
}
