//! The matrices a convolution becomes a product of: image patches as columns (im2col), their
//! adjoint (col2im), and patches as rows of a channels-last copy (for the weight gradient).

use super::units::ConvShape;

/// Writes the im2col matrix of output rows `rows` of `images` (`n×c_in×h×w`, all of them read):
/// row `(c, i, j)`, column `(image, pixel)`; `col` is `k × cols`, `cols` = images × pixels.
pub fn im2col(images: &[f32], s: &ConvShape, rows: std::ops::Range<usize>, col: &mut [f32]) {
    let (hw, ow) = (s.h * s.w, s.out_w());
    let n = images.len() / (s.c_in * hw);
    let tile = rows.len() * ow;
    let cols = n * tile;
    let mut r = 0;
    for c in 0..s.c_in {
        for i in 0..s.kh {
            for j in 0..s.kw {
                let (lo, hi, first) = s.valid_cols(j);
                let dst_row = &mut col[r * cols..][..cols];
                for b in 0..n {
                    let image = &images[(b * s.c_in + c) * hw..][..hw];
                    for (t, oy) in rows.clone().enumerate() {
                        let dst = &mut dst_row[b * tile + t * ow..][..ow];
                        let Some(y) = s.input_row(oy, i) else {
                            dst.fill(0.0);
                            continue;
                        };
                        let src = &image[y * s.w..][..s.w];
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let start = (first + (lo * s.stride[1]) as isize) as usize;
                        if s.stride[1] == 1 {
                            dst[lo..hi].copy_from_slice(&src[start..][..hi - lo]);
                        } else {
                            for (k, v) in dst[lo..hi].iter_mut().enumerate() {
                                *v = src[start + k * s.stride[1]];
                            }
                        }
                    }
                }
                r += 1;
            }
        }
    }
}

/// Adds an im2col-shaped gradient (all output rows) back into `dx` (the adjoint of [`im2col`]);
/// `dx` holds the images the columns came from.
pub fn col2im(col: &[f32], s: &ConvShape, dx: &mut [f32]) {
    let (hw, ow, p) = (s.h * s.w, s.out_w(), s.out_h() * s.out_w());
    let n = dx.len() / (s.c_in * hw);
    let cols = n * p;
    let mut r = 0;
    for c in 0..s.c_in {
        for i in 0..s.kh {
            for j in 0..s.kw {
                let (lo, hi, first) = s.valid_cols(j);
                let src_row = &col[r * cols..][..cols];
                for b in 0..n {
                    let image = &mut dx[(b * s.c_in + c) * hw..][..hw];
                    for oy in 0..s.out_h() {
                        let Some(y) = s.input_row(oy, i) else { continue };
                        let src = &src_row[b * p + oy * ow..][..ow];
                        let dst = &mut image[y * s.w..][..s.w];
                        let start = (first + (lo * s.stride[1]) as isize) as usize;
                        if s.stride[1] == 1 {
                            dst[start..][..hi - lo].iter_mut().zip(&src[lo..hi]).for_each(|(d, v)| *d += v);
                        } else {
                            for (k, v) in src[lo..hi].iter().enumerate() {
                                dst[start + k * s.stride[1]] += v;
                            }
                        }
                    }
                }
                r += 1;
            }
        }
    }
}

/// Copies the pixels `pixels` of one image `c×h×w` into channels-last order `h·w × c` (the
/// other pixels of `out` are left as they are), in cache-sized blocks.
pub fn to_channels_last(image: &[f32], c: usize, hw: usize, pixels: std::ops::Range<usize>, out: &mut [f32]) {
    const B: usize = 32;
    for c0 in (0..c).step_by(B) {
        for p0 in pixels.clone().step_by(B) {
            for ch in c0..(c0 + B).min(c) {
                let src = &image[ch * hw..];
                for p in p0..(p0 + B).min(pixels.end) {
                    out[p * c + ch] = src[p];
                }
            }
        }
    }
}

/// Writes the patches of output rows `rows` of one channels-last image as the rows of `out`:
/// row `pixel`, columns `(i, j, channel)` — each tap a contiguous copy of `c` values.
pub fn patches(image_hwc: &[f32], s: &ConvShape, rows: std::ops::Range<usize>, out: &mut [f32]) {
    let (c, ow) = (s.c_in, s.out_w());
    let k = c * s.kh * s.kw;
    for (t, oy) in rows.enumerate() {
        for ox in 0..ow {
            let row = &mut out[(t * ow + ox) * k..][..k];
            for i in 0..s.kh {
                let y = s.input_row(oy, i);
                for j in 0..s.kw {
                    let dst = &mut row[(i * s.kw + j) * c..][..c];
                    let x = (ox * s.stride[1] + j * s.dilation[1]) as isize - s.padding[1].0 as isize;
                    match y {
                        Some(y) if x >= 0 && (x as usize) < s.w => {
                            dst.copy_from_slice(&image_hwc[(y * s.w + x as usize) * c..][..c]);
                        }
                        _ => dst.fill(0.0),
                    }
                }
            }
        }
    }
}
