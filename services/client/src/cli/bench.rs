//! `reinado bench`: a closed-loop load generator. N clients each send one request, wait for the answer, and
//! send the next, for a duration or a count; latencies go into HdrHistograms, merged at the end into
//! throughput and percentiles.

use super::ConsistencyArg;
use super::bench_api::{Api, Target};
use super::output::{Out, table};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use reinado_client::Client;
use reinado_proto::v1::Consistency;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the benchmark sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Puts of random keys.
    Put,
    /// Gets of random keys (written first).
    Get,
    /// Gets and puts, `--read-ratio` of them gets.
    Mixed,
    /// Compare-and-swap transactions, each client on its own keys.
    Txn,
}

/// `reinado bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The API to send them through: Reinado's own, or etcd's v3 KV (to measure etcd itself too).
    #[arg(long, value_enum, default_value = "reinado")]
    pub api: Api,
    /// The requests to send.
    #[arg(long, value_enum, default_value = "put")]
    pub workload: Workload,
    /// Read consistency for gets.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ConsistencyArg,
    /// Share of gets in the mixed workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Concurrent clients, each with its own connections, one request in flight each.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Run for this many seconds (unless --count).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many requests in all (instead of --duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// The keys were written by an earlier run: gets do not write them first (so that what is measured
    /// around the run, such as the servers' CPU time, is the gets alone).
    #[arg(long)]
    pub prefilled: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// A tiny per-client PRNG (xorshift): keys need spreading, not cryptography.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct Shared {
    args: BenchArgs,
    value: Vec<u8>,
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    /// Claims the next request, or says stop.
    fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.args.count {
            Some(count) => self.done.fetch_add(1, Ordering::Relaxed) < count,
            None => {
                self.done.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }
}

fn key(k: u64) -> Vec<u8> {
    format!("bench/{k:08}").into_bytes()
}

/// One closed-loop client.
async fn client_loop(id: usize, mut target: Target, shared: Arc<Shared>) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let a = &shared.args;
    let consistency = Consistency::from(a.consistency);
    let mut last: Vec<Option<Vec<u8>>> = vec![None; 16];
    let mut n = 0u64;
    while shared.next() {
        let started = Instant::now();
        let read = match a.workload {
            Workload::Get => true,
            Workload::Mixed => (rng.below(10_000) as f64) < a.read_ratio * 10_000.0,
            Workload::Put | Workload::Txn => false,
        };
        let ok = if a.workload == Workload::Txn {
            let slot = rng.below(16) as usize;
            let k = format!("bench/txn/{id}/{slot}").into_bytes();
            n += 1;
            let new = format!("{n}").into_bytes();
            let swapped = target
                .cas(k, last[slot].as_deref(), new.clone())
                .await
                .unwrap_or(false);
            if swapped {
                last[slot] = Some(new);
            }
            swapped
        } else if read {
            target
                .get(key(rng.below(a.keys)), consistency)
                .await
                .is_ok()
        } else {
            target
                .put(key(rng.below(a.keys)), &shared.value)
                .await
                .is_ok()
        };
        let micros = started.elapsed().as_micros().max(1) as u64;
        if ok {
            hist.saturating_record(micros);
        } else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    hist
}

/// A connection per bench client, each starting at a different endpoint so connections and reads spread.
fn targets(base: &Client, api: Api, n: usize) -> Result<Vec<Target>, reinado_client::ClientError> {
    (0..n)
        .map(|i| Target::new(api, base.endpoints(), i))
        .collect()
}

/// Writes every key once so gets find something.
async fn prefill(
    targets: &[Target],
    keys: u64,
    value: &[u8],
) -> Result<(), reinado_client::ClientError> {
    let per = keys.div_ceil(targets.len() as u64);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let (mut t, value) = (t.clone(), value.to_vec());
        let range = (i as u64 * per)..((i as u64 + 1) * per).min(keys);
        tasks.spawn(async move {
            for k in range {
                t.put(key(k), &value).await?;
            }
            Ok::<(), reinado_client::ClientError>(())
        });
    }
    for r in tasks.join_all().await {
        r?;
    }
    Ok(())
}

pub async fn run(base: &Client, out: &Out, args: BenchArgs) -> u8 {
    if args.clients == 0 || args.keys == 0 || !(0.0..=1.0).contains(&args.read_ratio) {
        return out.error(&reinado_client::ClientError::InvalidArgument(
            "--clients and --keys must be positive and --read-ratio within 0..1".into(),
        ));
    }
    let clients = match targets(base, args.api, args.clients) {
        Ok(c) => c,
        Err(e) => return out.error(&e),
    };
    let value = vec![b'x'; args.value_size];
    if matches!(args.workload, Workload::Get | Workload::Mixed) && !args.prefilled {
        if !out.is_json() {
            eprintln!("writing {} keys first...", args.keys);
        }
        if let Err(e) = prefill(&clients, args.keys, &value).await {
            return out.error(&e);
        }
    }
    let progress = !(args.no_progress || out.is_json());
    let shared = Arc::new(Shared {
        args,
        value,
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.spawn(client_loop(i, c, shared.clone()));
    }
    let bar = progress_bar(&shared, progress);
    let watcher = {
        let shared = shared.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            let limit = Duration::from_secs(shared.args.duration);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = shared.done.load(Ordering::Relaxed);
                match shared.args.count {
                    Some(count) => bar.set_position(done.min(count)),
                    None => bar.set_position(started.elapsed().as_secs().min(limit.as_secs())),
                }
                bar.set_message(format!("{done} requests"));
                if shared.args.count.is_none() && started.elapsed() >= limit {
                    shared.stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        })
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
    for h in tasks.join_all().await {
        hist.add(&h).expect("histograms with the same bounds");
    }
    let elapsed = started.elapsed();
    watcher.abort();
    bar.finish_and_clear();
    report(out, &shared, &hist, elapsed);
    0
}

fn progress_bar(shared: &Shared, visible: bool) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let len = shared.args.count.unwrap_or(shared.args.duration);
    let bar = indicatif::ProgressBar::new(len);
    let unit = if shared.args.count.is_some() {
        "requests"
    } else {
        "s"
    };
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} [{{bar:40}}] {{pos}}/{{len}} {unit}  {{msg}}"
    ))
    .expect("a valid progress template");
    bar.set_style(style);
    bar
}

fn report(out: &Out, shared: &Shared, hist: &Histogram<u64>, elapsed: Duration) {
    let a = &shared.args;
    let ok = hist.len();
    let errors = shared.errors.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed.as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let workload = format!("{:?}", a.workload).to_lowercase();
    let j = json!({
        "workload": workload,
        "api": format!("{:?}", a.api).to_lowercase(),
        "consistency": format!("{:?}", a.consistency).to_lowercase(),
        "clients": a.clients,
        "value_size": a.value_size,
        "requests": ok,
        "errors": errors,
        "seconds": elapsed.as_secs_f64(),
        "throughput": rate,
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
            "max": hist.max() as f64 / 1000.0,
        },
    });
    out.show(j, || {
        let row = vec![
            workload.clone(),
            a.clients.to_string(),
            ok.to_string(),
            errors.to_string(),
            format!("{:.1}", elapsed.as_secs_f64()),
            format!("{rate:.0}"),
            format!("{:.2}", ms(0.5)),
            format!("{:.2}", ms(0.9)),
            format!("{:.2}", ms(0.99)),
            format!("{:.2}", ms(0.999)),
            format!("{:.2}", hist.max() as f64 / 1000.0),
        ];
        table(
            &[
                "WORKLOAD", "CLIENTS", "REQUESTS", "ERRORS", "SECONDS", "REQ/S", "P50 MS",
                "P90 MS", "P99 MS", "P99.9 MS", "MAX MS",
            ],
            &[row],
        )
    });
}
