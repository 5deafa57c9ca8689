//! Workers as threads of one process, exchanging through shared memory: a [`Collective`] that
//! needs no MPI, for tests of the distributed math and for trying a configuration on one machine.
//!
//! Sums run in rank order on every worker, so every worker gets the same bits, as from MPI.

use super::ChannelSum;
use super::Collective;
use super::meter::{self, Kind};
use std::sync::{Arc, Barrier, Mutex};

/// One worker of a group made by [`ThreadGroup::new`]; run each on its own thread.
#[derive(Debug)]
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    /// What each rank put in for the operation in progress.
    slots: Mutex<Vec<Vec<u8>>>,
    barrier: Barrier,
}

impl ThreadGroup {
    /// `size` workers, rank `i` at index `i`.
    pub fn new(size: usize) -> Vec<ThreadGroup> {
        assert!(size > 0, "a group needs a worker");
        let shared = Arc::new(Shared { size, slots: Mutex::new(vec![vec![]; size]), barrier: Barrier::new(size) });
        (0..size).map(|rank| ThreadGroup { rank, shared: shared.clone() }).collect()
    }

    /// Puts `mine` in this rank's slot, then hands every rank's bytes (in rank order) to `read`.
    fn exchange<R>(&self, mine: Vec<u8>, read: impl FnOnce(&[Vec<u8>]) -> R) -> R {
        self.shared.slots.lock().unwrap()[self.rank] = mine;
        self.shared.barrier.wait();
        let result = read(&self.shared.slots.lock().unwrap());
        // Nobody may refill a slot before everybody has read them all.
        self.shared.barrier.wait();
        result
    }

    fn all_reduce<T: Copy + std::ops::AddAssign + pod::Pod>(&self, values: &mut [T]) {
        let bytes = std::mem::size_of_val(values);
        meter::time(Kind::AllReduce, bytes, || {
            self.exchange(pod::to_bytes(values), |all| {
                for (i, slot) in all.iter().enumerate() {
                    let theirs = pod::from_bytes::<T>(slot);
                    assert_eq!(theirs.len(), values.len(), "all-reduce of unequal lengths");
                    match i {
                        0 => values.copy_from_slice(&theirs),
                        _ => values.iter_mut().zip(theirs).for_each(|(v, t)| *v += t),
                    }
                }
            })
        })
    }
}

/// Plain-old-data to bytes and back, for the two float types exchanged here.
mod pod {
    pub trait Pod: Copy {
        const SIZE: usize;
        fn to_le(self, out: &mut Vec<u8>);
        fn from_le(bytes: &[u8]) -> Self;
    }
    impl Pod for f32 {
        const SIZE: usize = 4;
        fn to_le(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
        fn from_le(b: &[u8]) -> Self {
            f32::from_le_bytes(b.try_into().expect("4 bytes"))
        }
    }
    impl Pod for f64 {
        const SIZE: usize = 8;
        fn to_le(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
        fn from_le(b: &[u8]) -> Self {
            f64::from_le_bytes(b.try_into().expect("8 bytes"))
        }
    }
    pub fn to_bytes<T: Pod>(values: &[T]) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * T::SIZE);
        values.iter().for_each(|v| v.to_le(&mut out));
        out
    }
    pub fn from_bytes<T: Pod>(bytes: &[u8]) -> Vec<T> {
        bytes.chunks_exact(T::SIZE).map(T::from_le).collect()
    }
}

impl ChannelSum for ThreadGroup {
    fn sum(&self, values: &mut [f64]) {
        self.all_reduce(values);
    }
    fn sum_f32(&self, values: &mut [f32]) {
        self.all_reduce(values);
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn local_rank(&self) -> usize {
        self.rank
    }
    fn local_size(&self) -> usize {
        self.shared.size
    }
    fn all_reduce_f32(&self, values: &mut [f32]) {
        self.all_reduce(values);
    }
    fn all_reduce_f64(&self, values: &mut [f64]) {
        self.all_reduce(values);
    }
    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) {
        let mine = if self.rank == root { bytes.clone() } else { vec![] };
        *bytes = meter::time(Kind::Broadcast, bytes.len(), || self.exchange(mine, |all| all[root].clone()));
    }
    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        meter::time(Kind::AllGather, std::mem::size_of_val(local) * self.shared.size, || {
            self.exchange(pod::to_bytes(local), |all| {
                assert!(all.iter().all(|s| s.len() == all[0].len()), "all-gather of unequal lengths");
                all.iter().flat_map(|s| pod::from_bytes::<f32>(s)).collect()
            })
        })
    }
    fn barrier(&self) {
        self.shared.barrier.wait();
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn describe(&self) -> String {
        format!("{} threads", self.shared.size)
    }
}
