//! CUDA version knowledge: toolkit ↔ driver, minor-version compatibility per major, compute
//! capability ↔ toolkits. Rows live in the `.tsv` files beside this one, each citing its source.

use std::cmp::Ordering;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::tsv_rows;

/// A dotted numeric version (`580.159.04`, `12.4`, `9.0`). Compares component-wise with missing
/// components as 0, so `12.4` == `12.4.0` and `580` < `580.65.06`. Leading zeros in a component
/// are numeric (`04` == `4`), as NVIDIA's driver versions use them.
#[derive(Debug, Clone)]
pub struct Version {
    parts: Vec<u64>,
    text: String,
}

/// Versions longer than this are not versions (keeps hostile file names cheap).
const MAX_VERSION_PARTS: usize = 8;

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        for p in s.split('.') {
            if p.is_empty() || p.len() > 12 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts.push(p.parse().ok()?);
            if parts.len() > MAX_VERSION_PARTS {
                return None;
            }
        }
        Some(Version {
            parts,
            text: s.to_string(),
        })
    }

    pub fn from_parts(parts: &[u64]) -> Version {
        let text = parts
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(".");
        Version {
            parts: parts.to_vec(),
            text,
        }
    }

    pub fn part(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }

    pub fn major(&self) -> u64 {
        self.part(0)
    }

    pub fn minor(&self) -> u64 {
        self.part(1)
    }

    /// `major.minor` of this version.
    pub fn major_minor(&self) -> Version {
        Version::from_parts(&[self.major(), self.minor()])
    }

    /// The CUDA version encoding of `cuDriverGetVersion` / `cudaRuntimeGetVersion`: 13000 = 13.0.
    pub fn from_cuda_int(v: i32) -> Option<Version> {
        if v <= 0 {
            return None;
        }
        let v = v as u64;
        Some(Version::from_parts(&[v / 1000, (v % 1000) / 10]))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        (0..n)
            .map(|i| self.part(i).cmp(&other.part(i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// The image facts cache reads versions back (`facts::image::cache`): what does not parse as a
/// version is an error, and the whole entry a miss.
impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).ok_or_else(|| serde::de::Error::custom("not a version"))
    }
}

const DRIVER_MIN_TSV: &str = include_str!("cuda_driver_min.tsv");
const MAJOR_MIN_TSV: &str = include_str!("cuda_major_min.tsv");
const CC_TSV: &str = include_str!("compute_capability.tsv");

/// One toolkit release and the driver it needs without any compatibility mechanism.
#[derive(Debug, Clone)]
pub struct ToolkitRelease {
    /// `major.minor.update`
    pub release: Version,
    pub min_driver: Version,
    pub label: &'static str,
}

pub fn toolkit_releases() -> &'static [ToolkitRelease] {
    static T: OnceLock<Vec<ToolkitRelease>> = OnceLock::new();
    T.get_or_init(|| {
        tsv_rows(DRIVER_MIN_TSV)
            .map(|c| ToolkitRelease {
                release: Version::parse(c[0]).expect("cuda_driver_min.tsv: release"),
                min_driver: Version::parse(c[1]).expect("cuda_driver_min.tsv: min_driver"),
                label: c[2],
            })
            .collect()
    })
}

/// The driver a toolkit `major.minor` needs without compatibility: its first (GA) release row.
/// Runtime library versions (`libcudart.so.12.4.127`) carry a build number, not an update
/// number, so lookups go by `major.minor` and take the GA row, the lowest requirement of that
/// minor.
pub fn toolkit_min_driver(cuda: &Version) -> Option<&'static ToolkitRelease> {
    toolkit_releases()
        .iter()
        .filter(|r| r.release.major() == cuda.major() && r.release.minor() == cuda.minor())
        .min_by(|a, b| a.min_driver.cmp(&b.min_driver))
}

/// The newest toolkit `major.minor` in the table.
pub fn newest_known_cuda() -> Version {
    toolkit_releases()
        .iter()
        .map(|r| r.release.major_minor())
        .max()
        .expect("table is not empty")
}

/// The highest CUDA `major.minor` a driver version supports: the newest toolkit whose GA driver
/// is not newer than it. `None` for a driver older than every row.
pub fn cuda_for_driver(driver: &Version) -> Option<Version> {
    toolkit_releases()
        .iter()
        .filter(|r| toolkit_min_driver(&r.release).is_some_and(|ga| ga.min_driver <= *driver))
        .map(|r| r.release.major_minor())
        .max()
}

/// The minimum driver for minor-version compatibility within a CUDA major (11 and later).
pub fn minor_compat_min_driver(major: u64) -> Option<Version> {
    static T: OnceLock<Vec<(u64, Version)>> = OnceLock::new();
    T.get_or_init(|| {
        tsv_rows(MAJOR_MIN_TSV)
            .map(|c| {
                (
                    c[0].parse().expect("cuda_major_min.tsv: major"),
                    Version::parse(c[1]).expect("cuda_major_min.tsv: min_driver"),
                )
            })
            .collect()
    })
    .iter()
    .find(|(m, _)| *m == major)
    .map(|(_, v)| v.clone())
}

#[derive(Debug, Clone)]
pub struct CcRow {
    pub cc: Version,
    pub arch: &'static str,
    pub first_cuda: Version,
    pub last_cuda: Option<Version>,
}

pub fn compute_capabilities() -> &'static [CcRow] {
    static T: OnceLock<Vec<CcRow>> = OnceLock::new();
    T.get_or_init(|| {
        tsv_rows(CC_TSV)
            .map(|c| CcRow {
                cc: Version::parse(c[0]).expect("compute_capability.tsv: cc"),
                arch: c[1],
                first_cuda: Version::parse(c[2]).expect("compute_capability.tsv: first_cuda"),
                last_cuda: c.get(3).and_then(|s| Version::parse(s)),
            })
            .collect()
    })
}

/// How a toolkit version relates to a compute capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CcSupport {
    Supported,
    /// The toolkit predates the architecture; the first toolkit that knows it.
    TooNew {
        first_cuda: Version,
    },
    /// The toolkit no longer builds for it; the last toolkit that did.
    Dropped {
        last_cuda: Version,
    },
    /// The compute capability is not in the table.
    Unknown,
}

pub fn cc_support(cc: &Version, cuda: &Version) -> CcSupport {
    let Some(row) = compute_capabilities().iter().find(|r| r.cc == *cc) else {
        return CcSupport::Unknown;
    };
    let cuda = cuda.major_minor();
    if cuda < row.first_cuda {
        return CcSupport::TooNew {
            first_cuda: row.first_cuda.clone(),
        };
    }
    match &row.last_cuda {
        Some(last) if cuda > *last => CcSupport::Dropped {
            last_cuda: last.clone(),
        },
        _ => CcSupport::Supported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn version_parse_and_order() {
        assert_eq!(v("12.4"), v("12.4.0"));
        assert!(v("580") < v("580.65.06"));
        assert!(v("580.95.05") < v("580.159.04"));
        assert_eq!(v("535.104.05").part(2), 5);
        assert_eq!(v("580.159.04").to_string(), "580.159.04");
        for bad in [
            "",
            "12.",
            ".4",
            "12.x",
            "abc",
            "1.2.3.4.5.6.7.8.9",
            "-1",
            "99999999999999999999",
        ] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Version::from_cuda_int(13000).unwrap(), v("13.0"));
        assert_eq!(Version::from_cuda_int(12080).unwrap(), v("12.8"));
        assert!(Version::from_cuda_int(0).is_none());
    }

    #[test]
    fn tables_are_well_formed() {
        let rel = toolkit_releases();
        assert!(rel.len() > 40);
        for w in rel.windows(2) {
            assert!(
                w[0].release < w[1].release,
                "rows sorted and unique: {}",
                w[1].release
            );
            assert!(
                w[0].min_driver <= w[1].min_driver,
                "driver minimum never drops: {}",
                w[1].release
            );
        }
        for m in [11, 12, 13] {
            let min = minor_compat_min_driver(m).unwrap();
            // The minor-compat minimum is never above the major's first release's own driver.
            let ga = toolkit_min_driver(&Version::from_parts(&[m, 0])).unwrap();
            assert!(min.major() <= ga.min_driver.major(), "{m}");
        }
        let cc = compute_capabilities();
        for (i, a) in cc.iter().enumerate() {
            if let Some(l) = &a.last_cuda {
                assert!(a.first_cuda <= *l, "{}", a.cc);
            }
            assert!(cc[i + 1..].iter().all(|b| b.cc != a.cc), "unique {}", a.cc);
        }
    }

    /// Rows from the release notes' "CUDA Toolkit and Corresponding Driver Versions" table
    /// (Table 3 of the CUDA 13.2 Update 2 notes, cuda_driver_min.tsv S1).
    #[test]
    fn toolkit_rows_from_the_release_notes() {
        let cases = [
            ("13.2", "595.45.04"), // CUDA 13.2 GA >= 595.45.04
            ("13.0", "580.65.06"), // CUDA 13.0 GA >= 580.65.06
            ("13.1", "590.44.01"), // CUDA 13.1 GA >= 590.44.01
            ("12.8", "570.26"),    // CUDA 12.8 GA >= 570.26
            ("12.4", "550.54.14"), // CUDA 12.4 GA >= 550.54.14
            ("12.0", "525.60.13"), // CUDA 12.0 GA >= 525.60.13
            ("11.8", "520.61.05"), // CUDA 11.8 GA >= 520.61.05
            ("11.4", "470.42.01"), // CUDA 11.4.0 GA >= 470.42.01
            ("10.2", "440.33"),    // CUDA 10.2.89 >= 440.33
        ];
        for (cuda, drv) in cases {
            assert_eq!(
                toolkit_min_driver(&v(cuda)).unwrap().min_driver,
                v(drv),
                "{cuda}"
            );
        }
        assert!(
            toolkit_min_driver(&v("12.7")).is_none(),
            "there was no CUDA 12.7"
        );
        // Update rows, looked up by their full release.
        for (release, drv) in [
            ("12.8.1", "570.124.06"), // CUDA 12.8 Update 1 >= 570.124.06
            ("12.9.1", "575.57.08"),  // CUDA 12.9 Update 1 >= 575.57.08
            ("13.0.2", "580.95.05"),  // CUDA 13.0 Update 2 >= 580.95.05
            ("13.1.1", "590.48.01"),  // CUDA 13.1 Update 1 >= 590.48.01
            ("13.2.2", "595.71.05"),  // CUDA 13.2 Update 2 >= 595.71.05
        ] {
            let row = toolkit_releases()
                .iter()
                .find(|r| r.release == v(release))
                .unwrap_or_else(|| panic!("{release}"));
            assert_eq!(row.min_driver, v(drv), "{release}");
        }
    }

    #[test]
    fn driver_to_cuda() {
        let cases = [
            ("580.159.04", Some("13.0")), // the H100 host of FACTS.md: cuDriverGetVersion 13000
            ("580.95.05", Some("13.0")),
            ("570.133.20", Some("12.8")),
            ("535.104.05", Some("12.2")),
            ("470.82.01", Some("11.4")),
            ("590.48.01", Some("13.1")),
            ("595.45.04", Some("13.2")), // CUDA 13.2 GA >= 595.45.04
            ("300.1", None),
        ];
        for (drv, want) in cases {
            assert_eq!(cuda_for_driver(&v(drv)), want.map(v), "{drv}");
        }
    }

    /// Compatibility guide: 13.x >= 580, 12.x >= 525(.60.13), 11.x >= 450(.80.02).
    #[test]
    fn minor_version_minimums() {
        assert_eq!(minor_compat_min_driver(13).unwrap(), v("580"));
        assert_eq!(minor_compat_min_driver(12).unwrap(), v("525.60.13"));
        assert_eq!(minor_compat_min_driver(11).unwrap(), v("450.80.02"));
        assert!(minor_compat_min_driver(10).is_none());
    }

    #[test]
    fn compute_capability_support() {
        assert_eq!(cc_support(&v("9.0"), &v("12.4")), CcSupport::Supported);
        assert_eq!(
            cc_support(&v("12.0"), &v("12.0")),
            CcSupport::TooNew {
                first_cuda: v("12.8")
            }
        );
        assert_eq!(
            cc_support(&v("6.1"), &v("13.0")),
            CcSupport::Dropped {
                last_cuda: v("12.9")
            }
        );
        assert_eq!(
            cc_support(&v("3.5"), &v("12.0")),
            CcSupport::Dropped {
                last_cuda: v("11.8")
            }
        );
        assert_eq!(cc_support(&v("7.5"), &v("13.1")), CcSupport::Supported);
        // clang MinVersionForOffloadArch: sm_72 from CUDA 9.1 (compute_capability.tsv S1).
        assert_eq!(cc_support(&v("7.2"), &v("9.1")), CcSupport::Supported);
        // Thor: sm_101 through 12.9, renamed sm_110 from 13.0 (S1, S4).
        assert_eq!(
            cc_support(&v("10.1"), &v("13.0")),
            CcSupport::Dropped {
                last_cuda: v("12.9")
            }
        );
        assert_eq!(cc_support(&v("11.0"), &v("13.0")), CcSupport::Supported);
        assert_eq!(cc_support(&v("42.0"), &v("13.0")), CcSupport::Unknown);
    }
}
