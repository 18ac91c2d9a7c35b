//! The fault injector: a schedule drawn from the seed, executed against the emulator, the
//! store's proxy and the replica processes — and, for each fault, evidence that it really
//! hit something (a fault queued that no request met was not injected).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use iamport_mock::proxy::FreezableProxy;
use iamport_mock::{Emulator, Endpoint};

use crate::bounds;
use crate::fleet::Replica;

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// A burst of 5xx from PortOne's lookups (v1 and v2).
    Upstream5xx,
    /// A burst of 200s with a body that is not JSON.
    GarbageBodies,
    /// A burst of lookups whose connection is closed unanswered.
    DroppedConnections,
    /// Every answer delayed beyond the client's timeout for a few seconds.
    LatencySpike,
    /// The v1 token revoked: the next lookups get 401.
    TokenRevoked,
    /// The unique store stalls (the proxy in front of it freezes, or Redis Cluster pauses
    /// its clients) for longer than the store bound.
    StoreStall,
    /// One replica killed with SIGKILL, then started again.
    ReplicaKilled,
}

impl Fault {
    pub(crate) const ALL: [Self; 7] = [
        Self::Upstream5xx,
        Self::GarbageBodies,
        Self::DroppedConnections,
        Self::LatencySpike,
        Self::TokenRevoked,
        Self::StoreStall,
        Self::ReplicaKilled,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Upstream5xx => "upstream 5xx burst",
            Self::GarbageBodies => "upstream garbage bodies",
            Self::DroppedConnections => "dropped upstream connections",
            Self::LatencySpike => "latency spike > client timeout",
            Self::TokenRevoked => "token revoked",
            Self::StoreStall => "store stall",
            Self::ReplicaKilled => "replica SIGKILL + restart",
        }
    }
}

/// The schedule: every kind in a shuffled round, rounds repeated, a gap drawn around a mean
/// before each fault, until 10 s before the end (so the last fault's effects settle under
/// load). Every kind comes once before any comes twice; the mean gap (2–8 s) is chosen so
/// that even a short run holds at least two rounds.
pub(crate) fn schedule(seed: u64, run: Duration) -> Vec<(Duration, Fault)> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_fa17);
    let end = run.saturating_sub(Duration::from_secs(10));
    let mut at = Duration::from_secs(5);
    let usable = end.saturating_sub(at).as_millis();
    let rounds = 2 * Fault::ALL.len() as u128;
    let mean = u64::try_from(usable / rounds)
        .unwrap_or(8_000)
        .clamp(2_000, 8_000);
    let mut out = Vec::new();
    'rounds: loop {
        let mut round = Fault::ALL;
        rng.shuffle(&mut round);
        for fault in round {
            at += Duration::from_millis(rng.u64(mean / 2..mean * 3 / 2));
            if at > end {
                break 'rounds;
            }
            out.push((at, fault));
        }
    }
    out
}

/// What the injector did: per kind, faults attempted and faults with evidence of effect.
#[derive(Debug, Default, Clone)]
pub(crate) struct Injected {
    pub(crate) attempted: BTreeMap<Fault, u64>,
    pub(crate) effective: BTreeMap<Fault, u64>,
    /// Problems running the injector itself (a replica that would not restart, …).
    pub(crate) errors: Vec<String>,
}

/// How the store is stalled.
#[derive(Debug)]
pub(crate) enum Stall {
    /// Freeze the proxy the replicas reach the store through.
    Proxy(Arc<FreezableProxy>),
    /// `CLIENT PAUSE … ALL` on every Redis Cluster node (the cluster client talks to the
    /// nodes' announced addresses, which a proxy in front of one seed would not cover).
    ClusterPause(Vec<String>),
}

/// Runs the schedule from `start`; returns what was injected.
pub(crate) async fn inject(
    schedule: Vec<(Duration, Fault)>,
    start: Instant,
    seed: u64,
    emulator: Arc<Emulator>,
    stall: Arc<Stall>,
    replicas: Vec<Arc<Replica>>,
) -> Injected {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xfa17_0001);
    let mut injected = Injected::default();
    for (at, fault) in schedule {
        tokio::time::sleep_until((start + at).into()).await;
        *injected.attempted.entry(fault).or_default() += 1;
        let outcome = match fault {
            Fault::Upstream5xx => {
                burst(&emulator, &mut rng, |e, endpoint, n| {
                    e.fail_next(endpoint, n, StatusCode::SERVICE_UNAVAILABLE);
                })
                .await
            }
            Fault::GarbageBodies => {
                burst(&emulator, &mut rng, |e, endpoint, n| {
                    e.garbage_next(endpoint, n);
                })
                .await
            }
            Fault::DroppedConnections => {
                burst(&emulator, &mut rng, |e, endpoint, n| {
                    e.drop_next(endpoint, n);
                })
                .await
            }
            Fault::LatencySpike => {
                let before = lookups(&emulator);
                let extra = Duration::from_millis(rng.u64(200..1500));
                emulator.set_latency(bounds::UPSTREAM_TIMEOUT + extra);
                tokio::time::sleep(Duration::from_millis(rng.u64(2_000..5_000))).await;
                emulator.set_latency(Duration::ZERO);
                Ok(lookups(&emulator) > before)
            }
            Fault::TokenRevoked => {
                let before = emulator.rejected_tokens();
                emulator.revoke_token();
                Ok(within(Duration::from_secs(15), || {
                    emulator.rejected_tokens() > before
                })
                .await)
            }
            Fault::StoreStall => {
                let hold = Duration::from_millis(rng.u64(2_000..6_000));
                stall_store(&stall, hold).await
            }
            Fault::ReplicaKilled => {
                let victim = &replicas[rng.usize(0..replicas.len())];
                if replicas.iter().all(|r| r.is_up()) {
                    kill_and_restart(victim).await
                } else {
                    Err("a replica was already down".to_owned())
                }
            }
        };
        match outcome {
            Ok(true) => *injected.effective.entry(fault).or_default() += 1,
            Ok(false) => {}
            Err(error) => injected
                .errors
                .push(format!("{} at {at:?}: {error}", fault.name())),
        }
    }
    injected
}

fn lookups(emulator: &Emulator) -> u64 {
    emulator.calls(Endpoint::GetCertification) + emulator.calls(Endpoint::GetIdentityVerification)
}

/// Queues `n` faults on each lookup endpoint and waits (up to 20 s) for requests to meet
/// them; effective when at least one did. Leftovers are cleared, so bursts never pile up.
async fn burst(
    emulator: &Emulator,
    rng: &mut fastrand::Rng,
    queue: impl Fn(&Emulator, Endpoint, u32),
) -> Result<bool, String> {
    let n = rng.u32(3..12);
    queue(emulator, Endpoint::GetCertification, n);
    queue(emulator, Endpoint::GetIdentityVerification, n);
    let queued = u64::from(n) * 2;
    within(Duration::from_secs(20), || emulator.pending_faults() == 0).await;
    let met = queued.saturating_sub(emulator.pending_faults());
    emulator.clear_faults();
    Ok(met > 0)
}

async fn stall_store(stall: &Stall, hold: Duration) -> Result<bool, String> {
    match stall {
        Stall::Proxy(proxy) => {
            let before = proxy.bytes_held();
            proxy.freeze();
            tokio::time::sleep(hold).await;
            let held = proxy.bytes_held() > before;
            proxy.thaw();
            Ok(held)
        }
        Stall::ClusterPause(nodes) => {
            let millis = u64::try_from(hold.as_millis()).unwrap_or(5_000);
            let mut paused = 0;
            for node in nodes {
                let Ok(client) = redis::Client::open(node.as_str()) else {
                    continue;
                };
                let pause = async {
                    let mut connection = client.get_multiplexed_async_connection().await?;
                    redis::cmd("CLIENT")
                        .arg("PAUSE")
                        .arg(millis)
                        .arg("ALL")
                        .query_async::<()>(&mut connection)
                        .await
                };
                if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), pause).await {
                    paused += 1;
                }
            }
            tokio::time::sleep(hold).await;
            Ok(paused > 0)
        }
    }
}

async fn kill_and_restart(victim: &Replica) -> Result<bool, String> {
    victim.kill().await?;
    // Down for a moment, as a crashed pod is before its restart.
    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.start().await?;
    Ok(true)
}

/// Polls `condition` every 50 ms until it holds or `limit` passes; whether it held.
async fn within(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_minute_schedule_has_every_kind_and_ends_before_the_run() {
        for seed in 0..200 {
            let run = Duration::from_secs(120);
            let schedule = schedule(seed, run);
            for fault in Fault::ALL {
                let n = schedule.iter().filter(|(_, f)| *f == fault).count();
                assert!(n >= 1, "seed {seed}: {fault:?} missing");
            }
            assert!(
                schedule
                    .iter()
                    .all(|(at, _)| *at <= run - Duration::from_secs(10))
            );
            assert!(schedule.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn the_schedule_is_drawn_from_the_seed() {
        let run = Duration::from_secs(600);
        assert_eq!(schedule(7, run), schedule(7, run));
        assert_ne!(schedule(7, run), schedule(8, run));
        let long = schedule(7, Duration::from_secs(1800));
        for fault in Fault::ALL {
            assert!(long.iter().filter(|(_, f)| *f == fault).count() > 10);
        }
    }
}
