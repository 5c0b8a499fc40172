//! The per-tile transforms of Winograd F(2x2, 3x3) ([`super::winograd`]) on one row of tiles at
//! a time, in tile-blocked layout: tile j of the row reads padded input columns 2j .. 2j + 4 and
//! its 16 transformed values go to 16 runs that are contiguous in j, so a vector of LANES
//! tiles is loaded with two de-interleaving loads per input row and stored with plain stores.
//!
//! Each transform exists twice: the plain twin over any element type (`input_row`,
//! `output_row`; the f64 path and the reference) and the [`Simd`] kernels ([`InputRow`],
//! [`OutputRow`]). Both add and subtract in the same order and never multiply, so they agree
//! bit for bit (tested on every ISA).

// The 4x4 transforms index rows and columns explicitly, like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use super::simd::{Kernel, Lane1, Simd};
use crate::tensor::Element;

/// The input rows and destination of [`input_row`] / [`InputRow`].
pub struct InputRowArgs<'a, T> {
    /// (16, n_t): value xi of tile t at `xi * n_t + t`.
    pub v: &'a mut [T],
    pub n_t: usize,
    /// Index of this row's first tile among the n_t.
    pub t0: usize,
    /// Four consecutive zero-padded input rows, each at least `2 * tw + 2` long.
    pub rows: [&'a [T]; 4],
    /// Tiles in the row.
    pub tw: usize,
}

/// v[xi, t0 + j] = (B^T d_j B)[xi] for the 4x4 input tile d_j at columns 2j .. 2j + 4.
pub fn input_row<T: Element>(a: InputRowArgs<'_, T>) {
    let InputRowArgs { v, n_t, t0, rows, tw } = a;
    for j in 0..tw {
        let d = |r: usize, c: usize| rows[r][2 * j + c];
        // B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3); then the same on columns.
        let mut bd = [[T::ZERO; 4]; 4];
        for c in 0..4 {
            bd[0][c] = d(0, c) - d(2, c);
            bd[1][c] = d(1, c) + d(2, c);
            bd[2][c] = d(2, c) - d(1, c);
            bd[3][c] = d(1, c) - d(3, c);
        }
        for (r, row) in bd.iter().enumerate() {
            let vals = [row[0] - row[2], row[1] + row[2], row[2] - row[1], row[1] - row[3]];
            for (c, val) in vals.into_iter().enumerate() {
                v[(r * 4 + c) * n_t + t0 + j] = val;
            }
        }
    }
}

/// [`input_row`] on f32 in vectors of tiles.
pub struct InputRow<'a>(pub InputRowArgs<'a, f32>);

impl Kernel for InputRow<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let InputRowArgs { v, n_t, t0, rows, tw } = self.0;
        for r in rows {
            assert!(r.len() >= 2 * tw + 2);
        }
        assert!(v.len() >= 15 * n_t + t0 + tw);
        let body = tw / S::LANES * S::LANES;
        for j in (0..body).step_by(S::LANES) {
            input_tiles(s, v, n_t, t0, &rows, j);
        }
        // The tail as one vector ending at the last tile when the row has that many: it
        // rewrites some tiles with the values they hold (the tails of 23- and 45-tile rows,
        // one lane at a time, were most of their transforms' time).
        if body < tw && tw >= S::LANES {
            input_tiles(s, v, n_t, t0, &rows, tw - S::LANES);
        } else {
            for j in body..tw {
                input_tiles(Lane1, v, n_t, t0, &rows, j);
            }
        }
    }
}

/// Tiles j .. j + S::LANES of [`InputRow`].
#[inline(always)]
fn input_tiles<S: Simd>(s: S, v: &mut [f32], n_t: usize, t0: usize, rows: &[&[f32]; 4], j: usize) {
    let mut d = [[s.splat(0.0); 4]; 4];
    for (dr, row) in d.iter_mut().zip(rows) {
        let (c0, c1) = s.load_deinterleaved(&row[2 * j..]);
        let (c2, c3) = s.load_deinterleaved(&row[2 * j + 2..]);
        *dr = [c0, c1, c2, c3];
    }
    let mut bd = [[s.splat(0.0); 4]; 4];
    for c in 0..4 {
        bd[0][c] = s.sub(d[0][c], d[2][c]);
        bd[1][c] = s.add(d[1][c], d[2][c]);
        bd[2][c] = s.sub(d[2][c], d[1][c]);
        bd[3][c] = s.sub(d[1][c], d[3][c]);
    }
    for (r, row) in bd.iter().enumerate() {
        let vals =
            [s.sub(row[0], row[2]), s.add(row[1], row[2]), s.sub(row[2], row[1]), s.sub(row[1], row[3])];
        for (c, val) in vals.into_iter().enumerate() {
            s.store(&mut v[(r * 4 + c) * n_t + t0 + j..], val);
        }
    }
}

/// The sources and destination of [`output_row`] / [`OutputRow`].
pub struct OutputRowArgs<'a, T> {
    /// Output row y, and row y + 1 unless it is past the frame; each `w_out` long.
    pub out: (&'a mut [T], Option<&'a mut [T]>),
    /// m[xi][j]: transformed product xi of tile j of this row; each at least `tw` long.
    pub m: [&'a [T]; 16],
    pub tw: usize,
    pub bias: T,
    /// Add to the output (which holds a residual) instead of overwriting it.
    pub accumulate: bool,
}

/// Rows y, y + 1 at columns 2j, 2j + 1 = A^T m_j A + bias (the columns that exist).
pub fn output_row<T: Element>(a: OutputRowArgs<'_, T>) {
    let OutputRowArgs { out: (o0, mut o1), m, tw, bias, accumulate } = a;
    let w_out = o0.len();
    for j in 0..tw {
        let e = |xi: usize| m[xi][j];
        // A^T m: rows (m0 + m1 + m2, m1 - m2 - m3), then the same on columns.
        let mut am = [[T::ZERO; 4]; 2];
        for c in 0..4 {
            am[0][c] = e(c) + e(4 + c) + e(8 + c);
            am[1][c] = e(4 + c) - e(8 + c) - e(12 + c);
        }
        for (r, row) in am.iter().enumerate() {
            let dst: &mut [T] = match r {
                0 => &mut *o0,
                _ => match o1.as_deref_mut() {
                    Some(d) => d,
                    None => continue,
                },
            };
            let vals = [row[0] + row[1] + row[2] + bias, row[1] - row[2] - row[3] + bias];
            for (k, val) in vals.into_iter().enumerate().take(w_out - 2 * j) {
                let o = &mut dst[2 * j + k];
                *o = if accumulate { *o + val } else { val };
            }
        }
    }
}

/// The widest vector of any ISA, in f32 lanes (AVX-512).
const MAX_LANES: usize = 16;

/// [`output_row`] on f32 in vectors of tiles.
pub struct OutputRow<'a>(pub OutputRowArgs<'a, f32>);

impl Kernel for OutputRow<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let OutputRowArgs { out: (o0, mut o1), m, tw, bias, accumulate } = self.0;
        let w_out = o0.len();
        assert!(w_out <= 2 * tw && 2 * tw <= w_out + 1);
        assert!(o1.as_ref().is_none_or(|o| o.len() == w_out));
        for mx in m {
            assert!(mx.len() >= tw);
        }
        // Tiles whose two columns both exist; an odd w_out leaves one half tile.
        let full = w_out / 2;
        let body = full / S::LANES * S::LANES;
        assert!(S::LANES <= MAX_LANES);
        for j in (0..body).step_by(S::LANES) {
            output_tiles(s, (o0, o1.as_deref_mut()), &m, j, bias, accumulate);
        }
        if body < full && full >= S::LANES {
            // The tail tiles from one vector ending at the last full tile, computed into a
            // buffer (the output may hold a residual, so tiles are not written twice) and
            // added or stored one by one, in the order the vector code adds.
            let (l, j0) = (S::LANES, full - S::LANES);
            let m1: [&[f32]; 16] = std::array::from_fn(|xi| &m[xi][j0..]);
            let mut t = [[0.0f32; 2 * MAX_LANES]; 2];
            let [t0, t1] = &mut t;
            output_tiles(s, (&mut t0[..2 * l], Some(&mut t1[..2 * l])), &m1, 0, bias, false);
            let skip = 2 * (body - j0);
            for (o, t) in [(Some(&mut *o0), &*t0), (o1.as_deref_mut(), &*t1)] {
                let Some(o) = o else { continue };
                for (d, &x) in o[2 * body..2 * full].iter_mut().zip(&t[skip..2 * l]) {
                    *d = if accumulate { *d + x } else { x };
                }
            }
        } else {
            for j in body..full {
                output_tiles(Lane1, (o0, o1.as_deref_mut()), &m, j, bias, accumulate);
            }
        }
        if full < tw {
            let m1: [&[f32]; 16] = std::array::from_fn(|xi| &m[xi][full..]);
            let o0 = &mut o0[2 * full..];
            let o1 = o1.map(|o| &mut o[2 * full..]);
            output_row(OutputRowArgs { out: (o0, o1), m: m1, tw: 1, bias, accumulate });
        }
    }
}

/// Tiles j .. j + S::LANES of [`OutputRow`], all with both columns inside the row.
#[inline(always)]
fn output_tiles<S: Simd>(
    s: S,
    (o0, o1): (&mut [f32], Option<&mut [f32]>),
    m: &[&[f32]; 16],
    j: usize,
    bias: f32,
    accumulate: bool,
) {
    // No closures here: a closure would not inherit the dispatcher's target features, and the
    // intrinsics inside it would be called out of line.
    let mut e = [s.splat(0.0); 16];
    for (ex, mx) in e.iter_mut().zip(m) {
        *ex = s.load(&mx[j..]);
    }
    let mut am = [[s.splat(0.0); 4]; 2];
    for c in 0..4 {
        am[0][c] = s.add(s.add(e[c], e[4 + c]), e[8 + c]);
        am[1][c] = s.sub(s.sub(e[4 + c], e[8 + c]), e[12 + c]);
    }
    let b = s.splat(bias);
    put_pair(s, &mut o0[2 * j..], &am[0], b, accumulate);
    if let Some(o1) = o1 {
        put_pair(s, &mut o1[2 * j..], &am[1], b, accumulate);
    }
}

/// dst[2i], dst[2i + 1] (+)= the two output columns of tile i from its row of A^T m.
#[inline(always)]
fn put_pair<S: Simd>(s: S, dst: &mut [f32], row: &[S::V; 4], b: S::V, accumulate: bool) {
    let mut x0 = s.add(s.add(s.add(row[0], row[1]), row[2]), b);
    let mut x1 = s.add(s.sub(s.sub(row[1], row[2]), row[3]), b);
    if accumulate {
        let (p0, p1) = s.load_deinterleaved(dst);
        x0 = s.add(p0, x0);
        x1 = s.add(p1, x1);
    }
    s.store_interleaved(dst, x0, x1);
}

/// Whether transformed position xi (row xi / 4, column xi % 4 of the 4x4 tile) is exactly zero
/// for every tile of a nearest-2x upsampled input with padding 1. A tile's input rows are then
/// 2i - 1 .. 2i + 2, i.e. upsampled rows (a, b, b, c), and row 2 of B^T is (0, -1, 1, 0):
/// b - b = 0, in every column (likewise for columns). So 7 of the 16 products are zero and
/// are not computed (2.25 instead of 4 multiplies per output); finite inputs give the same
/// output, bit for bit.
pub fn zero_on_nearest_2x(xi: usize) -> bool {
    xi / 4 == 2 || xi % 4 == 2
}
