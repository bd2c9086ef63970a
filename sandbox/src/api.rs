//! The reward service's wire types, shared by the server (`service.rs`) and the client
//! (`client.rs`). Documented for other languages in `docs/openapi.json`.

use serde::{Deserialize, Serialize};

use crate::cache::CacheOutcome;
use crate::rewards::RewardConfig;
use crate::score::{ScoreInput, ScoreReport, DEFAULT_MODULE};

fn default_module() -> String {
    DEFAULT_MODULE.into()
}

/// One pair to score. `config` defaults to the server's reward config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Module name the tests import the code under test by.
    #[serde(default = "default_module")]
    pub module: String,
    pub code: String,
    pub tests: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RewardConfig>,
    /// Compute afresh even if the cache has this score (the result is still stored).
    #[serde(default)]
    pub no_cache: bool,
}

impl ScoreRequest {
    pub fn input(&self) -> ScoreInput {
        ScoreInput {
            module: self.module.clone(),
            code: self.code.clone(),
            tests: self.tests.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreResponse {
    pub cache: CacheOutcome,
    pub report: ScoreReport,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub items: Vec<ScoreRequest>,
}

/// One line of the batch response stream (newline-delimited JSON), in completion order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchLine {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ScoreResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Why a request got no score.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The code under test or the request is unusable (HTTP 422 / 400).
    Input,
    /// A limit of the service was exceeded (HTTP 413 / 400).
    Limit,
    /// The queue is full: retry after `Retry-After` seconds (HTTP 429).
    Overloaded,
    /// The sandbox failed (HTTP 503): retry, or report.
    Infra,
    /// The service is shutting down (HTTP 503).
    ShuttingDown,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub status: String,
    pub executor: String,
    pub runtime: String,
    pub workers: usize,
    pub queue_depth: usize,
    pub protocol: u32,
}
