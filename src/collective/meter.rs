//! What the collectives cost: calls, bytes and seconds per kind of operation, counted for the
//! whole process (read by `barlow bench dist` and the trainer's log).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A kind of collective work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Sums over the workers (gradients, C, BatchNorm statistics).
    AllReduce,
    AllGather,
    Broadcast,
    /// Barriers.
    Other,
    /// Tensors copied between the device and host memory around a collective.
    Staging,
}

const KINDS: [Kind; 5] = [Kind::AllReduce, Kind::AllGather, Kind::Broadcast, Kind::Other, Kind::Staging];

struct Counter {
    calls: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
}

static COUNTERS: [Counter; 5] = [const { Counter { calls: AtomicU64::new(0), bytes: AtomicU64::new(0), nanos: AtomicU64::new(0) } }; 5];

fn counter(kind: Kind) -> &'static Counter {
    &COUNTERS[KINDS.iter().position(|&k| k == kind).expect("a listed kind")]
}

/// Runs `f`, counting it as one call of `kind` that moved `bytes`.
pub fn time<R>(kind: Kind, bytes: usize, f: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let result = f();
    let c = counter(kind);
    c.calls.fetch_add(1, Ordering::Relaxed);
    c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    c.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    result
}

/// The counts of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub calls: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Totals {
    fn read(kind: Kind) -> Totals {
        let c = counter(kind);
        Totals {
            calls: c.calls.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            seconds: c.nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }
}

/// Every kind's counts so far.
pub fn snapshot() -> Vec<(Kind, Totals)> {
    KINDS.iter().map(|&k| (k, Totals::read(k))).collect()
}

/// The counts between two snapshots, summed over the kinds that communicate (all but staging)
/// and for staging alone: `(communication, staging)`.
pub fn since(before: &[(Kind, Totals)]) -> (Totals, Totals) {
    let (mut comm, mut staging) = (Totals::default(), Totals::default());
    for ((kind, now), (_, then)) in snapshot().into_iter().zip(before) {
        let d = Totals { calls: now.calls - then.calls, bytes: now.bytes - then.bytes, seconds: now.seconds - then.seconds };
        let into = if kind == Kind::Staging { &mut staging } else { &mut comm };
        into.calls += d.calls;
        into.bytes += d.bytes;
        into.seconds += d.seconds;
    }
    (comm, staging)
}
