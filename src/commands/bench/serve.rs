//! `unitforge bench serve`: the reward service's latency and throughput under concurrent
//! clients, with the cache cold and warm.

use std::time::Instant;

use anyhow::Result;
use futures::StreamExt;
use unitforge_sandbox::api::ScoreRequest;
use unitforge_sandbox::backend::start_scorer;
use unitforge_sandbox::cache::ResultCache;
use unitforge_sandbox::client::{Client, ClientOptions};
use unitforge_sandbox::executor::{ExecutorKind, ExecutorOptions};
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::service::{Service, ServiceLimits};

use super::pairs::load_pairs;
use crate::cli::BenchServeArgs;
use crate::commands::notice;

#[derive(serde::Serialize)]
pub(super) struct ServeFigures {
    mode: &'static str,
    candidates: usize,
    candidates_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Send every request through a fresh in-process service on `options`' pool and time it;
/// with `repeat_cached`, send them all once more and time the cache hits too.
pub(super) async fn serve_round(
    mode: &'static str,
    options: &ExecutorOptions,
    requests: &[ScoreRequest],
    concurrency: usize,
    repeat_cached: bool,
) -> Result<Vec<ServeFigures>> {
    let (scorer, identity) = start_scorer(options, &notice).await?;
    let cache = ResultCache::open(None, 100_000)?;
    let service = Service::new(
        scorer,
        identity,
        Some(cache),
        RewardConfig::default(),
        ServiceLimits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(listener, async {
        let _ = stopped.await;
    }));
    let client = Client::new(
        vec![url],
        ClientOptions {
            concurrency,
            ..ClientOptions::default()
        },
    )?;
    let mut figures = Vec::new();
    let rounds: &[&'static str] = if repeat_cached {
        &[mode, "cache hit"]
    } else {
        &[mode]
    };
    for &round in rounds {
        let started = Instant::now();
        let latencies: Vec<Result<f64>> = futures::stream::iter(requests)
            .map(|request| {
                let client = &client;
                async move {
                    let sent = Instant::now();
                    client.score(request).await?;
                    Ok(sent.elapsed().as_secs_f64() * 1000.0)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let wall = started.elapsed().as_secs_f64();
        let mut latencies = latencies.into_iter().collect::<Result<Vec<f64>>>()?;
        latencies.sort_by(f64::total_cmp);
        let at = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        figures.push(ServeFigures {
            mode: round,
            candidates: latencies.len(),
            candidates_per_second: latencies.len() as f64 / wall,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        });
    }
    let _ = stop.send(());
    task.await??;
    Ok(figures)
}

pub(super) async fn bench_serve(args: BenchServeArgs) -> Result<()> {
    let pairs = load_pairs(&args.pairs)?;
    let requests: Vec<ScoreRequest> = pairs
        .into_iter()
        .take(args.limit.max(1))
        .map(|pair| ScoreRequest {
            id: Some(pair.name),
            module: pair.input.module,
            code: pair.input.code,
            tests: pair.input.tests,
            config: None,
            no_cache: false,
        })
        .collect();
    let base = ExecutorOptions {
        workers: args.workers,
        ..ExecutorOptions::default()
    };
    let mut figures = Vec::new();
    eprintln!("warm container pool …");
    figures.extend(
        serve_round(
            "warm pool (docker)",
            &base,
            &requests,
            args.concurrency,
            true,
        )
        .await?,
    );
    eprintln!("a fresh container per run …");
    let fresh = ExecutorOptions {
        recycle_after: 1,
        ..base.clone()
    };
    figures.extend(
        serve_round(
            "fresh container per run",
            &fresh,
            &requests,
            args.concurrency,
            false,
        )
        .await?,
    );
    eprintln!("local executor …");
    let local = ExecutorOptions {
        kind: ExecutorKind::Local,
        ..base.clone()
    };
    figures
        .extend(serve_round("local executor", &local, &requests, args.concurrency, false).await?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    println!("\nunitforge bench serve: {} pairs through the service, {} workers, {} requests in flight\n", requests.len(), args.workers, args.concurrency);
    println!(
        "{:<26} {:>12} {:>10} {:>10}",
        "mode", "candidates/s", "p50 ms", "p99 ms"
    );
    for row in &figures {
        println!(
            "{:<26} {:>12.2} {:>10.0} {:>10.0}",
            row.mode, row.candidates_per_second, row.p50_ms, row.p99_ms
        );
    }
    let rate = |mode: &str| {
        figures
            .iter()
            .find(|f| f.mode.starts_with(mode))
            .map_or(f64::NAN, |f| f.candidates_per_second)
    };
    println!(
        "\nwarm pool vs local executor: {:.2}× the local time; warm pool vs a fresh container per run: {:.1}× faster",
        rate("local") / rate("warm"),
        rate("warm") / rate("fresh")
    );
    Ok(())
}
