//! The Redis seam against a real Redis, for both clients: each operation's reply, read back
//! with the other operations. Needs Redis at IDEMBENCH_REDIS_URL (default
//! redis://127.0.0.1:6379; `scripts/services up`).

use std::time::Duration;

use idembench::redis::{self, KeyState, RedisClientKind, RedisSettings};

fn settings() -> RedisSettings {
    RedisSettings {
        url: std::env::var("IDEMBENCH_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string()),
        connections: 2,
        connect_timeout: Duration::from_secs(3),
        command_timeout: Duration::from_secs(2),
        wait: None,
    }
}

const TTL: Duration = Duration::from_secs(30);

/// The pipelined claim answers what GET, then SET NX PX, would: a fresh key is created and
/// reported absent; a held key is left as it is and its state reported.
async fn pipelined_claim(kind: RedisClientKind) {
    let ops = redis::connect(kind, &settings()).await.unwrap_or_else(|e| {
        panic!("{e}\n(start Redis with `scripts/services up`, or set IDEMBENCH_REDIS_URL)")
    });
    let key = format!(
        "idembench:test:pipeline:{}:{}",
        kind.name(),
        std::process::id()
    );
    let claim = || ops.get_then_set_nx_px(&key, KeyState::Processing, TTL);

    assert_eq!(
        claim().await.unwrap(),
        (None, true),
        "a fresh key is claimed"
    );
    assert_eq!(ops.get(&key).await.unwrap(), Some(KeyState::Processing));
    assert_eq!(
        claim().await.unwrap(),
        (Some(KeyState::Processing), false),
        "a held claim is not taken twice"
    );
    ops.set_px(&key, KeyState::Done, TTL).await.unwrap();
    assert_eq!(
        claim().await.unwrap(),
        (Some(KeyState::Done), false),
        "a DONE key is reported, not overwritten"
    );
    assert_eq!(ops.get(&key).await.unwrap(), Some(KeyState::Done));
    assert_eq!(ops.counters().values().errors, 0);

    // An expired key is claimable again, in one round trip.
    ops.set_px(&key, KeyState::Done, Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(claim().await.unwrap(), (None, true));
    ops.set_px(&key, KeyState::Done, Duration::from_millis(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_pipelined_claim_on_redis_rs_answers_as_two_steps() {
    pipelined_claim(RedisClientKind::RedisRs).await;
}

#[tokio::test]
async fn the_pipelined_claim_on_fred_answers_as_two_steps() {
    pipelined_claim(RedisClientKind::Fred).await;
}
