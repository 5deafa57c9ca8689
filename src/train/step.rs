//! What a training step reports (its loss and terms, read back from the device in batches) and
//! where it stands in the run; the step itself is [`crate::dist::train_step`].

use crate::loss::Loss;
use crate::methods::Stage;
use burn::tensor::Tensor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The scalars of one step, read back from the device: the loss and the method's terms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub loss: f64,
    /// In the method's order; in `metrics.jsonl` each is a field of its own (Barlow Twins:
    /// `on_diag`, `off_diag`).
    #[serde(flatten)]
    pub terms: Terms,
}

impl StepStats {
    /// Reads one step's scalars now, waiting for the device to compute them.
    pub fn read(loss: &Loss) -> Self {
        let mut pending = PendingStats::default();
        pending.push(loss, ());
        pending.read().remove(0).1
    }

    /// A term's value by name.
    pub fn term(&self, name: &str) -> Option<f64> {
        self.terms.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// Named values in a fixed order, written as the fields of a JSON object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Terms(pub Vec<(String, f64)>);

impl Serialize for Terms {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Terms {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Terms;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("loss terms")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Terms, A::Error> {
                let mut terms = vec![];
                while let Some(entry) = map.next_entry::<String, f64>()? {
                    terms.push(entry);
                }
                Ok(Terms(terms))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Step scalars left on the device until they are wanted, then read back together in one
/// transfer, each with what the caller tagged its step with: reading a value waits for the
/// device to finish everything queued before it, so reading every step would keep the host from
/// queueing the next step while the device works.
pub struct PendingStats<T> {
    names: Vec<&'static str>,
    steps: Vec<(T, Tensor<1>)>,
}

impl<T> Default for PendingStats<T> {
    fn default() -> Self {
        PendingStats { names: vec![], steps: vec![] }
    }
}

impl<T> PendingStats<T> {
    /// Every step pushed has the same terms (one method's).
    pub fn push(&mut self, loss: &Loss, tag: T) {
        self.names = loss.terms.iter().map(|(name, _)| *name).collect();
        let terms = std::iter::once(&loss.total).chain(loss.terms.iter().map(|(_, t)| t)).map(|t| t.clone().detach());
        self.steps.push((tag, Tensor::cat(terms.collect(), 0)));
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The steps pushed since the last read, in order, with their scalars.
    pub fn read(&mut self) -> Vec<(T, StepStats)> {
        if self.steps.is_empty() {
            return vec![];
        }
        let (tags, scalars): (Vec<T>, Vec<Tensor<1>>) = std::mem::take(&mut self.steps).into_iter().unzip();
        let values = Tensor::cat(scalars, 0).into_data().convert::<f64>().try_into_vec::<f64>().expect("f64 step scalars");
        let stats = values.chunks_exact(1 + self.names.len()).map(|v| StepStats {
            loss: v[0],
            terms: Terms(self.names.iter().zip(&v[1..]).map(|(n, v)| (n.to_string(), *v)).collect()),
        });
        tags.into_iter().zip(stats).collect()
    }
}

/// Where a step stands in training: its number (0-based), the run's total, and the schedule's
/// learning-rate factor there.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub steps_per_epoch: usize,
    pub lr: f64,
}

impl Progress {
    /// The step's place in training, as the methods see it.
    pub fn stage(&self) -> Stage {
        Stage { step: self.step, total: self.total, steps_per_epoch: self.steps_per_epoch }
    }
}
