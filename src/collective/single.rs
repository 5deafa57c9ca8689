//! The one-process job: every collective operation leaves its data as it is.

use super::ChannelSum;
use super::Collective;

/// A job of one process (no launcher, or a binary built without MPI).
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl ChannelSum for Single {
    fn sum(&self, _values: &mut [f64]) {}
    fn sum_f32(&self, _values: &mut [f32]) {}
}

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn local_size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&self, _values: &mut [f32]) {}
    fn all_reduce_f64(&self, _values: &mut [f64]) {}
    fn broadcast(&self, _bytes: &mut Vec<u8>, _root: usize) {}
    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        local.to_vec()
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn describe(&self) -> String {
        "one process".into()
    }
}
