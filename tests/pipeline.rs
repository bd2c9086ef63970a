//! The whole pipeline as a user runs it: `docker-compose up` on compose.yaml — shortened through
//! its documented overrides, to keep CI short — runs every stage to the end by itself, exit
//! status 0, the report on the `runs` volume with every stage's metrics; `down -v` leaves no
//! container or volume. The default profile (SmolLM2 from the published SFT adapter) shows a
//! trained checkpoint above the start held out; the tiny profile trains every stage from scratch;
//! a stage with a bad config stops the chain with a non-zero exit.
//!
//! Needs the images `make images` builds (`make test` does). Each run uses its own compose
//! project name, so nothing of it meets anything else on the engine.

use std::process::{Command, Output};

const RUNTIME_IMAGE: &str = "unitforge-runtime:local";

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// `docker-compose` (1.29, this machine's) or the v2 plugin.
fn compose(project: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let (program, prefix): (&str, &[&str]) = if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        ("docker-compose", &[])
    } else {
        ("docker", &["compose"])
    };
    let mut command = Command::new(program);
    command
        .args(prefix)
        .args(["--project-name", project, "--file", "compose.yaml"])
        .args(args)
        // 1.29 gives up on an engine call after 60 s, which a loaded machine exceeds.
        .env("COMPOSE_HTTP_TIMEOUT", "600")
        .current_dir(root());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("docker-compose runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A file from a compose project's `runs` volume.
fn read_from_volume(project: &str, path: &str) -> Option<String> {
    let output = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "cat",
            "-v",
            &format!("{project}_runs:/runs:ro"),
            RUNTIME_IMAGE,
            &format!("/runs/{path}"),
        ])
        .output()
        .expect("docker runs");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Containers and volumes the engine still has for `project`.
fn leftovers(project: &str) -> Vec<String> {
    let label = format!("label=com.docker.compose.project={project}");
    let mut found = Vec::new();
    for args in [
        vec!["ps", "-a", "-q", "--filter", label.as_str()],
        vec!["volume", "ls", "-q", "--filter", label.as_str()],
    ] {
        let output = Command::new("docker").args(&args).output().unwrap();
        found.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    found
}

/// Runs `up` for a fresh project and always takes it down again.
struct Project(String);

impl Project {
    fn new(name: &str) -> Self {
        let project = format!("uf{name}{}", std::process::id());
        Self(project)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        compose(&self.0, &["down", "-v", "--remove-orphans"], &[]);
    }
}

/// `up` for `project` with `env`, which must run to the end with exit status 0; its output.
fn up_to_the_end(project: &str, env: &[(&str, &str)]) -> String {
    let up = compose(project, &["up", "--no-build"], env);
    let log = text(&up);
    assert!(up.status.success(), "docker-compose up failed:\n{log}");
    log
}

/// Held-out rows the shortened eval stage scores.
const EVAL_ROWS: &str = "12";

/// The tiny profile, shortened for CI (a third of its steps and rows): every stage still runs.
const TINY_SHORTER: [(&str, &str); 6] = [
    ("PIPELINE", "tiny"),
    ("SET_SFT", "max_steps=60 eval_every=30 save_every=60"),
    ("SET_DISTILL", "max_steps=10 eval_every=10 save_every=10"),
    ("SET_GRPO_MUTANT", "max_steps=4 eval_every=4 save_every=4"),
    ("SET_GRPO_SPEED", "max_steps=4 eval_every=4 save_every=4"),
    ("EVAL_LIMIT", EVAL_ROWS),
];

/// The report's points and its baselines, checked the same way for every profile: figures are
/// shares, every held-out row is scored or excluded, the human suites pass and the trivial one
/// earns nothing (as written and pruned).
fn checked_report(project: &str, profile: &str, rows: u64) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_str(
        &read_from_volume(project, &format!("{profile}/report/report.json"))
            .expect("the report is written"),
    )
    .unwrap();
    for point in report["points"].as_array().unwrap() {
        for scoring in ["figures", "pruned"] {
            let f = &point[scoring];
            for key in [
                "valid_pytest_rate",
                "pass_rate",
                "mean_kill_rate",
                "mean_composite",
            ] {
                let v = f[key].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&v), "{scoring}.{key} = {v} in {point}");
            }
            assert_eq!(
                f["suites"].as_u64().unwrap() + f["excluded"].as_u64().unwrap(),
                rows,
                "every held-out row is scored or excluded"
            );
        }
    }
    for scoring in ["figures", "pruned"] {
        assert_eq!(report["reference"][scoring]["pass_rate"], 1.0, "{scoring}");
        assert_eq!(
            report["trivial"][scoring]["mean_composite"], 0.0,
            "{scoring}"
        );
    }
    assert!(read_from_volume(project, &format!("{profile}/report/report.md")).is_some());
    report
}

/// Every one of `stages` wrote at least `lines` lines of metrics.
fn assert_metrics(project: &str, profile: &str, stages: &[&str], lines: usize) {
    for stage in stages {
        let metrics = read_from_volume(project, &format!("{profile}/{stage}/metrics.jsonl"))
            .unwrap_or_else(|| panic!("{stage} wrote no metrics"));
        assert!(metrics.lines().count() >= lines, "{stage}");
    }
}

/// `down -v` succeeds and leaves no container or volume of the project behind.
fn take_down(project: &str) {
    let down = compose(project, &["down", "-v", "--remove-orphans"], &[]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(leftovers(project), Vec::<String>::new());
}

fn labels(report: &serde_json::Value) -> Vec<&str> {
    report["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect()
}

/// Held-out rows the shortened default profile scores.
const QUICK_EVAL_ROWS: &str = "8";

/// The default profile shortened for CI: one GRPO step of one group per branch, 8 held-out rows.
const QUICK_SHORTER: [(&str, &str); 3] = [
    ("SET_GRPO_MUTANT", ONE_SMALL_GRPO_STEP),
    ("SET_GRPO_SPEED", ONE_SMALL_GRPO_STEP),
    ("EVAL_LIMIT", QUICK_EVAL_ROWS),
];
const ONE_SMALL_GRPO_STEP: &str = "max_steps=1 save_every=1 eval_every=1 \
    grpo.prompts_per_step=1 grpo.num_generations=2 grpo.eval_prompts=1";

#[test]
fn the_default_profile_starts_from_the_published_sft_and_shows_it_above_the_start() {
    let project = Project::new("quick");
    up_to_the_end(&project.0, &QUICK_SHORTER);
    let report = checked_report(
        &project.0,
        "smollm2-quick",
        QUICK_EVAL_ROWS.parse().unwrap(),
    );
    assert_eq!(
        labels(&report),
        ["start", "sft", "grpo-mutant", "grpo-speed"]
    );
    // What a first-time user must see: training shows held out. The published SFT adapter's
    // suites, pruned, kill mutants; the untrained model's hardly ever do.
    let pruned_kill = |label: &str| {
        report["points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["label"] == label)
            .unwrap()["pruned"]["mean_kill_rate"]
            .as_f64()
            .unwrap()
    };
    assert!(
        pruned_kill("sft") > pruned_kill("start"),
        "sft {} against start {}",
        pruned_kill("sft"),
        pruned_kill("start")
    );
    let choice =
        read_from_volume(&project.0, "smollm2-quick/grpo-start.txt").expect("the start is named");
    assert!(choice.starts_with("sft "), "{choice}");
    // The report compares every checkpoint with the start, row by row.
    let markdown = read_from_volume(&project.0, "smollm2-quick/report/report.md").unwrap();
    assert!(markdown.contains("sft − start"), "{markdown}");
    assert_metrics(
        &project.0,
        "smollm2-quick",
        &["grpo-mutant", "grpo-speed"],
        1,
    );
    take_down(&project.0);
}

#[test]
fn the_tiny_profile_runs_every_stage_and_down_leaves_nothing() {
    let project = Project::new("ok");
    let log = up_to_the_end(&project.0, &TINY_SHORTER);
    let report = checked_report(&project.0, "tiny", EVAL_ROWS.parse().unwrap());
    assert_eq!(
        labels(&report),
        ["start", "sft", "distill", "grpo-mutant", "grpo-speed"]
    );
    // GRPO's start is the better of SFT and GKD, by held-out pruned composite, and says so.
    let choice = read_from_volume(&project.0, "tiny/grpo-start.txt").expect("the start is chosen");
    assert!(
        choice.starts_with("sft ") || choice.starts_with("distill "),
        "{choice}"
    );
    assert!(log.contains("GRPO starts from"), "{log}");
    assert!(report["points"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["on_front"] == true));
    let stages = ["sft", "sft-teacher", "distill", "grpo-mutant", "grpo-speed"];
    assert_metrics(&project.0, "tiny", &stages, 4);
    take_down(&project.0);
}

#[test]
fn a_stage_with_a_bad_config_stops_the_chain_with_a_non_zero_exit() {
    let project = Project::new("bad");
    let up = compose(
        &project.0,
        &["up", "--no-build"],
        &[("PIPELINE", "tiny"), ("SET_SFT", "lora.rnak=4")],
    );
    let log = text(&up);
    assert!(
        !up.status.success(),
        "a bad config must fail the run:\n{log}"
    );
    // `up` reports only that sft exited non-zero; the stage's own message is in its logs.
    let sft_log = text(&compose(&project.0, &["logs", "--no-color", "sft"], &[]));
    assert!(
        sft_log.contains("rnak"),
        "the error names the key in the stage's logs:\n{sft_log}\nup:\n{log}"
    );
    // The chain stopped: nothing after sft ran.
    assert!(read_from_volume(&project.0, "tiny/distill/metrics.jsonl").is_none());
    assert!(read_from_volume(&project.0, "tiny/report/report.json").is_none());
}
