//! redis-rs against fred on the command sequences the strategies send, through the same
//! `RedisOps` seam the strategies use, on a real Redis (IDEMBENCH_REDIS_URL, default
//! redis://127.0.0.1:6379; `scripts/services up` starts one):
//!
//! - `redis-only`: GET, SET NX PX (PROCESSING), SET PX (DONE) — three round trips a message;
//! - `redis-only --redis-pipeline`: GET and SET NX PX in one pipeline, SET PX — three commands
//!   in two round trips;
//! - `redis-only-atomic`: SET NX PX GET, SET PX — two;
//!
//! each one message at a time and at 16 and 64 messages in flight (concurrent tasks on one
//! client, as a processor's workers share it). Throughput is in messages. Keys are fresh per
//! message, under a prefix of their own, and expire within a minute.
//!
//! `cargo bench --bench redis_clients`; CI compiles it (`cargo bench --no-run`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use idembench::redis::{self, KeyState, RedisClientKind, RedisOps, RedisSettings};

const TTL: Duration = Duration::from_secs(60);

fn connect(runtime: &tokio::runtime::Runtime, kind: RedisClientKind) -> Arc<dyn RedisOps> {
    let url = std::env::var("IDEMBENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let settings = RedisSettings {
        url,
        connections: 1,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(2),
        wait: None,
    };
    runtime
        .block_on(redis::connect(kind, &settings))
        .unwrap_or_else(|error| {
            panic!("{error}\n  hint: start Redis with `scripts/services up`, or set IDEMBENCH_REDIS_URL")
        })
}

/// One message's commands, as redis-only sends them.
async fn two_step(redis: &dyn RedisOps, key: &str) {
    assert_eq!(redis.get(key).await.expect("GET"), None);
    assert!(
        redis
            .set_nx_px(key, KeyState::Processing, TTL)
            .await
            .expect("SET NX")
    );
    redis
        .set_px(key, KeyState::Done, TTL)
        .await
        .expect("SET PX");
}

/// One message's commands, as redis-only sends them with `--redis-pipeline`.
async fn pipelined(redis: &dyn RedisOps, key: &str) {
    assert_eq!(
        redis
            .get_then_set_nx_px(key, KeyState::Processing, TTL)
            .await
            .expect("GET + SET NX"),
        (None, true)
    );
    redis
        .set_px(key, KeyState::Done, TTL)
        .await
        .expect("SET PX");
}

/// One message's commands, as redis-only-atomic sends them.
async fn atomic(redis: &dyn RedisOps, key: &str) {
    assert_eq!(
        redis
            .set_nx_px_get(key, KeyState::Processing, TTL)
            .await
            .expect("SET NX GET"),
        None
    );
    redis
        .set_px(key, KeyState::Done, TTL)
        .await
        .expect("SET PX");
}

fn clients(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let next = AtomicU64::new(0);
    let prefix = format!("idembench:bench:{}:", std::process::id());
    for name in [
        "redis-only",
        "redis-only --redis-pipeline",
        "redis-only-atomic",
    ] {
        let mut group = c.benchmark_group(format!("{name} sequence"));
        group.measurement_time(Duration::from_secs(4));
        for kind in [RedisClientKind::RedisRs, RedisClientKind::Fred] {
            let redis = connect(&runtime, kind);
            for in_flight in [1usize, 16, 64] {
                group.throughput(Throughput::Elements(in_flight as u64));
                group.bench_with_input(
                    BenchmarkId::new(kind.name(), format!("{in_flight} in flight")),
                    &in_flight,
                    |b, &in_flight| {
                        b.to_async(&runtime).iter(|| {
                            let redis = redis.clone();
                            let keys: Vec<String> = (0..in_flight)
                                .map(|_| {
                                    format!("{prefix}{}", next.fetch_add(1, Ordering::Relaxed))
                                })
                                .collect();
                            async move {
                                let messages = keys.iter().map(|key| {
                                    let redis = redis.clone();
                                    async move {
                                        match name {
                                            "redis-only" => two_step(redis.as_ref(), key).await,
                                            "redis-only-atomic" => {
                                                atomic(redis.as_ref(), key).await
                                            }
                                            _ => pipelined(redis.as_ref(), key).await,
                                        }
                                    }
                                });
                                futures::future::join_all(messages).await;
                            }
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, clients);
criterion_main!(benches);
