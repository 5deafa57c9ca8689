//! The shapes the kernel tests (tests/ops.rs on the CPU, tests/libtorch.rs on LibTorch) check
//! barlow's kernels on, and the pseudo-random values they fill them with.

use burn::tensor::TensorData;

/// Deterministic values in [offset − 1, offset + 1), the same on every machine.
pub fn pseudo_random(shape: &[usize], seed: u64, offset: f32) -> TensorData {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0 + offset
        })
        .collect();
    TensorData::new(values, shape.to_vec())
}

/// max |a − b| relative to the largest |b|: one number for a whole tensor.
pub fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    // NaN anywhere makes the result NaN (which fails every `<` check); f32::max would skip it.
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, |m, d| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) });
    worst / scale
}

/// (n, c_in, h, w, c_out, kernel, stride, padding (top, bottom, left, right), dilation)
pub type ConvCase = (usize, usize, usize, usize, usize, usize, usize, [usize; 4], usize);

pub const CONV_CASES: &[ConvCase] = &[
    (4, 3, 9, 7, 5, 3, 1, [1, 1, 1, 1], 1),     // odd sizes, RGB input (the CIFAR stem)
    (3, 8, 8, 8, 16, 3, 2, [1, 1, 1, 1], 1),    // stride 2 (first block of a stage)
    (5, 16, 8, 8, 32, 1, 2, [0, 0, 0, 0], 1),   // 1×1 stride 2 (downsample)
    (2, 16, 6, 6, 8, 1, 1, [0, 0, 0, 0], 1),    // 1×1 stride 1 (bottleneck)
    (2, 3, 17, 15, 8, 7, 2, [3, 3, 3, 3], 1),   // the ImageNet stem, odd sizes
    (3, 4, 10, 10, 6, 3, 1, [2, 2, 2, 2], 2),   // dilation
    (2, 4, 7, 9, 6, 3, 2, [1, 0, 0, 2], 1),     // asymmetric padding
    (40, 8, 4, 4, 16, 3, 1, [1, 1, 1, 1], 1),   // tiny images: grouped products, a partial group
    (70, 8, 2, 2, 8, 1, 2, [0, 0, 0, 0], 1),    // 1×1 stride 2 down to one pixel
    // Images large enough to be cut into bands of output rows (each reads a band of the input).
    (2, 4, 40, 36, 8, 3, 1, [1, 1, 1, 1], 1),   // stride 1
    (2, 4, 41, 40, 6, 3, 2, [1, 1, 1, 1], 1),   // stride 2, odd height
    (1, 3, 45, 44, 4, 7, 2, [3, 3, 3, 3], 1),   // the ImageNet stem
    (1, 3, 38, 36, 4, 3, 1, [0, 2, 1, 1], 2),   // dilation, asymmetric padding
    // 3×3 stride 1 with 16 channels or more: Winograd's F(2×2, 3×3) (src/ops/winograd.rs).
    (3, 16, 9, 7, 24, 3, 1, [1, 1, 1, 1], 1),   // odd sizes: tiles cropped at both edges
    (2, 16, 34, 31, 16, 3, 1, [1, 1, 1, 1], 1), // bands of tile rows, an odd last band
    (40, 32, 4, 4, 16, 3, 1, [1, 1, 1, 1], 1),  // tiny images: grouped, a partial group
    (2, 16, 8, 9, 20, 3, 1, [0, 0, 0, 0], 1),   // no padding
    (2, 16, 7, 9, 16, 3, 1, [2, 0, 1, 2], 1),   // asymmetric padding
    (2, 512, 4, 4, 64, 3, 1, [1, 1, 1, 1], 1),  // a long sum (layer 4 of a ResNet)
];

/// (shape, input offset): the offset makes the mean large against the spread.
pub const BN_CASES: &[(&[usize], f32)] = &[
    (&[6, 5, 3, 4], 0.0),
    (&[16, 7], 0.0),  // after a Linear layer
    (&[3, 70], 0.5),  // more channels than one block of the row-wise sums
    (&[4, 3, 5, 5], 50.0),
    (&[3, 2, 1, 1], 0.0), // few values per channel (with two, the x gradient is exactly 0)
];
