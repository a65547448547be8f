//! Cluster-mode harness shared by the suites that run several bridges on one real
//! `redis-server`: instance settings, start-up, and waits on what `/ready` and `Status` say.

use std::time::Duration;

use socket_bridge::proto;

use super::{API_KEY, Bridge, call, eventually, fast_timings, settings};

/// Deadline for anything that crosses Redis; a wait ends as soon as its condition holds.
pub const PROPAGATION: Duration = Duration::from_secs(30);

/// Settings of one cluster instance: the shared Redis at `redis_url`, the test API key, dev
/// auth (user id from `auth.userId`), short heartbeats, then `extra` (later settings win).
pub fn instance_args(redis_url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = base_args(redis_url);
    args.extend(fast_timings());
    args.extend(settings(extra));
    args
}

/// As [`instance_args`], with the default Socket.IO timings (25 s ping interval).
pub fn instance_args_default_timings(redis_url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = base_args(redis_url);
    args.extend(settings(extra));
    args
}

fn base_args(redis_url: &str) -> Vec<String> {
    settings(&[&format!("redis.url={redis_url}"), &format!("grpc.api_keys=[\"{API_KEY}\"]")])
}

/// Starts one instance per entry of `extras`, all at once, on the Redis at `redis_url`.
pub async fn start_instances(redis_url: &str, extras: &[&[&str]]) -> Vec<Bridge> {
    let args: Vec<Vec<String>> = extras.iter().map(|extra| instance_args(redis_url, extra)).collect();
    futures::future::join_all(args.iter().map(|a| Bridge::start(a))).await
}

/// The instance id `bridge` reports in `Status`.
pub async fn instance_id(bridge: &Bridge) -> String {
    call("Status", bridge.client().await.status(proto::StatusRequest {})).await.instance_id
}

/// Waits until `GET /ready` on `bridge` shows `redis` = `want`.
pub async fn wait_redis_state(bridge: &Bridge, want: &str, limit: Duration) {
    eventually(&format!("GET /ready shows redis {want:?}"), limit, || async {
        let got = bridge.redis_state().await;
        if got == want { Ok(()) } else { Err(got) }
    })
    .await;
}
