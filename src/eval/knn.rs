//! Weighted k-nearest-neighbour classification (k = 200, T = 0.1, cosine), the training monitor.

use burn::tensor::Tensor;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
}

/// Rows divided by their L2 norm, so that a product of two such matrices holds cosines.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x.div(norm)
}

/// Classifies each test feature by its `k` most cosine-similar training features, each voting
/// for its class with weight exp(similarity / `t`) (Wu et al., 2018).
///
/// Similarities are computed on the features' device in chunks of test rows, so that the
/// `test × train` matrix never exists whole; the neighbour search runs on the host.
pub fn knn_accuracy(
    train: Tensor<2>,
    train_labels: &[u32],
    test: Tensor<2>,
    test_labels: &[u32],
    num_classes: usize,
    k: usize,
    t: f64,
) -> Accuracy {
    let [n_train, _] = train.dims();
    let [n_test, _] = test.dims();
    assert_eq!(n_train, train_labels.len());
    assert_eq!(n_test, test_labels.len());
    let k = k.min(n_train);
    let train_t = l2_normalize(train).transpose();
    let test = l2_normalize(test);
    let chunk = (1 << 22) / n_train.max(1) + 1;
    let (mut top1, mut top5) = (0usize, 0usize);
    for start in (0..n_test).step_by(chunk) {
        let end = (start + chunk).min(n_test);
        let sims = test.clone().slice(start..end).matmul(train_t.clone());
        let sims: Vec<f32> = sims.into_data().convert::<f32>().try_into_vec().expect("f32 similarities");
        let (c1, c5) = sims
            .par_chunks(n_train)
            .zip(&test_labels[start..end])
            .map(|(row, &label)| {
                let ranking = class_ranking(row, train_labels, num_classes, k, t);
                let rank = ranking.iter().position(|&c| c == label as usize).unwrap_or(usize::MAX);
                ((rank == 0) as usize, (rank < 5) as usize)
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        top1 += c1;
        top5 += c5;
    }
    let n = n_test.max(1) as f64;
    Accuracy { top1: 100.0 * top1 as f64 / n, top5: 100.0 * top5 as f64 / n }
}

/// Classes by decreasing weighted vote of the `k` nearest neighbours in `sims`.
fn class_ranking(sims: &[f32], labels: &[u32], num_classes: usize, k: usize, t: f64) -> Vec<usize> {
    let mut idx: Vec<u32> = (0..sims.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| sims[b as usize].total_cmp(&sims[a as usize]));
        idx.truncate(k);
    }
    let mut votes = vec![0f64; num_classes];
    for &i in &idx {
        votes[labels[i as usize] as usize] += (sims[i as usize] as f64 / t).exp();
    }
    let mut classes: Vec<usize> = (0..num_classes).collect();
    classes.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]).then(a.cmp(&b)));
    classes
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::default())
    }

    #[test]
    fn nearest_class_by_cosine_wins() {
        // Class 0 points right, class 1 up; magnitudes must not matter.
        let train = t(&[[1.0, 0.0], [5.0, 0.1], [0.0, 1.0], [0.1, 3.0]]);
        let test = t(&[[2.0, 0.2], [0.2, 9.0], [-1.0, 5.0]]);
        let acc = knn_accuracy(train, &[0, 0, 1, 1], test, &[0, 1, 1], 2, 3, 0.1);
        assert_eq!(acc.top1, 100.0);
        assert_eq!(acc.top5, 100.0);
    }

    #[test]
    fn votes_are_weighted_by_similarity() {
        // k = 3: one very close neighbour of class 1 outvotes two distant ones of class 0.
        let sims = [0.99f32, 0.1, 0.1, -0.5];
        let ranking = class_ranking(&sims, &[1, 0, 0, 0], 2, 3, 0.1);
        assert_eq!(ranking[0], 1);
        // With a very high temperature the weights flatten and the majority wins.
        let ranking = class_ranking(&sims, &[1, 0, 0, 0], 2, 3, 1e6);
        assert_eq!(ranking[0], 0);
    }
}
