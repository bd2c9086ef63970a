//! The `unitforge` binary as a user meets it: exit codes, JSON shape, batch mode, listings.

use std::process::{Command, Output};

/// The binary, scoring in-process: no test leaves a background scorer behind (the daemon's own
/// test starts and stops its daemons in a directory of its own).
fn unitforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unitforge"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("UNITFORGE_NO_DAEMON", "1")
        .output()
        .expect("the unitforge binary runs")
}

/// A freshly initialised tiny model in `dir/tiny`.
fn tiny_model(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("tiny");
    json_of(&unitforge(&[
        "init-model",
        "--config",
        "configs/model_tiny.yaml",
        "--out",
        model.to_str().unwrap(),
        "--json",
    ]));
    model
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The JSON a successful command printed (panicking with its stderr otherwise).
fn json_of(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout(output)).expect("one JSON document")
}

#[test]
fn score_json_has_the_six_rewards_at_top_level() {
    let out = unitforge(&[
        "score",
        "--code",
        "data/pairs/roman/roman.py",
        "--tests",
        "data/pairs/roman/test_roman.py",
        "--json",
        "--workers",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    for field in [
        "validity",
        "mutant_kill",
        "speed",
        "stability",
        "robustness",
        "composite",
    ] {
        let number = value[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is not a number"));
        assert!((0.0..=1.0).contains(&number), "{field} = {number}");
    }
    assert_eq!(value["validity"], 1.0);
    let mutants = value["mutants"]["results"].as_array().unwrap();
    assert!(mutants
        .iter()
        .all(|m| m["status"].is_string() && m["diff"].is_string() && m["id"].is_string()));
    assert!(value["baseline"]["tests"].as_array().unwrap().len() >= 12);
}

#[test]
fn score_table_lists_surviving_mutants() {
    let out = unitforge(&[
        "score",
        "--code",
        "data/pairs/clamp/clamp.py",
        "--tests",
        "data/pairs/clamp/test_clamp.py",
        "--workers",
        "2",
    ]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("mutant_kill") && text.contains("composite"),
        "{text}"
    );
    assert!(text.contains("Surviving mutants"), "{text}");
}

#[test]
fn an_invalid_suite_still_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("test_bad.py");
    std::fs::write(&tests, "def test_x(:\n").unwrap();
    let out = unitforge(&[
        "score",
        "--code",
        "data/pairs/clamp/clamp.py",
        "--tests",
        tests.to_str().unwrap(),
        "--json",
        "--workers",
        "1",
    ]);
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value["validity"], 0.0);
    assert!(value["invalid_reason"].as_str().unwrap().contains("line 1"));
}

#[test]
fn score_with_pruning_lists_what_it_pruned_and_strict_mode_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("test_clamp.py");
    let right = std::fs::read_to_string("data/pairs/clamp/test_clamp.py").unwrap();
    std::fs::write(
        &tests,
        format!("{right}\n\ndef test_wrong():\n    assert clamp(20, 0, 10) == 20\n"),
    )
    .unwrap();
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "score",
            "--code",
            "data/pairs/clamp/clamp.py",
            "--tests",
            tests.to_str().unwrap(),
            "--workers",
            "2",
        ];
        args.extend_from_slice(extra);
        args
    };
    let pruned = json_of(&unitforge(&args(&["--failing-tests", "prune", "--json"])));
    assert_eq!(pruned["valid"], true);
    assert_eq!(pruned["kept_tests"].as_array().unwrap().len(), 4);
    assert_eq!(pruned["pruned_tests"][0]["reason"], "failed");
    assert!(pruned["pruned_tests"][0]["name"]
        .as_str()
        .unwrap()
        .ends_with("::test_wrong"));
    assert_eq!(pruned["pass_fraction"], 0.8);
    assert!(pruned["composite"].as_f64().unwrap() > 0.0);

    let strict = json_of(&unitforge(&args(&["--json"])));
    assert_eq!(strict["composite"], 0.0);
    for key in ["kept_tests", "pruned_tests", "pass_fraction"] {
        assert!(strict.get(key).is_none(), "{key} in a strict report");
    }

    let table = stdout(&unitforge(&args(&["--failing-tests", "prune"])));
    assert!(table.contains("4 of 5 tests kept"), "{table}");
    assert!(table.contains("Pruned tests (1)"), "{table}");
    assert!(table.contains("assert 10 == 20"), "{table}");
}

#[test]
fn unusable_input_exits_non_zero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("broken.py");
    std::fs::write(&code, "def f(:\n    pass\n").unwrap();
    let out = unitforge(&[
        "score",
        "--code",
        code.to_str().unwrap(),
        "--tests",
        "data/pairs/clamp/test_clamp.py",
        "--workers",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("syntax error at line 1"), "{err}");

    let out = unitforge(&[
        "score",
        "--code",
        "nope.py",
        "--tests",
        "data/pairs/clamp/test_clamp.py",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read nope.py"));

    let config = dir.path().join("rewards.yaml");
    std::fs::write(&config, "wieghts: {}\n").unwrap();
    let out = unitforge(&[
        "score",
        "--code",
        "data/pairs/clamp/clamp.py",
        "--tests",
        "data/pairs/clamp/test_clamp.py",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wieghts"));
}

#[test]
fn batch_scores_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let code = std::fs::read_to_string("data/pairs/vowels/vowels.py").unwrap();
    let tests = std::fs::read_to_string("data/pairs/vowels/test_vowels.py").unwrap();
    let rows = [
        serde_json::json!({"id": "good", "module": "vowels", "code": code, "tests": tests}),
        serde_json::json!({"id": "trivial", "module": "vowels", "code": code, "tests": "def test_x():\n    assert True\n"}),
        serde_json::json!({"id": "broken-cut", "module": "vowels", "code": "def (", "tests": tests}),
    ];
    let input = dir.path().join("candidates.jsonl");
    std::fs::write(
        &input,
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let output = dir.path().join("results.jsonl");
    let out = unitforge(&[
        "score",
        "--batch",
        input.to_str().unwrap(),
        "--jobs",
        "2",
        "--workers",
        "2",
        "--out",
        output.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 3);
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id("good")["report"]["validity"], 1.0);
    assert_eq!(by_id("trivial")["report"]["composite"], 0.0);
    assert!(by_id("broken-cut")["error"]
        .as_str()
        .unwrap()
        .contains("syntax error"));
}

/// A score without what depends on the clock: times, the speed reward and the composite built
/// on it, and which test killed a mutant first (the order follows measured durations).
fn without_timing(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|key, _| {
                !(key.ends_with("_ms")
                    || key.ends_with("_s")
                    || ["timing", "output", "speed", "composite", "detail"].contains(&key.as_str()))
            });
            map.values_mut().for_each(without_timing);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_timing),
        _ => {}
    }
}

/// `unitforge score --json` of the gcd_lcm pair on two local workers, then `extra`.
fn gcd_lcm_score_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "score",
        "--code",
        "data/pairs/gcd_lcm/gcd_lcm.py",
        "--tests",
        "data/pairs/gcd_lcm/test_gcd_lcm.py",
        "--json",
        "--executor",
        "local",
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

/// `unitforge serve` on a free port with the local executor, its stderr piped.
fn local_service() -> std::process::Child {
    spawn_unitforge(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-cache",
        "--executor",
        "local",
        "--workers",
        "2",
    ])
}

/// The binary started in the background with `args`, its standard error piped (what the tests
/// read) and its standard output dropped.
fn spawn_unitforge(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_unitforge"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the unitforge binary runs")
}

/// An orchestrator may stop a service the moment it starts: SIGTERM while the workers are still
/// starting (before "listening") must stop it through its shutdown path, exit status 0, not kill
/// it as an unhandled signal would.
#[test]
fn sigterm_while_the_service_starts_stops_it_cleanly() {
    use std::os::unix::process::ExitStatusExt;
    // Long enough for the process to reach `serve`, well before its Python workers are up.
    let output = terminate_once(local_service(), 1, || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        true
    });
    let (status, stderr) = (output.status, String::from_utf8_lossy(&output.stderr));
    assert_eq!(status.signal(), None, "killed by a signal: {stderr}");
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("unitforge serve: stopped"), "{stderr}");
}

#[test]
fn score_through_a_server_prints_what_an_in_process_score_prints() {
    use std::io::BufRead;
    let mut server = local_service();
    let mut lines = std::io::BufReader::new(server.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split("listening on ")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        })
        .expect("the service says where it listens");
    let score = |extra: &[&str]| {
        let args = gcd_lcm_score_args(extra);
        let mut value = json_of(&unitforge(&args));
        without_timing(&mut value);
        value
    };
    let remote = score(&["--server", &url]);
    let local = score(&[]);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    assert_eq!(remote["validity"], 1.0);
    assert_eq!(remote, local);
}

#[test]
fn score_through_the_background_scorer_prints_what_an_in_process_score_prints() {
    let runtime_dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_unitforge"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("XDG_RUNTIME_DIR", runtime_dir.path())
            .env_remove("UNITFORGE_NO_DAEMON")
            .output()
            .expect("the unitforge binary runs")
    };
    let score = |extra: &[&str]| {
        let args = gcd_lcm_score_args(extra);
        let output = run(&args);
        let mut value = json_of(&output);
        without_timing(&mut value);
        (value, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let statuses = || json_of(&run(&["daemon", "status", "--json"]));

    let (first, said) = score(&["--daemon-idle-timeout", "60"]);
    assert!(said.contains("started a background scorer"), "{said}");
    let (second, said) = score(&["--daemon-idle-timeout", "60"]);
    assert!(
        !said.contains("started"),
        "the second call started another: {said}"
    );
    let (in_process, _) = score(&["--no-daemon"]);
    assert_eq!(first["validity"], 1.0);
    assert_eq!(first, in_process);
    assert_eq!(second, in_process);

    let running = statuses();
    let running = running.as_array().unwrap();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0]["scored"], 2);
    assert_eq!(running[0]["executor"], "local");
    let stopped = run(&["daemon", "stop"]);
    assert!(
        stdout(&stopped).contains("stopped 1"),
        "{}",
        stdout(&stopped)
    );
    assert_eq!(statuses(), serde_json::json!([]));
    let socket_dir = runtime_dir.path().join("unitforge");
    let left: Vec<_> = std::fs::read_dir(&socket_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "sock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket_dir).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);

    // Idle, it exits by itself.
    score(&["--daemon-idle-timeout", "1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while statuses() != serde_json::json!([]) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        statuses(),
        serde_json::json!([]),
        "the idle daemon did not exit"
    );
}

#[test]
fn mutants_and_variants_listings() {
    let out = unitforge(&["mutants", "data/pairs/clamp/clamp.py"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("relational_boundary") && text.contains("if value < low: → if value <= low:"),
        "{text}"
    );

    let out = unitforge(&[
        "mutants",
        "data/pairs/clamp/clamp.py",
        "--json",
        "--max",
        "3",
        "--seed",
        "9",
    ]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value["mutants"].as_array().unwrap().len(), 3);
    assert!(value["mutants"][0]["source"]
        .as_str()
        .unwrap()
        .contains("def clamp"));

    let out = unitforge(&["variants", "data/pairs/word_count/word_count.py", "--json"]);
    let variants: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(variants.as_array().unwrap().len(), 2);
    assert!(!variants[0]["renamed"].as_array().unwrap().is_empty());
}

#[test]
fn shipped_reward_config_is_the_documented_default() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/rewards.yaml");
    let config = unitforge_sandbox::rewards::RewardConfig::from_yaml_file(&path).unwrap();
    assert_eq!(config, unitforge_sandbox::rewards::RewardConfig::default());
}

#[test]
fn training_stage_config_errors_name_the_key_and_short_runs_of_every_stage_write_their_outputs() {
    let out = unitforge(&[
        "train",
        "sft",
        "--config",
        "configs/sft.yaml",
        "--set",
        "lora.rnak=4",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rnak"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let sft = dir.path().join("sft");
    let init = unitforge(&[
        "init-model",
        "--config",
        "configs/model_tiny.yaml",
        "--out",
        model.to_str().unwrap(),
        "--json",
    ]);
    let summary = json_of(&init);
    assert!(summary["parameters"].as_u64().unwrap() > 500_000);
    let run = unitforge(&[
        "train",
        "sft",
        "--config",
        "configs/sft.yaml",
        "--json",
        "--set",
        &format!("base_model={}", model.display()),
        "--set",
        &format!("output_dir={}", sft.display()),
        "--set",
        "max_steps=3",
        "--set",
        "batch_size=2",
        "--set",
        "grad_accum=1",
        "--set",
        "max_len=128",
        "--set",
        "eval_batches=1",
        "--set",
        "progress=false",
    ]);
    let summary = json_of(&run);
    assert_eq!(summary["steps"], 3);
    let metrics = std::fs::read_to_string(sft.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);
    for line in metrics.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["step", "loss", "lr", "tokens_per_s"] {
            assert!(row[key].is_number(), "{key} in {line}");
        }
    }
    assert!(sft.join("model.safetensors").is_file() && sft.join("config.json").is_file());
    assert!(sft.join("loss_curve.png").is_file());

    // Greedy samples are checked, and with --score the valid ones run in the sandbox.
    let samples = unitforge(&[
        "eval",
        "samples",
        "--model",
        sft.to_str().unwrap(),
        "--limit",
        "2",
        "--max-new-tokens",
        "16",
        "--score",
        "--executor",
        "local",
        "--workers",
        "1",
        "--json",
    ]);
    let report = json_of(&samples);
    assert_eq!(report["prompts"], 2);
    assert_eq!(report["samples"].as_array().unwrap().len(), 2);
    let scores = &report["scores"];
    assert_eq!(scores["scored"], report["valid_pytest"], "{scores}");
    assert!(scores["passing"].as_u64().unwrap() <= scores["scored"].as_u64().unwrap());

    // Offline inference: two modules, two samples each, one batch.
    let generated = json_of(&unitforge(&[
        "generate",
        "--model",
        sft.to_str().unwrap(),
        "--code",
        "data/pairs/clamp/clamp.py",
        "--code",
        "data/pairs/gcd_lcm/gcd_lcm.py",
        "--n",
        "2",
        "--max-new-tokens",
        "8",
        "--json",
    ]));
    let codes: Vec<&str> = generated
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "data/pairs/clamp/clamp.py",
            "data/pairs/clamp/clamp.py",
            "data/pairs/gcd_lcm/gcd_lcm.py",
            "data/pairs/gcd_lcm/gcd_lcm.py"
        ]
    );

    // Stage 2 from the SFT output, with the SFT output as an online teacher, then offline from
    // precomputed teacher log-probs.
    let distill = dir.path().join("distill");
    let short = |out: &std::path::Path| {
        vec![
            format!("base_model={}", model.display()),
            format!("output_dir={}", out.display()),
            "max_steps=2".into(),
            "batch_size=2".into(),
            "grad_accum=1".into(),
            "max_len=128".into(),
            "eval_batches=1".into(),
            "progress=false".into(),
        ]
    };
    let stage = |extra: Vec<String>| {
        let mut args = vec![
            "train".to_string(),
            "distill".into(),
            "--config".into(),
            "configs/distill_gkd.yaml".into(),
            "--json".into(),
        ];
        for set in extra {
            args.push("--set".into());
            args.push(set);
        }
        unitforge(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut sets = short(&distill);
    sets.push(format!("teacher_model={}", sft.display()));
    let run = stage(sets);
    let summary = json_of(&run);
    assert!(
        summary["final_eval"]["teacher_top1_agreement"].is_number(),
        "{summary}"
    );
    for line in std::fs::read_to_string(distill.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["loss", "ce", "jsd", "rkl"] {
            assert!(row[key].is_number(), "{key} in {line}");
        }
    }
    let with_teacher = dir.path().join("eval-teacher.jsonl");
    let logprobs = unitforge(&[
        "teacher-logprobs",
        "--teacher",
        sft.to_str().unwrap(),
        "--data",
        "data/corpus/eval.jsonl",
        "--out",
        with_teacher.to_str().unwrap(),
        "--max-len",
        "128",
        "--json",
    ]);
    let summary = json_of(&logprobs);
    assert_eq!(summary["rows"], 120);
    let offline = dir.path().join("offline");
    let mut sets = short(&offline);
    sets.extend([
        "teacher_model=null".to_string(),
        format!("train_data={}", with_teacher.display()),
    ]);
    let run = stage(sets);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let first = std::fs::read_to_string(offline.join("metrics.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(row["rkl"].is_number() && row.get("jsd").is_none(), "{row}");

    // Stage 3 from the distilled model, both branches' configs, scored by the local sandbox.
    let grpo = |config: &str, out: &std::path::Path, extra: &[&str]| {
        let mut args: Vec<String> = [
            "train",
            "grpo",
            "--config",
            config,
            "--executor",
            "local",
            "--json",
        ]
        .map(String::from)
        .to_vec();
        for set in [
            format!("base_model={}", distill.display()),
            format!("output_dir={}", out.display()),
            "max_steps=2".into(),
            "eval_every=2".into(),
            "full_finetune=false".into(),
            "batch_size=1".into(),
            "grpo.prompts_per_step=2".into(),
            "grpo.num_generations=2".into(),
            "grpo.max_completion_length=16".into(),
            "grpo.eval_prompts=2".into(),
            "reward.workers=1".into(),
            "progress=false".into(),
        ] {
            args.push("--set".into());
            args.push(set);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        unitforge(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for (config, name) in [
        ("configs/grpo_mutant_max.yaml", "grpo-mutant"),
        ("configs/grpo_speed_stable.yaml", "grpo-speed"),
    ] {
        let out = dir.path().join(name);
        let summary = json_of(&grpo(config, &out, &[]));
        assert_eq!(summary["steps"], 2);
        assert_eq!(summary["headline"], "eval_reward");
        assert!(
            summary["final_eval"]["eval_validity"].is_number(),
            "{summary}"
        );
        for file in [
            "model.safetensors",
            "adapter_model.safetensors",
            "metrics.jsonl",
            "eval.jsonl",
            "completions.jsonl",
            "reward_curve.png",
        ] {
            assert!(out.join(file).is_file(), "{name}: {file}");
        }
        for line in std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
        {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            for key in [
                "loss",
                "lr",
                "reward",
                "reward_std",
                "validity",
                "mutant_kill",
                "speed",
                "stability",
                "robustness",
                "kl",
                "clip_ratio",
                "completion_len",
                "truncated_frac",
                "frac_reward_zero_std",
                "frac_reward_zero_std_filtered",
                "infra_excluded",
                "gen_s",
                "reward_s",
                "reward_wait_s",
                "train_s",
                "tokens_per_s",
            ] {
                assert!(row[key].is_number(), "{key} in {line}");
            }
        }
    }
    // The reward section is a reward config: its unknown keys are named too.
    let bad = grpo(
        "configs/grpo_mutant_max.yaml",
        &dir.path().join("bad"),
        &["--set", "reward.wieghts.speed=1"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("wieghts"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn data_generate_keeps_only_suites_the_scorer_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out = unitforge(&[
        "data",
        "generate",
        "--out",
        dir.path().to_str().unwrap(),
        "--train",
        "12",
        "--held-out",
        "4",
        "--seed",
        "5",
        "--executor",
        "local",
        "--json",
    ]);
    let report = json_of(&out);
    assert_eq!(report["train"], 12);
    assert_eq!(report["held_out"], 4);
    assert_eq!(report["infra_errors"], 0);
    assert_eq!(
        report["valid"].as_u64().unwrap() + report["rejected"].as_u64().unwrap(),
        report["candidates"].as_u64().unwrap()
    );
    let rows = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (train, held_out) = (rows("train.jsonl"), rows("eval.jsonl"));
    assert_eq!((train.len(), held_out.len()), (12, 4));
    for row in train.iter().chain(&held_out) {
        for key in ["family", "module", "code", "chosen"] {
            assert!(row[key].is_string(), "{key}");
        }
        let kill = row["reference_kill_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&kill));
    }
    // No held-out module's code is also a training module's.
    for row in &held_out {
        assert!(train.iter().all(|t| t["code"] != row["code"]));
    }
    // What the generator wrote really passes: score one training pair again.
    let pair = dir.path().join("pair");
    std::fs::create_dir_all(&pair).unwrap();
    let module = train[0]["module"].as_str().unwrap();
    let code = pair.join(format!("{module}.py"));
    let tests = pair.join(format!("test_{module}.py"));
    std::fs::write(&code, train[0]["code"].as_str().unwrap()).unwrap();
    std::fs::write(&tests, train[0]["chosen"].as_str().unwrap()).unwrap();
    let scored = unitforge(&[
        "score",
        "--code",
        code.to_str().unwrap(),
        "--tests",
        tests.to_str().unwrap(),
        "--json",
        "--executor",
        "local",
    ]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&scored)).unwrap();
    assert_eq!(value["validity"], 1.0);
}

#[test]
fn bench_train_measures_every_mode_of_the_tiny_shape() {
    let out = unitforge(&[
        "bench",
        "train",
        "--shapes",
        "tiny",
        "--steps",
        "1",
        "--batch",
        "1",
        "--seq-len",
        "8",
        "--gen-tokens",
        "2",
        "--json",
    ]);
    let report = json_of(&out);
    assert!(report["matmul_peak_gflops"].as_f64().unwrap() > 0.0);
    let rows = report["candle"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert!(row["error"].is_null(), "{row}");
        assert!(row["peak_rss_mb"].as_f64().unwrap() > 0.0, "{row}");
        if row["mode"] == "generate" {
            assert!(row["gen_tokens_per_s_b8"].as_f64().unwrap() > 0.0, "{row}");
        } else {
            assert!(row["tokens_per_s"].as_f64().unwrap() > 0.0, "{row}");
        }
    }
    // The 4-bit base holds well under a third of the f32 base's bytes (f32 → 4.5 bits).
    let bytes = |mode: &str| {
        rows.iter().find(|r| r["mode"] == mode).unwrap()["decoder_linear_mb"]
            .as_f64()
            .unwrap()
    };
    assert!(
        bytes("qlora") < 0.2 * bytes("lora"),
        "{} vs {}",
        bytes("qlora"),
        bytes("lora")
    );
}

#[test]
fn bench_grpo_names_a_missing_llama_cpp_build_before_any_step() {
    let out = unitforge(&[
        "bench",
        "grpo",
        "--llama-cpp",
        "/nonexistent/llama.cpp",
        "--steps",
        "1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("llama-batched-bench") && stderr.contains("make llama-cpp"),
        "{stderr}"
    );
    // Neither the reference probe nor a step ran.
    assert!(
        !stderr.contains("measuring the generator") && !stderr.contains("GRPO steps"),
        "{stderr}"
    );
}

#[test]
fn bench_grpo_splits_a_tiny_step_and_measures_the_generator_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let model = model.to_str().unwrap();
    let init = unitforge(&[
        "init-model",
        "--config",
        "configs/model_tiny.yaml",
        "--out",
        model,
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = unitforge(&[
        "bench",
        "grpo",
        "--config",
        "configs/grpo_mutant_max.yaml",
        "--model",
        model,
        "--shape",
        "tiny",
        "--gen-tokens",
        "4",
        "--steps",
        "1",
        "--set",
        "reward.executor=local",
        "--set",
        "batch_size=1",
        "--set",
        "grpo.prompts_per_step=2",
        "--set",
        "grpo.num_generations=2",
        "--set",
        "grpo.max_completion_length=8",
        "--json",
    ]);
    let report = json_of(&out);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{report}");
    let step = &steps[0];
    assert_eq!(step["completions"], 4, "{step}");
    for key in [
        "step_s",
        "gen_s",
        "forward_s",
        "backward_s",
        "gen_tokens_per_s",
    ] {
        assert!(step[key].as_f64().unwrap() > 0.0, "{key}: {step}");
    }
    // The parts of the step fit inside it.
    let parts: f64 = [
        "gen_s",
        "reward_wait_s",
        "logprob_s",
        "forward_s",
        "backward_s",
        "optimizer_s",
    ]
    .iter()
    .map(|k| step[k].as_f64().unwrap())
    .sum();
    assert!(parts <= step["step_s"].as_f64().unwrap() * 1.001, "{step}");
    assert!(
        report["reference_gen_tokens_per_s_b8"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["gen_ratio"].as_f64().unwrap() > 0.0, "{report}");
}

/// `docker stop`, Kubernetes and Slurm stop a run with SIGTERM: a GRPO run against Docker
/// sandbox containers finishes its step, writes a checkpoint, stops its containers and exits 0.
#[test]
fn sigterm_stops_a_grpo_run_with_a_checkpoint_and_no_containers_left() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("grpo");
    let child = spawn_unitforge(&[
        "train",
        "grpo",
        "--config",
        "configs/grpo_mutant_max.yaml",
        "--set",
        &format!("base_model={}", model.display()),
        "--set",
        &format!("output_dir={}", out.display()),
        "--set",
        "max_steps=50",
        "--set",
        "save_every=50",
        "--set",
        "eval_every=50",
        "--set",
        "progress=false",
        "--set",
        "grpo.prompts_per_step=2",
        "--set",
        "grpo.num_generations=2",
        "--set",
        "grpo.max_completion_length=24",
        "--set",
        "grpo.eval_prompts=1",
        "--set",
        "reward.workers=2",
    ]);
    let pid = child.id();
    let metrics = out.join("metrics.jsonl");
    let output = terminate_once(child, 600, || {
        std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) > 0
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.contains("interrupted"), "{stderr}");
    let steps = std::fs::read_to_string(&metrics).unwrap().lines().count();
    assert!(steps < 50, "stopped early");
    assert!(
        out.join(format!("checkpoint-{steps:06}/trainable.safetensors"))
            .is_file(),
        "a checkpoint of the {steps} steps done"
    );
    // The run's sandbox containers are gone with it: removed by its shutdown (a loaded engine
    // may take a moment to finish a removal), not left running until another command reaps them.
    let exited = std::time::Instant::now();
    while !sandbox_containers_of(pid).is_empty() && exited.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        sandbox_containers_of(pid),
        Vec::<String>::new(),
        "containers left"
    );
}

/// SIGTERM to `child` once `ready()` holds (checked every 200 ms, up to `limit_s` seconds, the
/// child still running), and what it printed when it ended.
fn terminate_once(
    child: std::process::Child,
    limit_s: u64,
    ready: impl Fn() -> bool,
) -> std::process::Output {
    let mut child = child;
    let started = std::time::Instant::now();
    while !ready() {
        assert!(
            started.elapsed().as_secs() < limit_s,
            "not ready in {limit_s} s"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    child.wait_with_output().unwrap()
}

/// The sandbox containers process `pid` started (named unitforge-<pid>-…), running or not.
fn sandbox_containers_of(pid: u32) -> Vec<String> {
    let prefix = format!("unitforge-{pid}-");
    let listed = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|n| n.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// A delivery evaluation stopped by SIGTERM (as `docker stop` and Kubernetes stop a run) has no
/// step to finish: it removes its warm sandbox containers before it ends (status 130), instead
/// of leaving them up until another start reaps them as stale.
#[test]
fn sigterm_stops_a_delivery_evaluation_and_removes_its_containers() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let child = spawn_unitforge(&[
        "eval",
        "deliver",
        "--model",
        model.to_str().unwrap(),
        "--n",
        "2",
        "--max-new-tokens",
        "24",
        "--workers",
        "2",
        "--out",
        dir.path().join("delivered.json").to_str().unwrap(),
    ]);
    let pid = child.id();
    let output = terminate_once(child, 300, || !sandbox_containers_of(pid).is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("removing this run's sandbox containers"),
        "{stderr}"
    );
    // Removed before the process ended: nothing to wait for.
    assert_eq!(
        sandbox_containers_of(pid),
        Vec::<String>::new(),
        "containers left"
    );
}

/// A LoRA run's adapter exported in bf16 and merged into its base: the merged model computes
/// what the base with the adapter computes, and the bf16 copy nearly so.
#[test]
fn adapters_export_in_bf16_and_merge_into_their_base() {
    use candle_core::{Device, Tensor};
    use unitforge_trainer::model::decoder::Model;

    let dir = tempfile::tempdir().unwrap();
    let base = tiny_model(dir.path());
    let run = dir.path().join("lora");
    let base_set = format!("base_model={}", base.display());
    let out_set = format!("output_dir={}", run.display());
    let trained = unitforge(&[
        "train",
        "sft",
        "--config",
        "configs/sft.yaml",
        "--json",
        "--set",
        &base_set,
        "--set",
        &out_set,
        "--set",
        "max_steps=3",
        "--set",
        "batch_size=2",
        "--set",
        "grad_accum=1",
        "--set",
        "max_len=64",
        "--set",
        "eval_batches=1",
        "--set",
        "progress=false",
        "--set",
        "full_finetune=false",
        "--set",
        "learning_rate=0.05",
    ]);
    json_of(&trained);
    let exported = dir.path().join("exported");
    let merged = dir.path().join("merged");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = unitforge(&[
        "adapter",
        "export",
        "--from",
        &path(&run),
        "--out",
        &path(&exported),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weights =
        candle_core::safetensors::load(exported.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(!weights.is_empty());
    assert!(weights
        .values()
        .all(|t| t.dtype() == candle_core::DType::BF16));
    let out = unitforge(&[
        "adapter",
        "merge",
        "--model",
        &path(&base),
        "--adapter",
        &path(&run),
        "--out",
        &path(&merged),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ids = Tensor::new(&[[5u32, 17, 42, 7, 99, 3]], &Device::Cpu).unwrap();
    let logits = |model: &Model| {
        model
            .forward(&ids, 0, None, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let with_adapter = logits(&Model::load_for_inference(&base, Some(&run), &Device::Cpu).unwrap());
    let plain = logits(&Model::load_for_inference(&base, None, &Device::Cpu).unwrap());
    let from_merged = logits(&Model::load_for_inference(&merged, None, &Device::Cpu).unwrap());
    let from_bf16 =
        logits(&Model::load_for_inference(&base, Some(&exported), &Device::Cpu).unwrap());
    let gap = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(
        gap(&with_adapter, &plain) > 1e-3,
        "the adapter changes the logits"
    );
    assert!(
        gap(&with_adapter, &from_merged) < 1e-4,
        "{}",
        gap(&with_adapter, &from_merged)
    );
    assert!(
        gap(&with_adapter, &from_bf16) < 0.05 * gap(&with_adapter, &plain),
        "bf16 {} against the adapter's effect {}",
        gap(&with_adapter, &from_bf16),
        gap(&with_adapter, &plain)
    );
}

/// `eval all` writes K suites per row, each scored as written and pruned with intervals over
/// rows, and the same seed gives the same suites.
#[test]
fn eval_all_scores_k_suites_per_row_both_ways_and_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let run = |name: &str| {
        let out = dir.path().join(name).join("eval_report.json");
        let output = unitforge(&[
            "eval",
            "all",
            "--model",
            model.to_str().unwrap(),
            "--limit",
            "3",
            "--samples",
            "2",
            "--max-new-tokens",
            "12",
            "--executor",
            "local",
            "--workers",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        json_of(&output)
    };
    let (a, b) = (run("a"), run("b"));
    let rows = a["per_row"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["tests"].as_array().unwrap().len(), 2);
        assert!(row["samples"][0]["pruned"].is_object(), "{row}");
    }
    assert_eq!(a["per_row"][0]["tests"], b["per_row"][0]["tests"]);
    assert_eq!(a["per_row"][2]["tests"], b["per_row"][2]["tests"]);
    assert!(a["pruned"]["reference"]["mean_kill_rate"].as_f64().unwrap() > 0.3);
    assert!(a["reference"]["mean_kill_rate_ci"]["low"].is_number());
    let compared = unitforge(&[
        "eval",
        "compare",
        dir.path().join("a").to_str().unwrap(),
        dir.path().join("b").to_str().unwrap(),
    ]);
    let text = stdout(&compared);
    assert!(text.contains("pruned mean composite"), "{text}");
}

#[test]
fn deliver_writes_nothing_when_no_suite_passes_and_wants_one_module() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("test_clamp.py");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--deliver",
            "--model",
            model.to_str().unwrap(),
            "--code",
            "data/pairs/clamp/clamp.py",
            "--out",
            out.to_str().unwrap(),
            "--executor",
            "local",
            "--max-new-tokens",
            "24",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        unitforge(&refs)
    };
    let two = run(args(&["--code", "data/pairs/roman/roman.py"]));
    assert!(!two.status.success());
    assert!(String::from_utf8_lossy(&two.stderr).contains("exactly one --code"));
    // A model of random weights writes no test that passes: a clear failure, no file.
    let failed = run(args(&[
        "--n",
        "2",
        "--oracle-repair",
        "--fix-rounds",
        "1",
        "--json",
    ]));
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("no suite kept a passing test"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&failed)).unwrap();
    assert!(report["tests"].is_null());
    assert!(report["candidates"].as_array().unwrap().len() >= 2);
    assert!(!out.exists());
}

#[test]
fn fix_rows_come_from_suites_that_really_fail() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fix.jsonl");
    let run = unitforge(&[
        "data",
        "fix-rows",
        "--data",
        "data/sft/eval.jsonl",
        "--out",
        out.to_str().unwrap(),
        "--executor",
        "local",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 6, "{} rows", rows.len());
    for pair in rows.chunks(2) {
        assert_eq!(
            (pair[0]["task"].as_str(), pair[1]["task"].as_str()),
            (Some("fix"), Some("diagnose"))
        );
        let prompt = pair[0]["prompt"].as_str().unwrap();
        // The failure text is the sandbox's, without its frames.
        assert!(prompt.contains("Failure:"), "{prompt}");
        assert!(!prompt.contains("unitforge_runner"), "{prompt}");
        assert_ne!(pair[0]["tests"], pair[0]["chosen"]);
    }
    // `eval fix` answers each fix row (not the diagnose rows) and reports what it answered.
    let model = tiny_model(dir.path());
    let fixed = unitforge(&[
        "eval",
        "fix",
        "--model",
        model.to_str().unwrap(),
        "--data",
        out.to_str().unwrap(),
        "--limit",
        "3",
        "--max-new-tokens",
        "12",
        "--executor",
        "local",
        "--json",
    ]);
    let report = json_of(&fixed);
    assert_eq!(report["rows"], 3);
    assert_eq!(report["per_row"].as_array().unwrap().len(), 3);
    assert_eq!(report["answers"].as_array().unwrap().len(), 3);
    assert!(report["answers"][0].is_string());
}
