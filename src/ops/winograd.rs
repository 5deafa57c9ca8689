//! 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, CVPR
//! 2016): each 2×2 output tile comes from a 4×4 input tile with 16 multiplications per pair of
//! channels instead of 36 — sixteen GEMMs over transformed tiles instead of one over im2col.
//!
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for a kernel `g` and an input tile `d`; summed over input
//! channels, the elementwise product at each of the 16 tile positions ξ is the GEMM
//! `M_ξ (tiles × c_out) = V_ξ (tiles × c_in) · U_ξ (c_in × c_out)`. The weight gradient is its
//! adjoint: `∂U_ξ = V_ξᵀ · (A dy Aᵀ)_ξ`, a GEMM whose inner dimension runs over every tile. The
//! transforms run channels-last, one vector of channels per tile position, on a zero-padded
//! channels-last copy of the rows a unit reads; outputs are cropped at odd sizes.
//!
//! Only additions and the kernel's halves enter the transforms, so the result differs from the
//! direct sum by rounding alone (tests/ops.rs compares both with burn's convolution: relative
//! differences of 1e-6, as for the im2col path).

use super::transpose::transpose;
use super::units::{ConvShape, Unit, for_each_unit, matmul, sum_over_units, units, with_scratch, zeros};
use gemm::Parallelism;
use rayon::prelude::*;

/// Tiles a unit aims for (the columns of each of its 16 products); a unit's `rows` are tile rows.
const TILES: usize = 128;

/// Fewer channels than this on either side make the products too thin to gain.
const MIN_CHANNELS: usize = 16;

/// Whether [`forward`] computes this convolution.
pub fn applies(s: &ConvShape) -> bool {
    (s.kh, s.kw) == (3, 3) && s.stride == [1, 1] && s.dilation == [1, 1] && s.c_in.min(s.c_out) >= MIN_CHANNELS
}

/// `U_ξ[c][o]` for ξ = 4i + j: the kernel transformed, `c_in × 16 × c_out` (each `U_ξ` a
/// matrix with row stride `16 · c_out`), one input channel per task.
fn kernel_transform(weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let (c, co) = (s.c_in, s.c_out);
    let mut u = zeros(16 * c * co);
    // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
    let g = |v: [f32; 3]| [v[0], 0.5 * (v[0] + v[1] + v[2]), 0.5 * (v[0] - v[1] + v[2]), v[2]];
    u.par_chunks_mut(16 * co).enumerate().for_each(|(ch, u)| {
        for o in 0..co {
            let k = &weight[(o * c + ch) * 9..][..9];
            let columns = [g([k[0], k[3], k[6]]), g([k[1], k[4], k[7]]), g([k[2], k[5], k[8]])];
            for i in 0..4 {
                let t = g([columns[0][i], columns[1][i], columns[2][i]]);
                for j in 0..4 {
                    u[(4 * i + j) * co + o] = t[j];
                }
            }
        }
    });
    u
}

/// Eight lanes at a time through registers: the outputs could alias the inputs as far as the
/// compiler knows (slices in arrays carry no `noalias`), which made it fall back to one value
/// at a time; a block read whole before it is written vectorises without that check.
const LANES: usize = 8;

/// `f` on the vectors `d` at `k..k + LANES`, or at `k` alone for the tail; its results go to
/// `out` at the same place.
#[inline(always)]
fn lanes<const I: usize, const O: usize>(out: [&mut [f32]; O], d: [&[f32]; I], f: impl Fn([f32; I]) -> [f32; O]) {
    let n = out[0].len();
    let d = d.map(|d| &d[..n]);
    let mut out = out.map(|o| &mut o[..n]);
    let full = n / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        let block: [[f32; LANES]; I] = std::array::from_fn(|i| d[i][k..k + LANES].try_into().expect("a block"));
        let results: [[f32; O]; LANES] = std::array::from_fn(|l| f(std::array::from_fn(|i| block[i][l])));
        for (o, out) in out.iter_mut().enumerate() {
            for l in 0..LANES {
                out[k + l] = results[l][o];
            }
        }
    }
    for k in full..n {
        let results = f(std::array::from_fn(|i| d[i][k]));
        for (o, out) in out.iter_mut().enumerate() {
            out[k] = results[o];
        }
    }
}

/// `out = [d0 − d2, d1 + d2, d2 − d1, d1 − d3]` over vectors: `Bᵀ d` along one axis.
#[inline(always)]
fn input_step(out: [&mut [f32]; 4], d: [&[f32]; 4]) {
    lanes(out, d, |[a, b, c, e]| [a - c, b + c, c - b, b - e]);
}

/// `out = [v0 + v1 + v2, v1 − v2 − v3]` over vectors: `Aᵀ m` along one axis.
#[inline(always)]
fn output_step(out: [&mut [f32]; 2], v: [&[f32]; 4]) {
    lanes(out, v, |[a, b, c, e]| [a + b + c, b - c - e]);
}

/// The `k`-th of the `len`-long vectors in `v`.
fn slot(v: &[f32], len: usize, k: usize) -> &[f32] {
    &v[k * len..][..len]
}

/// A unit's tiles: `images` images × `rows` tile rows × `tw` tiles, whose outputs are rows
/// `first..last` of each image.
struct Tiling {
    images: usize,
    rows: usize,
    tw: usize,
    first: usize,
    last: usize,
}

impl Tiling {
    fn of(unit: &Unit, tw: usize, oh: usize) -> Tiling {
        let (first, last) = (2 * unit.rows.start, (2 * unit.rows.end).min(oh));
        Tiling { images: unit.images.len(), rows: unit.rows.len(), tw, first, last }
    }

    fn tiles(&self) -> usize {
        self.images * self.rows * self.tw
    }

    /// Padded width of the input rows the tiles read.
    fn pw(&self) -> usize {
        2 * self.tw + 2
    }

    /// Padded input rows the tiles read, per image.
    fn band_rows(&self) -> usize {
        2 * self.rows + 2
    }

    /// Output rows per image.
    fn out_rows(&self) -> usize {
        self.last - self.first
    }

    /// Scratch for the transformed input and the padded band it comes from ([`transformed_input`]).
    fn input_len(&self, c: usize) -> usize {
        16 * c * self.tiles() + self.images * self.band_rows() * self.pw() * c
    }

    /// Scratch for the 16 products (`16 × tiles × co`) and the unit's output rows channels-last
    /// (`images × out_rows × ow × co`): the forward pass writes the products and reads the rows
    /// out of them, the weight gradient reads the rows and writes the products from them.
    fn products_len(&self, ow: usize, co: usize) -> usize {
        16 * co * self.tiles() + self.images * self.out_rows() * ow * co
    }

    /// Scratch for the transforms' vectors: a band's four transformed rows, or 16 vectors of
    /// output channels.
    fn tmp_len(&self, c: usize, co: usize) -> usize {
        (4 * self.pw() * c).max(16 * co)
    }

    /// Tile `t` as (image, tile row, tile column).
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        (t / (self.rows * self.tw), t / self.tw % self.rows, t % self.tw)
    }
}

/// `V_ξ[t] = (Bᵀ d_t B)_ξ` for every tile `t` of a unit, vectorised over the `c` channels:
/// `band` holds the unit's padded input rows channels-last (`rows × pw × c` per image), `v` is
/// `16 × tiles × c`; `tmp` holds `4 × pw × c` values.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma"))]
fn input_transform(band: &[f32], tiling: &Tiling, c: usize, v: &mut [f32], tmp: &mut [f32]) {
    let (row, rows, tiles) = (tiling.pw() * c, tiling.band_rows(), tiling.tiles());
    let u = &mut tmp[..4 * row];
    for b in 0..tiling.images {
        for tr in 0..tiling.rows {
            // Along the rows, once for the whole row of tiles (neighbours share two columns):
            // slot i of u is row i of Bᵀ d for every column...
            let input = |r: usize| &band[(b * rows + 2 * tr + r) * row..][..row];
            let mut out = u.chunks_exact_mut(row);
            input_step(std::array::from_fn(|_| out.next().expect("four rows")), [input(0), input(1), input(2), input(3)]);
            // ...then along each tile's four columns, into V_ξ for ξ = 4i + j.
            for tx in 0..tiling.tw {
                let t = (b * tiling.rows + tr) * tiling.tw + tx;
                for i in 0..4 {
                    let column = |q: usize| slot(&u[i * row..][..row], c, 2 * tx + q);
                    let mut out = v.chunks_exact_mut(tiles * c).skip(4 * i).take(4).map(|v| &mut v[t * c..][..c]);
                    input_step(std::array::from_fn(|_| out.next().expect("four positions")), std::array::from_fn(column));
                }
            }
        }
    }
}

/// `Y_t = Aᵀ M_t A` for every tile of a unit, vectorised over the `co` output channels: `m` is
/// `16 × tiles × co`; each output pixel's `co` values are written channels-last into `out`
/// (`images × rows × ow × co`, the unit's output rows only).
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma"))]
fn output_transform(m: &[f32], tiling: &Tiling, ow: usize, co: usize, out: &mut [f32], tmp: &mut [f32]) {
    let (tiles, rows) = (tiling.tiles(), tiling.out_rows());
    let (ab, y) = tmp[..12 * co].split_at_mut(8 * co);
    for t in 0..tiles {
        let (b, tr, tx) = tiling.tile(t);
        let m = |xi: usize| slot(m, co, xi * tiles + t);
        // Within each row i of the tile: a[i], b[i] = columns 0 and 1 of m A...
        let (a, bb) = ab.split_at_mut(4 * co);
        for i in 0..4 {
            output_step([&mut a[i * co..][..co], &mut bb[i * co..][..co]], std::array::from_fn(|j| m(4 * i + j)));
        }
        // ...then across the rows: y slot 2r + q is the tile's output pixel (r, q).
        for q in 0..2 {
            let columns = if q == 0 { &*a } else { &*bb };
            let (top, bottom) = y.split_at_mut(2 * co);
            output_step([&mut top[q * co..][..co], &mut bottom[q * co..][..co]], std::array::from_fn(|i| slot(columns, co, i)));
        }
        for k in 0..4 {
            let (oy, ox) = (2 * tr + k / 2, 2 * tx + k % 2);
            if oy < rows && ox < ow {
                out[((b * rows + oy) * ow + ox) * co..][..co].copy_from_slice(slot(y, co, k));
            }
        }
    }
}

/// Tiles per row of an output, and the units they are cut into (with their parallelism).
fn plan(s: &ConvShape) -> (usize, Vec<Unit>, Parallelism) {
    let (th, tw) = (s.out_h().div_ceil(2), s.out_w().div_ceil(2));
    let (units, par) = units(s.n, (th, tw), TILES, TILES.div_ceil(tw));
    (tw, units, par)
}

/// `y = conv(x, weight)` for a convolution that [`applies`].
pub fn forward(x: &[f32], weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let (oh, ow, c, co) = (s.out_h(), s.out_w(), s.c_in, s.c_out);
    let u = kernel_transform(weight, s);
    let (tw, units, par) = plan(s);
    let mut y = zeros(s.n * co * oh * ow);
    for_each_unit(&units, par, &mut y, co * oh * ow, |unit, y| {
        let tiling = Tiling::of(unit, tw, oh);
        let (tiles, pixels) = (tiling.tiles(), tiling.out_rows() * ow);
        with_scratch([tiling.input_len(c), tiling.products_len(ow, co), tiling.tmp_len(c, co)], |v, m, tmp| {
            let v = transformed_input(x, s, unit, &tiling, v, tmp);
            let (m, out) = m.split_at_mut(16 * co * tiles);
            for xi in 0..16 {
                let (m, v, u) = (&mut m[xi * tiles * co..], &v[xi * tiles * c..], &u[xi * co..]);
                matmul((tiles, co, c), (m.as_mut_ptr(), co, 1), (v.as_ptr(), c, 1), (u.as_ptr(), 16 * co, 1), false, par);
            }
            output_transform(m, &tiling, ow, co, out, tmp);
            // Channels-last to the NCHW output.
            for b in 0..tiling.images {
                let dst = &mut y[b * co * oh * ow + tiling.first * ow..];
                transpose(&out[b * pixels * co..], co, dst, oh * ow, (pixels, co));
            }
        })
    });
    y
}

/// `V` for a unit's tiles (`16 × tiles × c`, the front of `buffer`), from the padded band that
/// the rest of `buffer` holds.
fn transformed_input<'a>(x: &[f32], s: &ConvShape, unit: &Unit, tiling: &Tiling, buffer: &'a mut [f32], tmp: &mut [f32]) -> &'a [f32] {
    let (v, band) = buffer.split_at_mut(16 * s.c_in * tiling.tiles());
    fill_band(x, s, unit, tiling, band);
    input_transform(band, tiling, s.c_in, v, tmp);
    v
}

/// The padded input rows a unit's tiles read, channels-last (`rows × pw × c` per image): padded
/// row r of the band is input row `first + r −` top padding; zeros where it is padding.
fn fill_band(x: &[f32], s: &ConvShape, unit: &Unit, tiling: &Tiling, band: &mut [f32]) {
    let (c, pt, pl) = (s.c_in, s.padding[0].0, s.padding[1].0);
    let (first, rows, pw) = (tiling.first, tiling.band_rows(), tiling.pw());
    for (b, n) in unit.images.clone().enumerate() {
        for (r, row) in band[b * rows * pw * c..][..rows * pw * c].chunks_exact_mut(pw * c).enumerate() {
            let Some(iy) = (first + r).checked_sub(pt).filter(|&iy| iy < s.h) else {
                row.fill(0.0);
                continue;
            };
            row[..pl * c].fill(0.0);
            row[(pl + s.w) * c..].fill(0.0);
            transpose(&x[n * c * s.h * s.w + iy * s.w..], s.h * s.w, &mut row[pl * c..], c, (c, s.w));
        }
    }
}

/// `Ŷ_t = A dy_t Aᵀ` for every tile of a unit (the adjoint of the output transform), vectorised
/// over the `co` channels: `dy` holds the unit's output-gradient rows channels-last
/// (`images × rows × ow × co`), zero beyond them; `m` is `16 × tiles × co`.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma"))]
fn gradient_transform(dy: &[f32], tiling: &Tiling, ow: usize, co: usize, m: &mut [f32], tmp: &mut [f32]) {
    let (tiles, rows) = (tiling.tiles(), tiling.out_rows());
    let (zero, e) = tmp[..9 * co].split_at_mut(co);
    zero.fill(0.0);
    let zero = &*zero;
    for t in 0..tiles {
        let (b, tr, tx) = tiling.tile(t);
        let pixel = |r: usize, q: usize| {
            let (oy, ox) = (2 * tr + r, 2 * tx + q);
            if oy < rows && ox < ow { slot(dy, co, (b * rows + oy) * ow + ox) } else { zero }
        };
        // A = [[1, 0], [1, 1], [1, −1], [0, −1]]: along the tile's rows (e slot 2i + q)...
        for q in 0..2 {
            let (top, bottom) = (pixel(0, q), pixel(1, q));
            let mut out = e.chunks_exact_mut(co).skip(q).step_by(2);
            let [e0, e1, e2, e3]: [&mut [f32]; 4] = std::array::from_fn(|_| out.next().expect("four slots"));
            for k in 0..co {
                (e0[k], e1[k], e2[k], e3[k]) = (top[k], top[k] + bottom[k], top[k] - bottom[k], -bottom[k]);
            }
        }
        // ...then along its columns, into Ŷ_ξ for ξ = 4i + j.
        for i in 0..4 {
            let (left, right) = (slot(e, co, 2 * i), slot(e, co, 2 * i + 1));
            let mut out = m.chunks_exact_mut(tiles * co).skip(4 * i).take(4).map(|m| &mut m[t * co..][..co]);
            let [m0, m1, m2, m3]: [&mut [f32]; 4] = std::array::from_fn(|_| out.next().expect("four positions"));
            for k in 0..co {
                (m0[k], m1[k], m2[k], m3[k]) = (left[k], left[k] + right[k], left[k] - right[k], -right[k]);
            }
        }
    }
}

/// The gradient with respect to `weight` of a convolution that [`applies`], given `dy`: by
/// linearity of `Y = Aᵀ [U ⊙ V] A`, `∂L/∂U_ξ = Σ_t (A dy_t Aᵀ)_ξ V_t,ξ` — one GEMM per ξ whose
/// inner dimension runs over every tile — then `∂L/∂g = Gᵀ (∂L/∂U) G`.
pub fn weight_grad(x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    let (oh, ow, c, co) = (s.out_h(), s.out_w(), s.c_in, s.c_out);
    let (tw, units, par) = plan(s);
    let unit_grad = |mut du: Vec<f32>, unit: &Unit| -> Vec<f32> {
        let tiling = Tiling::of(unit, tw, oh);
        let (tiles, pixels) = (tiling.tiles(), tiling.out_rows() * ow);
        with_scratch([tiling.input_len(c), tiling.products_len(ow, co), tiling.tmp_len(c, co)], |v, m, tmp| {
            let v = transformed_input(x, s, unit, &tiling, v, tmp);
            let (m, dy_hwc) = m.split_at_mut(16 * co * tiles);
            for (b, n) in unit.images.clone().enumerate() {
                let src = &dy[n * co * oh * ow + tiling.first * ow..];
                transpose(src, oh * ow, &mut dy_hwc[b * pixels * co..], co, (co, pixels));
            }
            gradient_transform(dy_hwc, &tiling, ow, co, m, tmp);
            for xi in 0..16 {
                let (du, v, m) = (&mut du[xi * co..], &v[xi * tiles * c..], &m[xi * tiles * co..]);
                // ∂U_ξ (c × co, rows 16·co apart) += V_ξᵀ (c × tiles) · Ŷ_ξ (tiles × co)
                matmul((c, co, tiles), (du.as_mut_ptr(), 16 * co, 1), (v.as_ptr(), 1, c), (m.as_ptr(), co, 1), true, par);
            }
        });
        du
    };
    let du = sum_over_units(&units, par, 16 * c * co, unit_grad);
    // Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]] on both sides.
    let gt = |v: [f32; 4]| [v[0] + 0.5 * (v[1] + v[2]), 0.5 * (v[1] - v[2]), 0.5 * (v[1] + v[2]) + v[3]];
    // One output channel per task: reads `∂U[·][·][o]` across the whole sum.
    let mut dw = zeros(co * c * 9);
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(o, dw)| {
        for ch in 0..c {
            let at = |xi: usize| du[(ch * 16 + xi) * co + o];
            let rows: [[f32; 3]; 4] = std::array::from_fn(|i| gt(std::array::from_fn(|j| at(4 * i + j))));
            for q in 0..3 {
                let column = gt(std::array::from_fn(|i| rows[i][q]));
                for r in 0..3 {
                    dw[ch * 9 + 3 * r + q] = column[r];
                }
            }
        }
    });
    dw
}
