//! OpenRLHF's remote reward protocol on the reward service: `POST /get_reward` with
//! `{"query": [...], "prompts": [...], "labels": [...]}` — each query is its prompt followed by the
//! model's response, each label the code under test (its text, or a JSON object with `code` and
//! `module`) — answered with `{"rewards": [...], "scores": [...], "extra_logs": {...}}`: the
//! composite reward per sample, and each component as a list. The test file is extracted from the
//! response as the trainer does it (`completion.rs`).
//!
//! Every sample in a request is scored, all at once through the service's queue. A sample whose
//! label is unusable makes the request a 422 (the dataset is wrong, not the model); an
//! infrastructure failure makes it a 503, which OpenRLHF retries: never a reward of 0.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::api::{ErrorKind, ScoreRequest};
use crate::completion::extract_tests;
use crate::score::DEFAULT_MODULE;
use crate::service::admission::{error_response, failure, score_one, AppState};

/// OpenRLHF's remote reward request (other fields it may send are ignored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteRewardRequest {
    pub query: Vec<String>,
    #[serde(default)]
    pub prompts: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteRewardResponse {
    pub rewards: Vec<f64>,
    pub scores: Vec<f64>,
    pub extra_logs: BTreeMap<String, Vec<f64>>,
}

/// The code under test of a label: `{"code": ..., "module": ...}`, or the code itself.
fn label_code(label: &str) -> (String, String) {
    #[derive(Deserialize)]
    struct Label {
        code: String,
        #[serde(default)]
        module: Option<String>,
    }
    match serde_json::from_str::<Label>(label) {
        Ok(parsed) => (
            parsed.module.unwrap_or_else(|| DEFAULT_MODULE.into()),
            parsed.code,
        ),
        Err(_) => (DEFAULT_MODULE.into(), label.to_string()),
    }
}

/// The response part of a query: what follows its prompt (the whole query without one).
fn response_text<'a>(query: &'a str, prompt: Option<&String>) -> &'a str {
    match prompt {
        Some(prompt) => query.strip_prefix(prompt.as_str()).unwrap_or(query),
        None => query,
    }
}

pub(crate) async fn get_reward_handler(
    State(state): State<Arc<AppState>>,
    body: Result<Json<RemoteRewardRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let response = match body {
        Err(rejection) => error_response(failure(
            rejection.status(),
            ErrorKind::Input,
            rejection.body_text(),
        )),
        Ok(Json(request)) => rewards(&state, request).await,
    };
    state.metrics.request("get_reward", response.status());
    response
}

async fn rewards(state: &AppState, request: RemoteRewardRequest) -> Response {
    let n = request.query.len();
    if request.labels.len() != n || !(request.prompts.is_empty() || request.prompts.len() == n) {
        return error_response(failure(
            StatusCode::BAD_REQUEST,
            ErrorKind::Input,
            format!(
                "{n} queries need {n} labels (the code under test of each) and 0 or {n} prompts; got {} labels and {} prompts",
                request.labels.len(),
                request.prompts.len()
            ),
        ));
    }
    if n > state.limits.max_batch {
        return error_response(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Limit,
            format!("{n} samples; the limit is {}", state.limits.max_batch),
        ));
    }
    let scores = join_all((0..n).map(|i| {
        let (module, code) = label_code(&request.labels[i]);
        let tests = extract_tests(response_text(&request.query[i], request.prompts.get(i)));
        score_one(
            state,
            ScoreRequest {
                id: None,
                module,
                code,
                tests,
                config: None,
                no_cache: false,
            },
        )
    }))
    .await;
    let mut result = RemoteRewardResponse {
        rewards: Vec::with_capacity(n),
        scores: Vec::with_capacity(n),
        extra_logs: BTreeMap::new(),
    };
    for (index, score) in scores.into_iter().enumerate() {
        let report = match score {
            Ok(scored) => scored.report,
            Err((status, mut body)) => {
                body.message = format!("sample {index}: {}", body.message);
                return error_response((status, body));
            }
        };
        result.rewards.push(report.composite);
        result.scores.push(report.composite);
        for (key, value) in [
            ("validity", report.validity),
            ("mutant_kill", report.mutant_kill),
            ("speed", report.speed),
            ("stability", report.stability),
            ("robustness", report.robustness),
        ] {
            result
                .extra_logs
                .entry(key.to_string())
                .or_default()
                .push(value);
        }
    }
    Json(result).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_queries() {
        assert_eq!(
            label_code(r#"{"code": "X = 1\n", "module": "calc"}"#),
            ("calc".to_string(), "X = 1\n".to_string())
        );
        assert_eq!(
            label_code("def f():\n    return 1\n"),
            (
                DEFAULT_MODULE.to_string(),
                "def f():\n    return 1\n".to_string()
            )
        );
        let prompt = "Write tests.\n".to_string();
        assert_eq!(
            response_text("Write tests.\ndef test_x(): pass", Some(&prompt)),
            "def test_x(): pass"
        );
        assert_eq!(
            response_text("no prompt here", Some(&prompt)),
            "no prompt here"
        );
        assert_eq!(response_text("all of it", None), "all of it");
    }
}
