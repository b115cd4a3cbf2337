//! The finding: the one shape every rule produces and every output prints
//! (`docs/design.md`, "Shapes every part shares"). Findings are data, not errors.

pub mod catalog;

use serde::{Deserialize, Serialize};

pub use catalog::FindingId;

use crate::knowledge;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Block,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Block => "block",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warn" => Some(Severity::Warn),
            "block" => Some(Severity::Block),
            _ => None,
        }
    }
}

/// Which layer would report the predicted error to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Driver,
    Runtime,
    Nvml,
    Loader,
    Toolkit,
    /// An OS error the workload meets (`strerror` text), such as a full disk.
    Os,
}

/// What the user would see if the container started anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicted {
    pub api: Api,
    pub code: Option<i64>,
    pub name: Option<String>,
    pub message: String,
}

impl Predicted {
    /// A driver error, named and worded from the knowledge table so that no rule spells a
    /// driver name by hand.
    pub fn driver(code: i64) -> Predicted {
        let e = knowledge::driver_error(code).unwrap_or_else(|| {
            panic!("CUDA driver error {code} is not in knowledge/cuda_errors.tsv")
        });
        Predicted {
            api: Api::Driver,
            code: Some(e.code),
            name: Some(e.name.to_string()),
            message: e.text.to_string(),
        }
    }

    /// A message with no error code (NVML, loader, toolkit), quoted verbatim.
    pub fn message(api: Api, message: impl Into<String>) -> Predicted {
        Predicted {
            api,
            code: None,
            name: None,
            message: message.into(),
        }
    }

    /// One line for people: `100 CUDA_ERROR_NO_DEVICE ("no CUDA-capable device is detected")`.
    pub fn headline(&self) -> String {
        match (&self.code, &self.name) {
            (Some(c), Some(n)) => format!("{c} {n} (\"{}\")", self.message),
            (None, Some(n)) => format!("{n} (\"{}\")", self.message),
            _ => format!("\"{}\"", self.message),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable kebab-case id (serialized as its string): [`catalog`].
    pub id: FindingId,
    pub severity: Severity,
    pub predicted: Option<Predicted>,
    pub evidence: String,
    pub fix: String,
}

impl Finding {
    pub fn new(
        id: FindingId,
        severity: Severity,
        predicted: Option<Predicted>,
        evidence: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        // The rule tables run every rule: a severity the catalog does not list fails them, so
        // the reference never understates what an id can do.
        #[cfg(test)]
        assert!(
            id.severities().contains(&severity),
            "{id} emitted as {} but the catalog lists {:?}",
            severity.as_str(),
            id.severities()
        );
        Finding {
            id,
            severity,
            predicted,
            evidence: evidence.into(),
            fix: fix.into(),
        }
    }

    /// A rule whose facts are missing: info, an id `…-skipped`, never a pass and never a block.
    pub fn skipped(id: FindingId, why: impl Into<String>) -> Finding {
        #[cfg(test)]
        assert!(id.as_str().ends_with("-skipped"), "{id}");
        Finding::new(id, Severity::Info, None, why, "")
    }
}
