//! Predicted vs actual: every fixture in tests/data/h100-driver-13.0 was loaded with
//! `cuModuleLoadData` on an H100 (compute capability 9.0, driver CUDA 13.0); `driver.tsv` holds
//! what the driver answered. `scan` must predict exactly that, from the file alone.

use std::path::Path;

use cuda_preflight::commands::scan::{ScanArgs, run};

#[test]
fn scan_predicts_what_the_h100_driver_answered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/h100-driver-13.0");
    let table = std::fs::read_to_string(dir.join("driver.tsv")).unwrap();
    let rows: Vec<(String, String)> = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0].to_string(), c[2].to_string())
        })
        .collect();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    let args = ScanArgs {
        gpu: vec!["9.0".into()],
        driver_cuda: Some("13.0".into()),
        json: true,
        paths: rows.iter().map(|(f, _)| dir.join(f)).collect(),
    };
    let mut out = Vec::new();
    run(&args, &mut out).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let mut wrong = Vec::new();
    for ((file, actual), f) in rows.iter().zip(doc["files"].as_array().unwrap()) {
        assert!(f["path"].as_str().unwrap().ends_with(file.as_str()));
        let v = &f["verdict"];
        let predicted = if v["loadable"] == true {
            "CUDA_SUCCESS"
        } else {
            v["predicted_error"].as_str().unwrap_or("?")
        };
        if predicted != actual {
            wrong.push(format!(
                "{file}: predicted {predicted}, driver said {actual}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
