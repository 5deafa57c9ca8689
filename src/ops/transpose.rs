//! Matrix transposes between NCHW and channels-last layouts: 8×8 AVX blocks, scalar edges.

/// `dst[j·dst_stride + i] = src[i·src_stride + j]` for `(i, j)` < `(rows, cols)`: 8×8 blocks
/// with AVX shuffles where the CPU has them, the rest one value at a time.
pub(super) fn transpose(src: &[f32], src_stride: usize, dst: &mut [f32], dst_stride: usize, (rows, cols): (usize, usize)) {
    const B: usize = 8;
    let (mut full_rows, mut full_cols) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && rows >= B && cols >= B {
        (full_rows, full_cols) = (rows / B * B, cols / B * B);
        // Bounds of the last block read and written, checked once for all blocks.
        assert!(src.len() >= (full_rows - 1) * src_stride + full_cols);
        assert!(dst.len() >= (full_cols - 1) * dst_stride + full_rows);
        for i0 in (0..full_rows).step_by(B) {
            for j0 in (0..full_cols).step_by(B) {
                // SAFETY: AVX is present; the block lies inside both slices (asserted above).
                unsafe { transpose8x8(src.as_ptr().add(i0 * src_stride + j0), src_stride, dst.as_mut_ptr().add(j0 * dst_stride + i0), dst_stride) }
            }
        }
    }
    let mut one = |i: usize, j: usize| dst[j * dst_stride + i] = src[i * src_stride + j];
    for i in 0..rows {
        for j in full_cols..cols {
            one(i, j);
        }
    }
    for i in full_rows..rows {
        for j in 0..full_cols {
            one(i, j);
        }
    }
}

/// One 8×8 block of [`transpose`]: the textbook unpack / shuffle / lane-permute sequence.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY (all below): the caller guarantees 8 rows of 8 values at `src` and at `dst`.
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride)));
        let lo = |a: usize, b: usize| _mm256_unpacklo_ps(r[a], r[b]);
        let hi = |a: usize, b: usize| _mm256_unpackhi_ps(r[a], r[b]);
        let t = [lo(0, 1), hi(0, 1), lo(2, 3), hi(2, 3), lo(4, 5), hi(4, 5), lo(6, 7), hi(6, 7)];
        let s = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for j in 0..4 {
            _mm256_storeu_ps(dst.add(j * dst_stride), _mm256_permute2f128_ps::<0x20>(s[j], s[4 + j]));
            _mm256_storeu_ps(dst.add((4 + j) * dst_stride), _mm256_permute2f128_ps::<0x31>(s[j], s[4 + j]));
        }
    }
}
