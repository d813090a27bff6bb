//! Forward and backward kernels of the transformer's layers, fp32, for one
//! sequence of `t` positions. Activations are row-major `[t, channels]`;
//! weight matrices are `[out, in]` as in GPT-2, so a linear layer computes
//! `out = inp · Wᵀ + b`.
//!
//! # Determinism
//!
//! Every sum is taken in an order fixed by the shapes alone: no threads, no
//! data-dependent blocking. Reductions in the elementwise kernels (layer norm,
//! softmax, cross-entropy) keep 16 partial sums combined by a fixed tree and
//! never fuse a multiply with an add, so they give the same bits whichever
//! instruction set the CPU offers. The matrix products run on the fastest GEMM
//! of the CPU ([`gemm`]: a hand-written AVX-512 kernel, else
//! `matrixmultiply`); that choice is made once per process, so one machine
//! always gets the same bits, while machines with different vector units may
//! differ in the last places.
//!
//! # Accumulation conventions
//!
//! Parameter gradients are *overwritten* (each kernel writes its whole
//! gradient tensor), so the model needs no zeroing pass; gradients that flow
//! into the residual stream are *added* where the documentation says so.

use std::sync::OnceLock;

/// Epsilon added to the variance in layer norm, as GPT-2.
pub const LN_EPS: f32 = 1e-5;

/// Floats of scratch that [`gemm`] needs for packing a right-hand operand
/// that is not row-contiguous (e.g. `Wᵀ` in a linear layer's forward pass).
pub const GEMM_PACK_LEN: usize = GEMM_KC * GEMM_NC;

/// Depth (`k`) of one packed block of the right-hand operand.
const GEMM_KC: usize = 256;
/// Width (`n`) of one packed block of the right-hand operand.
const GEMM_NC: usize = 512;

// ---------------------------------------------------------------------------
// Instruction-set dispatch
// ---------------------------------------------------------------------------

/// The widest vector unit usable on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Baseline code for the target; always available.
    Portable,
    /// AVX2 with FMA.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    /// AVX-512 F/VL/BW/DQ (plus AVX2 and FMA).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
}

/// Probed once: the kernels must pick the same path on every call so that
/// results stay bit-identical for the life of the process.
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    #[cfg(test)]
    if let Some(forced) = FORCED_ISA.with(|f| f.get()) {
        return forced;
    }
    *ISA.get_or_init(detect_isa)
}

#[cfg(target_arch = "x86_64")]
fn detect_isa() -> Isa {
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    let avx512 = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq");
    match (avx2, avx512) {
        (true, true) => Isa::Avx512,
        (true, false) => Isa::Avx2,
        _ => Isa::Portable,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_isa() -> Isa {
    Isa::Portable
}

#[cfg(test)]
thread_local! {
    /// Test-only override of [`isa`] on this thread (must be supported by the CPU).
    static FORCED_ISA: std::cell::Cell<Option<Isa>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` on this thread with every kernel on its portable path
/// (`matrixmultiply`, baseline vector width).
#[cfg(test)]
pub(crate) fn on_portable_path<R>(f: impl FnOnce() -> R) -> R {
    FORCED_ISA.with(|c| c.set(Some(Isa::Portable)));
    let r = f();
    FORCED_ISA.with(|c| c.set(None));
    r
}

/// Compiles one function body three times (baseline, AVX2, AVX-512) and
/// calls the widest version the CPU supports. The body is plain Rust written
/// so that LLVM vectorises it; the wider targets only let it use wider
/// registers. As the body never fuses multiply and add and reduces through
/// fixed lane arrays, all three versions return identical bits.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn wide($($arg: $ty),*) $(-> $ret)? { portable($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn narrow($($arg: $ty),*) $(-> $ret)? { portable($($arg),*) }
                use $crate::training::ops::Isa;
                match $crate::training::ops::isa() {
                    // SAFETY: `isa()` found AVX-512 F/VL/BW/DQ, AVX2 and FMA on this CPU.
                    Isa::Avx512 => return unsafe { wide($($arg),*) },
                    // SAFETY: `isa()` found AVX2 and FMA on this CPU.
                    Isa::Avx2 => return unsafe { narrow($($arg),*) },
                    Isa::Portable => {}
                }
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use multiversion;

// ---------------------------------------------------------------------------
// Vectorisable scalar helpers
// ---------------------------------------------------------------------------

/// Number of partial sums in the lane reductions (one AVX-512 register).
const LANES: usize = 16;

/// Combines the partial sums by a fixed tree so the result never depends on
/// the vector width the compiler chose.
#[inline(always)]
fn reduce_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}

/// Σ x, in a fixed order that LLVM can still vectorise.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for i in 0..LANES {
            acc[i] += ch[i];
        }
    }
    let mut s = reduce_lanes(acc);
    for &v in rest {
        s += v;
    }
    s
}

/// Σ (x − m)².
#[inline(always)]
fn lane_sum_sq_dev(x: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for i in 0..LANES {
            let d = ch[i] - m;
            acc[i] += d * d;
        }
    }
    let mut s = reduce_lanes(acc);
    for &v in rest {
        let d = v - m;
        s += d * d;
    }
    s
}

/// Σ a·b.
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = reduce_lanes(acc);
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// max x (−∞ for an empty slice); a select rather than `f32::max` so it vectorises to one instruction.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for i in 0..LANES {
            acc[i] = if ch[i] > acc[i] { ch[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.into_iter().chain(rest.iter().copied()) {
        m = if v > m { v } else { m };
    }
    m
}

/// eˣ with a relative error of a few ulp, branch-free so loops over it
/// vectorise (`f32::exp` is a library call that blocks vectorisation).
/// Cephes' range reduction `x = n·ln2 + r`, |r| ≤ ln2/2, and its degree-6
/// polynomial; 2ⁿ is built in the exponent bits. Inputs below −87 give
/// exactly 0 (no subnormals to slow later products), above 88 saturate, NaN
/// stays NaN.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = if x > 88.0 { 88.0 } else { x };
    let xc = if xc < -87.0 { -87.0 } else { xc };
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    // n + 127 lies in [1, 254] after the clamp: a normal power of two.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

/// tanh(u) through [`exp_approx`]; absolute error ~1e-7, which is what GELU
/// needs (it multiplies tanh by x/2 and adds 1).
#[inline(always)]
fn tanh_approx(u: f32) -> f32 {
    // |u| ≥ 9 gives ±1 in f32 anyway; the clamp keeps e finite.
    let u = if u > 9.0 { 9.0 } else { u };
    let u = if u < -9.0 { -9.0 } else { u };
    let e = exp_approx(2.0 * u);
    (e - 1.0) / (e + 1.0)
}

// ---------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------

/// A read-only strided matrix view: element `(i, j)` is `data[i·rs + j·cs]`.
/// Transposes are views ([`MatRef::t`]), never copies.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// Backing storage; must hold every addressed element.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows, in floats.
    pub rs: usize,
    /// Distance between consecutive columns, in floats.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows × cols` row-major view with row stride `rs` (column stride 1).
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        MatRef { data, rows, cols, rs, cs: 1 }
    }

    /// The transposed view (no data moves).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Whether every addressed element lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        (self.rows - 1)
            .checked_mul(self.rs)
            .and_then(|r| (self.cols - 1).checked_mul(self.cs).and_then(|c| r.checked_add(c)))
            .is_some_and(|last| last < self.data.len())
    }
}

/// A writable row-major matrix view with row stride `rs` (columns contiguous).
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Backing storage; must hold every addressed element.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows, in floats (≥ `cols`).
    pub rs: usize,
}

impl<'a> MatMut<'a> {
    /// A `rows × cols` view with row stride `rs`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize) -> Self {
        MatMut { data, rows, cols, rs }
    }

    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        self.rs >= self.cols
            && (self.rows - 1)
                .checked_mul(self.rs)
                .and_then(|r| r.checked_add(self.cols))
                .is_some_and(|end| end <= self.data.len())
    }
}

/// `C = A·B (+ bias)` or, with `accumulate`, `C += A·B (+ bias)`; `bias`
/// (length ≥ `C.cols`) is added to every row. `pack` is scratch for packing
/// `B` when its columns are not contiguous; it needs [`GEMM_PACK_LEN`]
/// floats then and may be empty otherwise.
///
/// The order of the roundings is fixed by the shapes and by the CPU's GEMM
/// path (on AVX-512: one fused chain per element over `k` ascending, starting
/// from `C + bias`, `bias` or zero), never by timing, so repeated calls give
/// identical bits.
///
/// # Panics
/// If the shapes disagree, a view addresses memory outside its slice, or
/// `pack` is too short when needed.
pub fn gemm(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, bias: Option<&[f32]>, pack: &mut [f32]) {
    gemm_on(isa(), c, a, b, Epilogue { accumulate, bias, tri: Tri::Full }, pack);
}

/// Triangular structure of a square attention product that lets the
/// AVX-512 path skip about half of the work. The portable path ignores it
/// (it computes everything, which gives the same values: the skipped terms
/// are exact zeros, the skipped outputs are never read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    /// No structure.
    Full,
    /// Only `C[i][j]` with `j ≤ i` is wanted; tiles wholly above the diagonal are not written.
    LowerC,
    /// `A[i][p] = 0` for `p > i`: row `i` sums over `p ≤ i` only.
    LowerA,
    /// `A[i][p] = 0` for `p < i`: row `i` sums over `p ≥ i` only.
    UpperA,
}

/// How a product is combined into C.
#[derive(Debug, Clone, Copy)]
struct Epilogue<'a> {
    accumulate: bool,
    bias: Option<&'a [f32]>,
    tri: Tri,
}

/// `C = A·B` for the attention products, with their triangular structure.
fn gemm_tri(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, tri: Tri, pack: &mut [f32]) {
    gemm_on(isa(), c, a, b, Epilogue { accumulate: false, bias: None, tri }, pack);
}

/// [`gemm`] on a chosen path (tests compare the paths).
fn gemm_on(isa: Isa, c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, epi: Epilogue<'_>, pack: &mut [f32]) {
    let Epilogue { accumulate, bias, tri } = epi;
    let (m, n, k) = (c.rows, c.cols, a.cols);
    if tri != Tri::Full {
        assert!(m == k || tri == Tri::LowerC, "gemm: a triangular A must be square");
    }
    assert!(a.rows == m && b.rows == k && b.cols == n, "gemm: shapes {m}x{k} · {}x{} -> {m}x{n}", b.rows, b.cols);
    assert!(a.in_bounds() && b.in_bounds() && c.in_bounds(), "gemm: a view exceeds its slice");
    if let Some(bias) = bias {
        assert!(bias.len() >= n, "gemm: bias shorter than the output row");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c.data.chunks_mut(c.rs).take(m) {
            let row = &mut row[..n];
            match (accumulate, bias) {
                (false, None) => row.fill(0.0),
                (false, Some(b)) => row.copy_from_slice(&b[..n]),
                (true, Some(b)) => row.iter_mut().zip(b).for_each(|(y, &v)| *y += v),
                (true, None) => {}
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        if b.cs != 1 {
            assert!(pack.len() >= GEMM_PACK_LEN, "gemm: pack scratch shorter than GEMM_PACK_LEN");
        }
        let raw = avx512::Raw {
            m,
            n,
            k,
            a: a.data.as_ptr(),
            rsa: a.rs,
            csa: a.cs,
            b: b.data.as_ptr(),
            rsb: b.rs,
            csb: b.cs,
            c: c.data.as_mut_ptr(),
            rsc: c.rs,
            accumulate,
            bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
            pack: pack.as_mut_ptr(),
            tri,
        };
        // SAFETY: `isa()` found avx512f; the views were checked to stay inside
        // their slices, bias holds n floats, pack holds GEMM_PACK_LEN floats
        // when B needs packing, and `c` is borrowed mutably (no aliasing).
        unsafe { avx512::gemm(&raw) };
        return;
    }
    let _ = (isa, pack, tri);
    gemm_portable(c, a, b, accumulate, bias);
}

/// The portable path: `matrixmultiply` (which picks its own SIMD kernel).
fn gemm_portable(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, bias: Option<&[f32]>) {
    let (m, n, k) = (c.rows, c.cols, a.cols);
    if let Some(bias) = bias {
        for row in c.data.chunks_mut(c.rs).take(m) {
            let row = &mut row[..n];
            if accumulate {
                row.iter_mut().zip(bias).for_each(|(y, &v)| *y += v);
            } else {
                row.copy_from_slice(&bias[..n]);
            }
        }
    }
    let beta = if accumulate || bias.is_some() { 1.0 } else { 0.0 };
    // Strides fit isize: every view lies inside a slice, whose length does.
    let s = |x: usize| x as isize;
    // SAFETY: `gemm_on` checked that the m×k, k×n and m×n views stay inside
    // their slices and `c` is an exclusive borrow; with beta = 0
    // matrixmultiply does not read C.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            s(a.rs),
            s(a.cs),
            b.data.as_ptr(),
            s(b.rs),
            s(b.cs),
            beta,
            c.data.as_mut_ptr(),
            s(c.rs),
            1,
        );
    }
}

/// Hand-written AVX-512 GEMM for the small, skinny products of one sequence
/// (`m` = 64…1024, `k` = 32…1024): an 8×32 register tile (16 independent
/// FMA chains cover both FMA pipes' latency), `A` broadcast straight from
/// memory in any layout, `B` read in place when its rows are contiguous and
/// otherwise packed once per block (with 16×16 in-register transposes for the
/// common `Wᵀ` case). Compared with `matrixmultiply` it skips packing `A`,
/// allocates nothing, and fuses the bias and the accumulate into the tile.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tri, GEMM_KC as KC, GEMM_NC as NC};
    use std::arch::x86_64::*;

    /// Rows of the register tile.
    const MR: usize = 8;
    /// Columns of the register tile (two zmm).
    const NR: usize = 32;

    /// A GEMM problem as raw parts, validated by the safe caller.
    pub(super) struct Raw {
        pub m: usize,
        pub n: usize,
        pub k: usize,
        pub a: *const f32,
        pub rsa: usize,
        pub csa: usize,
        pub b: *const f32,
        pub rsb: usize,
        pub csb: usize,
        pub c: *mut f32,
        pub rsc: usize,
        pub accumulate: bool,
        /// Null for no bias.
        pub bias: *const f32,
        pub pack: *mut f32,
        pub tri: Tri,
    }

    /// One register tile's inputs.
    #[derive(Clone, Copy)]
    struct Tile {
        kc: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        load_c: bool,
        bias: *const f32,
        m0: __mmask16,
        m1: __mmask16,
    }

    /// # Safety
    /// The CPU supports avx512f; every element addressed by `p`'s shape and
    /// strides lies inside the allocations behind `a`, `b`, `c`; `bias` is
    /// null or holds `n` floats; `pack` holds `KC·NC` floats when `csb != 1`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(p: &Raw) {
        let direct = p.csb == 1;
        let mut pc = 0;
        while pc < p.k {
            let kc = KC.min(p.k - pc);
            let first = pc == 0;
            let load_c = !first || p.accumulate;
            let bias = if first { p.bias } else { std::ptr::null() };
            let mut jc = 0;
            while jc < p.n {
                let nc = if direct { p.n - jc } else { NC.min(p.n - jc) };
                let bsrc = p.b.wrapping_add(pc * p.rsb + jc * p.csb);
                if !direct {
                    // SAFETY: the block B[pc..pc+kc, jc..jc+nc] lies inside B (caller's
                    // contract) and kc·round_up(nc, NR) ≤ KC·NC floats fit in pack.
                    unsafe { pack_b(p.pack, bsrc, p.rsb, p.csb, kc, nc) };
                }
                let mut jr = 0;
                while jr < nc {
                    let nr = NR.min(nc - jr);
                    let (b, rsb) = if direct {
                        (bsrc.wrapping_add(jr), p.rsb)
                    } else {
                        (p.pack.cast_const().wrapping_add(jr * kc), NR)
                    };
                    let m0 = mask(nr);
                    let m1 = mask(nr.saturating_sub(16));
                    let mut ir = 0;
                    while ir < p.m {
                        let mr = MR.min(p.m - ir);
                        if p.tri == Tri::LowerC && jc + jr >= ir + mr {
                            // Every column of the tile lies above the diagonal.
                            ir += mr;
                            continue;
                        }
                        // The depth range of this row block with nonzero A, within the block.
                        let (lo, hi) = match p.tri {
                            Tri::LowerA => (0, p.k.min(ir + mr)),
                            Tri::UpperA => (ir, p.k),
                            Tri::Full | Tri::LowerC => (0, p.k),
                        };
                        let p0 = pc.max(lo);
                        let kt = (pc + kc).min(hi).saturating_sub(p0);
                        if kt == 0 && !first {
                            ir += mr;
                            continue;
                        }
                        // A first block with no terms still writes the initial value.
                        let t = Tile {
                            kc: kt,
                            a: p.a.wrapping_add(ir * p.rsa + p0 * p.csa),
                            rsa: p.rsa,
                            csa: p.csa,
                            b: b.wrapping_add(p0.saturating_sub(pc) * rsb),
                            rsb,
                            c: p.c.wrapping_add(ir * p.rsc + jc + jr),
                            rsc: p.rsc,
                            load_c,
                            bias: if bias.is_null() { bias } else { bias.wrapping_add(jc + jr) },
                            m0,
                            m1,
                        };
                        // SAFETY: rows ir..ir+mr, columns jc+jr..jc+jr+nr and depth
                        // pc..pc+kc are inside the problem; B rows come from the
                        // caller's B or the packed (padded) block.
                        unsafe { run_tile(mr, nr == NR, t) };
                        ir += mr;
                    }
                    jr += nr;
                }
                jc += nc;
            }
            pc += kc;
        }
    }

    /// The first `n` (≤ 16) lanes.
    #[inline(always)]
    fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// Picks the tile specialised for `mr` rows (and full or partial width).
    ///
    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run_tile(mr: usize, full: bool, t: Tile) {
        macro_rules! go {
            ($($r:literal)*) => {
                match (mr, full) {
                    // SAFETY: forwarded contract of `tile`.
                    $(($r, true) => unsafe { tile::<$r, true>(t) },
                    ($r, false) => unsafe { tile::<$r, false>(t) },)*
                    _ => unreachable!("tile rows are 1..=8"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8)
    }

    /// Loads 16 floats, only the lanes of `m` unless `FULL`.
    ///
    /// # Safety
    /// The selected lanes are readable.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load<const FULL: bool>(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: caller guarantees the (selected) lanes are readable; masked-off
        // lanes are not accessed.
        unsafe {
            if FULL {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(m, p)
            }
        }
    }

    /// One `R × 32` (or narrower, with masks) block of C over depth `kc`.
    ///
    /// # Safety
    /// avx512f present; A rows `0..R` × depth `0..kc`, B rows `0..kc` × the
    /// masked columns, and C rows `0..R` × the masked columns are in bounds.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const FULL: bool>(t: Tile) {
        let zero = _mm512_setzero_ps();
        let (bias0, bias1) = if t.bias.is_null() {
            (zero, zero)
        } else {
            // SAFETY: the bias holds a value for every masked column.
            unsafe { (load::<FULL>(t.bias, t.m0), load::<FULL>(t.bias.wrapping_add(16), t.m1)) }
        };
        let mut acc = [[bias0, bias1]; R];
        if t.load_c {
            for (r, row) in acc.iter_mut().enumerate() {
                let cp = t.c.wrapping_add(r * t.rsc).cast_const();
                // SAFETY: row r < R of C, masked columns in bounds.
                unsafe {
                    row[0] = _mm512_add_ps(load::<FULL>(cp, t.m0), row[0]);
                    row[1] = _mm512_add_ps(load::<FULL>(cp.wrapping_add(16), t.m1), row[1]);
                }
            }
        }
        let mut ap = t.a;
        let mut bp = t.b;
        for _ in 0..t.kc {
            // SAFETY: depth index < kc: this B row and these A elements are in bounds.
            unsafe {
                let b0 = load::<FULL>(bp, t.m0);
                let b1 = load::<FULL>(bp.wrapping_add(16), t.m1);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.wrapping_add(r * t.rsa));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
            }
            ap = ap.wrapping_add(t.csa);
            bp = bp.wrapping_add(t.rsb);
        }
        for (r, row) in acc.iter().enumerate() {
            let cp = t.c.wrapping_add(r * t.rsc);
            // SAFETY: row r < R of C, masked columns in bounds.
            unsafe {
                if FULL {
                    _mm512_storeu_ps(cp, row[0]);
                    _mm512_storeu_ps(cp.wrapping_add(16), row[1]);
                } else {
                    _mm512_mask_storeu_ps(cp, t.m0, row[0]);
                    _mm512_mask_storeu_ps(cp.wrapping_add(16), t.m1, row[1]);
                }
            }
        }
    }

    /// Packs the `kc × nc` block of B at `src` into column panels of width
    /// NR (`kc` rows of NR floats each, zero-padded past `nc`), the layout the
    /// tile reads with unit stride.
    ///
    /// # Safety
    /// avx512f present; the block is inside B; `dst` holds kc·round_up(nc, NR) floats.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b(dst: *mut f32, src: *const f32, rsb: usize, csb: usize, kc: usize, nc: usize) {
        let ncp = nc.div_ceil(NR) * NR;
        if rsb == 1 {
            // B = Wᵀ: each column j of B is a contiguous row of W. Transpose
            // 16×16 blocks in registers; rows past nc become zero padding.
            let mut j0 = 0;
            while j0 < ncp {
                let panel = dst.wrapping_add((j0 / NR) * kc * NR + j0 % NR);
                let mut p0 = 0;
                while p0 < kc {
                    let kn = 16.min(kc - p0);
                    let km = mask(kn);
                    let mut v = [_mm512_setzero_ps(); 16];
                    for (r, x) in v.iter_mut().enumerate() {
                        if j0 + r < nc {
                            // SAFETY: B[p0..p0+kn, j0+r] is inside the block.
                            *x = unsafe { _mm512_maskz_loadu_ps(km, src.wrapping_add((j0 + r) * csb + p0)) };
                        }
                    }
                    transpose16(&mut v);
                    for (q, x) in v.iter().enumerate().take(kn) {
                        // SAFETY: row p0+q < kc of a panel of the destination.
                        unsafe { _mm512_storeu_ps(panel.wrapping_add((p0 + q) * NR), *x) };
                    }
                    p0 += 16;
                }
                j0 += 16;
            }
        } else {
            for jp in (0..ncp).step_by(NR) {
                let panel = dst.wrapping_add(jp * kc);
                for p in 0..kc {
                    for jj in 0..NR {
                        let j = jp + jj;
                        // SAFETY: (p, j) is inside the block when j < nc; the
                        // destination row p of this panel is inside dst.
                        unsafe {
                            *panel.wrapping_add(p * NR + jj) =
                                if j < nc { *src.wrapping_add(p * rsb + j * csb) } else { 0.0 };
                        }
                    }
                }
            }
        }
    }

    /// In-register 16×16 transpose: 32-bit, 64-bit then 128-bit interleaves.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(v: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        // u[4q + c]: in 128-bit lane L, column 4L + c of rows 4q..4q+4.
        let mut u = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            let (a, b, c, d) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
            let pd = _mm512_castps_pd;
            u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
            u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
            u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
            u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
        }
        for c in 0..4 {
            let x0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
            let x1 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
            let y0 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
            let y1 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
            v[c] = _mm512_shuffle_f32x4::<0x88>(x0, y0);
            v[c + 8] = _mm512_shuffle_f32x4::<0xdd>(x0, y0);
            v[c + 4] = _mm512_shuffle_f32x4::<0x88>(x1, y1);
            v[c + 12] = _mm512_shuffle_f32x4::<0xdd>(x1, y1);
        }
    }
}

// ---------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------

multiversion! {
    /// `out[t] = wte[inputs[t]] + wpe[t]` for `t < inputs.len()`; `c` channels.
    ///
    /// # Panics
    /// If a token id is outside `wte` or the lengths disagree.
    pub fn embedding_forward(out: &mut [f32], inputs: &[u32], wte: &[f32], wpe: &[f32], c: usize) {
        let t = inputs.len();
        assert!(c > 0 && out.len() == t * c && wpe.len() >= t * c, "embedding_forward: shapes");
        for ((o, &tok), p) in out.chunks_exact_mut(c).zip(inputs).zip(wpe.chunks_exact(c)) {
            let e = &wte[tok as usize * c..][..c];
            for ((o, &e), &p) in o.iter_mut().zip(e).zip(p) {
                *o = e + p;
            }
        }
    }
}

multiversion! {
    /// Backward of [`embedding_forward`]: ADDS `dout[t]` into row
    /// `inputs[t]` of `dwte` (positions in order, so repeated tokens sum
    /// deterministically) and OVERWRITES all of `dwpe`: row `t` gets `dout[t]`,
    /// rows past the sequence get 0.
    ///
    /// # Panics
    /// If a token id is outside `dwte` or the lengths disagree.
    pub fn embedding_backward(dwte: &mut [f32], dwpe: &mut [f32], dout: &[f32], inputs: &[u32], c: usize) {
        let t = inputs.len();
        assert!(c > 0 && dout.len() == t * c && dwpe.len() >= t * c, "embedding_backward: shapes");
        for (&tok, d) in inputs.iter().zip(dout.chunks_exact(c)) {
            let g = &mut dwte[tok as usize * c..][..c];
            for (g, &d) in g.iter_mut().zip(d) {
                *g += d;
            }
        }
        let (seen, rest) = dwpe.split_at_mut(t * c);
        seen.copy_from_slice(dout);
        rest.fill(0.0);
    }
}

// ---------------------------------------------------------------------------
// Layer norm
// ---------------------------------------------------------------------------

multiversion! {
    /// Layer norm of each `c`-wide row of `inp` (`c = w.len()`): `out =
    /// (x − mean)·rstd·w + b`, `rstd = 1/√(var + LN_EPS)`; the per-row mean
    /// and rstd are stored for the backward pass.
    ///
    /// # Panics
    /// If the lengths disagree.
    pub fn layernorm_forward(out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], inp: &[f32], w: &[f32], b: &[f32]) {
        let (t, c) = (mean.len(), w.len());
        assert!(
            c > 0 && inp.len() == t * c && out.len() == t * c && rstd.len() == t && b.len() == c,
            "layernorm_forward: shapes"
        );
        let inv_c = 1.0 / c as f32;
        for (((x, o), m), r) in inp.chunks_exact(c).zip(out.chunks_exact_mut(c)).zip(mean.iter_mut()).zip(rstd) {
            let mu = lane_sum(x) * inv_c;
            let var = lane_sum_sq_dev(x, mu) * inv_c;
            let s = 1.0 / (var + LN_EPS).sqrt();
            for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
                *o = (x - mu) * s * w + b;
            }
            *m = mu;
            *r = s;
        }
    }
}

multiversion! {
    /// Backward of [`layernorm_forward`]: ADDS into `dinp`, OVERWRITES `dw`
    /// and `db` (summed over rows in order).
    ///
    /// # Panics
    /// If the lengths disagree.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_backward(
        dinp: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        let (t, c) = (mean.len(), w.len());
        assert!(
            c > 0
                && inp.len() == t * c
                && dout.len() == t * c
                && dinp.len() == t * c
                && rstd.len() == t
                && dw.len() == c
                && db.len() == c,
            "layernorm_backward: shapes"
        );
        dw.fill(0.0);
        db.fill(0.0);
        let inv_c = 1.0 / c as f32;
        for ((((x, dy), dx), &mu), &rs) in
            inp.chunks_exact(c).zip(dout.chunks_exact(c)).zip(dinp.chunks_exact_mut(c)).zip(mean).zip(rstd)
        {
            // Two row sums, Σ w·dy and Σ w·dy·x̂, in fixed lanes.
            let mut s1 = [0.0f32; LANES];
            let mut s2 = [0.0f32; LANES];
            let (mut r1, mut r2) = (0.0f32, 0.0f32);
            let full = c / LANES * LANES;
            for j in (0..full).step_by(LANES) {
                for i in 0..LANES {
                    let dn = w[j + i] * dy[j + i];
                    s1[i] += dn;
                    s2[i] += dn * ((x[j + i] - mu) * rs);
                }
            }
            for j in full..c {
                let dn = w[j] * dy[j];
                r1 += dn;
                r2 += dn * ((x[j] - mu) * rs);
            }
            let m1 = (reduce_lanes(s1) + r1) * inv_c;
            let m2 = (reduce_lanes(s2) + r2) * inv_c;
            for j in 0..c {
                let n = (x[j] - mu) * rs;
                let dn = w[j] * dy[j];
                dx[j] += (dn - m1 - n * m2) * rs;
                dw[j] += n * dy[j];
                db[j] += dy[j];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Linear layers (matmul + bias) and the tied output projection
// ---------------------------------------------------------------------------

/// Shape of a linear layer over `t` rows: `inp [t, c] → out [t, oc]` with
/// weight `[oc, c]` and bias `[oc]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    /// Rows (sequence positions).
    pub t: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub oc: usize,
}

/// `out = inp · Wᵀ + bias`, or with `accumulate` `out += inp · Wᵀ + bias`
/// (which fuses the residual add). `pack` needs [`GEMM_PACK_LEN`] floats.
///
/// # Panics
/// If the lengths disagree with `shape`.
pub fn matmul_forward(
    shape: Linear,
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    accumulate: bool,
    pack: &mut [f32],
) {
    let Linear { t, c, oc } = shape;
    assert!(out.len() == t * oc && inp.len() == t * c && w.len() == oc * c, "matmul_forward: shapes");
    assert!(bias.is_none_or(|b| b.len() == oc), "matmul_forward: bias length");
    gemm(MatMut::new(out, t, oc, oc), MatRef::new(inp, t, c, c), MatRef::new(w, oc, c, c).t(), accumulate, bias, pack);
}

/// Backward of [`matmul_forward`]: OVERWRITES `dinp = dout · W`,
/// `dw = doutᵀ · inp` and `dbias = Σ_t dout[t]`.
///
/// # Panics
/// If the lengths disagree with `shape`.
pub fn matmul_backward(
    shape: Linear,
    dinp: &mut [f32],
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
) {
    let Linear { t, c, oc } = shape;
    assert!(
        dinp.len() == t * c && dw.len() == oc * c && dout.len() == t * oc && inp.len() == t * c && w.len() == oc * c,
        "matmul_backward: shapes"
    );
    // Neither product has a transposed right operand, so neither packs.
    gemm(MatMut::new(dinp, t, c, c), MatRef::new(dout, t, oc, oc), MatRef::new(w, oc, c, c), false, None, &mut []);
    gemm(MatMut::new(dw, oc, c, c), MatRef::new(dout, t, oc, oc).t(), MatRef::new(inp, t, c, c), false, None, &mut []);
    if let Some(db) = dbias {
        assert!(db.len() == oc, "matmul_backward: bias length");
        column_sums(db, dout);
    }
}

multiversion! {
    /// `out[j] = Σ_rows m[row][j]` for a row-major matrix of `out.len()` columns.
    fn column_sums(out: &mut [f32], m: &[f32]) {
        out.fill(0.0);
        for row in m.chunks_exact(out.len()) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
    }
}

/// Output projection tied to the token embedding: `logits [t, v] = x [t, c]
/// · wteᵀ` (no bias; `shape.oc` is the vocabulary size).
///
/// # Panics
/// If the lengths disagree with `shape`.
pub fn projection_forward(shape: Linear, logits: &mut [f32], x: &[f32], wte: &[f32], pack: &mut [f32]) {
    matmul_forward(shape, logits, x, wte, None, false, pack);
}

/// Backward of [`projection_forward`]: OVERWRITES `dx = dlogits · wte` and
/// `dwte = dlogitsᵀ · x` (the embedding's share is added afterwards by
/// [`embedding_backward`]).
///
/// # Panics
/// If the lengths disagree with `shape`.
pub fn projection_backward(shape: Linear, dx: &mut [f32], dwte: &mut [f32], dlogits: &[f32], x: &[f32], wte: &[f32]) {
    matmul_backward(shape, dx, dwte, None, dlogits, x, wte);
}

// ---------------------------------------------------------------------------
// Causal multi-head self-attention
// ---------------------------------------------------------------------------

/// Shape of causal self-attention over `t` positions, `c` channels split into
/// `heads` heads of `c / heads` channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attention {
    /// Sequence length.
    pub t: usize,
    /// Model width (query, key and value each have `c` channels).
    pub c: usize,
    /// Number of heads; divides `c`.
    pub heads: usize,
}

impl Attention {
    fn check(&self) -> (usize, usize, usize) {
        let Attention { t, c, heads } = *self;
        assert!(heads > 0 && c.is_multiple_of(heads), "attention: heads must divide c");
        (t, c, c / heads)
    }
}

/// Causal attention on the packed `qkv [t, 3c]` (query, key, value
/// side by side, heads contiguous within each): `out [t, c]` gets each head's
/// `softmax(q·kᵀ/√hs, masked to j ≤ i) · v`; `att [heads, t, t]` keeps the
/// probabilities (zero above the diagonal) for the backward pass.
///
/// # Panics
/// If the lengths disagree with `shape`.
pub fn attention_forward(shape: Attention, out: &mut [f32], att: &mut [f32], qkv: &[f32], pack: &mut [f32]) {
    let (t, c, hs) = shape.check();
    assert!(
        out.len() == t * c && att.len() == shape.heads * t * t && qkv.len() == t * 3 * c,
        "attention_forward: shapes"
    );
    let scale = 1.0 / (hs as f32).sqrt();
    for (h, a) in att.chunks_exact_mut(t * t).enumerate() {
        let q = MatRef::new(&qkv[h * hs..], t, hs, 3 * c);
        let k = MatRef::new(&qkv[c + h * hs..], t, hs, 3 * c);
        let v = MatRef::new(&qkv[2 * c + h * hs..], t, hs, 3 * c);
        gemm_tri(MatMut::new(a, t, t, t), q, k.t(), Tri::LowerC, pack);
        causal_softmax(a, t, scale);
        gemm_tri(MatMut::new(&mut out[h * hs..], t, hs, c), MatRef::new(a, t, t, t), v, Tri::LowerA, pack);
    }
}

/// Backward of [`attention_forward`]: OVERWRITES all of `dqkv [t, 3c]`;
/// `datt` is `t·t` floats of scratch.
///
/// # Panics
/// If the lengths disagree with `shape`.
pub fn attention_backward(
    shape: Attention,
    dqkv: &mut [f32],
    datt: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    pack: &mut [f32],
) {
    let (t, c, hs) = shape.check();
    assert!(
        dqkv.len() == t * 3 * c
            && datt.len() == t * t
            && dout.len() == t * c
            && qkv.len() == t * 3 * c
            && att.len() == shape.heads * t * t,
        "attention_backward: shapes"
    );
    let scale = 1.0 / (hs as f32).sqrt();
    for (h, a) in att.chunks_exact(t * t).enumerate() {
        let q = MatRef::new(&qkv[h * hs..], t, hs, 3 * c);
        let k = MatRef::new(&qkv[c + h * hs..], t, hs, 3 * c);
        let v = MatRef::new(&qkv[2 * c + h * hs..], t, hs, 3 * c);
        let dy = MatRef::new(&dout[h * hs..], t, hs, c);
        let p = MatRef::new(a, t, t, t);
        // dP = dY · Vᵀ, then through the softmax (and the 1/√hs) in place.
        gemm_tri(MatMut::new(datt, t, t, t), dy, v.t(), Tri::LowerC, pack);
        causal_softmax_backward(datt, a, t, scale);
        let ds = MatRef::new(datt, t, t, t);
        gemm_tri(MatMut::new(&mut dqkv[h * hs..], t, hs, 3 * c), ds, k, Tri::LowerA, pack);
        gemm_tri(MatMut::new(&mut dqkv[c + h * hs..], t, hs, 3 * c), ds.t(), q, Tri::UpperA, pack);
        gemm_tri(MatMut::new(&mut dqkv[2 * c + h * hs..], t, hs, 3 * c), p.t(), dy, Tri::UpperA, pack);
    }
}

multiversion! {
    /// Row i of the `t × t` scores: softmax of `scale·s[i][0..=i]`, zeros after.
    fn causal_softmax(a: &mut [f32], t: usize, scale: f32) {
        for (i, row) in a.chunks_exact_mut(t).enumerate() {
            let (live, masked) = row.split_at_mut(i + 1);
            // fl(x·scale) is monotonic in x (scale > 0): max then scale is exact.
            let mx = lane_max(live) * scale;
            let mut acc = [0.0f32; LANES];
            let mut chunks = live.chunks_exact_mut(LANES);
            for ch in &mut chunks {
                for l in 0..LANES {
                    let e = exp_approx(ch[l] * scale - mx);
                    ch[l] = e;
                    acc[l] += e;
                }
            }
            let mut sum = reduce_lanes(acc);
            for x in chunks.into_remainder() {
                let e = exp_approx(*x * scale - mx);
                *x = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            for x in live.iter_mut() {
                *x *= inv;
            }
            masked.fill(0.0);
        }
    }
}

multiversion! {
    /// `d` holds dP on entry and dS = scale·P⊙(dP − Σ_j P·dP) on return (zero above the diagonal).
    fn causal_softmax_backward(d: &mut [f32], p: &[f32], t: usize, scale: f32) {
        for (i, (drow, prow)) in d.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate() {
            let (live, masked) = drow.split_at_mut(i + 1);
            let pl = &prow[..=i];
            let dot = lane_dot(pl, live);
            for (x, &p) in live.iter_mut().zip(pl) {
                *x = p * (*x - dot) * scale;
            }
            masked.fill(0.0);
        }
    }
}

// ---------------------------------------------------------------------------
// GELU and residual
// ---------------------------------------------------------------------------

/// √(2/π), the GELU tanh approximation's scale.
const GELU_S: f32 = 0.797_884_6;
/// The cubic coefficient of the GELU tanh approximation.
const GELU_C: f32 = 0.044_715;

multiversion! {
    /// GELU with GPT-2's tanh approximation: `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
        assert_eq!(out.len(), inp.len(), "gelu_forward: lengths");
        for (o, &x) in out.iter_mut().zip(inp) {
            let u = GELU_S * (x + GELU_C * x * x * x);
            *o = 0.5 * x * (1.0 + tanh_approx(u));
        }
    }
}

multiversion! {
    /// Backward of [`gelu_forward`] in place: `d` holds d(out) on entry and
    /// d(inp) on return; `inp` is the forward input.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn gelu_backward(d: &mut [f32], inp: &[f32]) {
        assert_eq!(d.len(), inp.len(), "gelu_backward: lengths");
        for (d, &x) in d.iter_mut().zip(inp) {
            let x2 = x * x;
            let th = tanh_approx(GELU_S * (x + GELU_C * x2 * x));
            let du = GELU_S * (1.0 + 3.0 * GELU_C * x2);
            *d *= 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du;
        }
    }
}

multiversion! {
    /// `out = a + b` (the model fuses this into [`matmul_forward`]'s accumulate; kept for callers that do not).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn residual_forward(out: &mut [f32], a: &[f32], b: &[f32]) {
        assert!(out.len() == a.len() && out.len() == b.len(), "residual_forward: lengths");
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    }
}

multiversion! {
    /// Backward of [`residual_forward`]: ADDS `dout` into both `da` and `db`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn residual_backward(da: &mut [f32], db: &mut [f32], dout: &[f32]) {
        assert!(da.len() == dout.len() && db.len() == dout.len(), "residual_backward: lengths");
        for ((a, b), &d) in da.iter_mut().zip(db.iter_mut()).zip(dout) {
            *a += d;
            *b += d;
        }
    }
}

// ---------------------------------------------------------------------------
// Softmax cross-entropy
// ---------------------------------------------------------------------------

/// One row's cross-entropy `logsumexp(row) − row[target]`, leaving
/// `exp(row − max)` in `row`; returns the loss and the sum of those exps.
#[inline(always)]
fn ce_row(row: &mut [f32], target: usize) -> (f64, f32) {
    let lt = row[target];
    let mx = lane_max(row);
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for ch in &mut chunks {
        for l in 0..LANES {
            let e = exp_approx(ch[l] - mx);
            ch[l] = e;
            acc[l] += e;
        }
    }
    let mut sum = reduce_lanes(acc);
    for x in chunks.into_remainder() {
        let e = exp_approx(*x - mx);
        *x = e;
        sum += e;
    }
    ((mx as f64 - lt as f64) + (sum as f64).ln(), sum)
}

fn check_ce(logits: &[f32], targets: &[u32], weights: &[f32], v: usize) {
    assert!(v > 0 && logits.len() == targets.len() * v && weights.len() == targets.len(), "crossentropy: shapes");
    assert!(targets.iter().all(|&y| (y as usize) < v), "crossentropy: target out of range");
}

multiversion! {
    /// Weighted softmax cross-entropy over rows of `v` logits:
    /// `Σ_t weights[t]·(logsumexp(logits[t]) − logits[t][targets[t]])`,
    /// summed in f64 in row order. `logits` is clobbered.
    ///
    /// # Panics
    /// If the lengths disagree or a target is ≥ `v`.
    pub fn crossentropy_forward(logits: &mut [f32], targets: &[u32], weights: &[f32], v: usize) -> f64 {
        check_ce(logits, targets, weights, v);
        let mut loss = 0.0f64;
        for ((row, &y), &w) in logits.chunks_exact_mut(v).zip(targets).zip(weights) {
            loss += w as f64 * ce_row(row, y as usize).0;
        }
        loss
    }
}

multiversion! {
    /// [`crossentropy_forward`] that also replaces `logits` with the
    /// gradient `weights[t]·(softmax(logits[t]) − onehot(targets[t]))`; the
    /// loss is bit-identical to the forward-only call.
    ///
    /// # Panics
    /// If the lengths disagree or a target is ≥ `v`.
    pub fn crossentropy_forward_backward(logits: &mut [f32], targets: &[u32], weights: &[f32], v: usize) -> f64 {
        check_ce(logits, targets, weights, v);
        let mut loss = 0.0f64;
        for ((row, &y), &w) in logits.chunks_exact_mut(v).zip(targets).zip(weights) {
            let (ce, sum) = ce_row(row, y as usize);
            loss += w as f64 * ce;
            let s = w / sum;
            for x in row.iter_mut() {
                *x *= s;
            }
            row[y as usize] -= w;
        }
        loss
    }
}

/// Plain f64 implementations of every layer's forward pass: the yardstick
/// for the kernels and, through finite differences, for their backward.
#[cfg(test)]
pub(crate) mod reference {
    /// `out[t] = wte[tok] + wpe[t]`.
    pub fn embedding(inputs: &[u32], wte: &[f64], wpe: &[f64], c: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(inputs.len() * c);
        for (t, &tok) in inputs.iter().enumerate() {
            for i in 0..c {
                out.push(wte[tok as usize * c + i] + wpe[t * c + i]);
            }
        }
        out
    }

    /// Row-wise layer norm with eps 1e-5.
    pub fn layernorm(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let c = w.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(c) {
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + super::LN_EPS as f64).sqrt();
            out.extend(row.iter().zip(w).zip(b).map(|((v, w), b)| (v - mean) * rstd * w + b));
        }
        out
    }

    /// `x [t, c] · wᵀ + b`, w `[oc, c]`.
    pub fn linear(x: &[f64], w: &[f64], b: Option<&[f64]>, c: usize, oc: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len() / c * oc);
        for row in x.chunks(c) {
            for o in 0..oc {
                let dot: f64 = row.iter().zip(&w[o * c..(o + 1) * c]).map(|(a, b)| a * b).sum();
                out.push(dot + b.map_or(0.0, |b| b[o]));
            }
        }
        out
    }

    /// Causal multi-head attention on packed qkv `[t, 3c]`.
    pub fn attention(qkv: &[f64], t: usize, c: usize, heads: usize) -> Vec<f64> {
        let hs = c / heads;
        let scale = 1.0 / (hs as f64).sqrt();
        let mut out = vec![0.0; t * c];
        for h in 0..heads {
            for i in 0..t {
                let q = &qkv[i * 3 * c + h * hs..][..hs];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        q.iter().zip(&qkv[j * 3 * c + c + h * hs..][..hs]).map(|(a, b)| a * b).sum::<f64>() * scale
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for d in 0..hs {
                        out[i * c + h * hs + d] += ej / sum * qkv[j * 3 * c + 2 * c + h * hs + d];
                    }
                }
            }
        }
        out
    }

    /// GELU, tanh approximation.
    pub fn gelu(x: &[f64]) -> Vec<f64> {
        let s = (2.0 / std::f64::consts::PI).sqrt();
        x.iter().map(|&x| 0.5 * x * (1.0 + (s * (x + 0.044715 * x * x * x)).tanh())).collect()
    }

    /// Σ_t w_t · (logsumexp(row_t) − row_t[y_t]).
    pub fn crossentropy(logits: &[f64], targets: &[u32], weights: &[f32], v: usize) -> f64 {
        let mut loss = 0.0;
        for ((row, &y), &w) in logits.chunks(v).zip(targets).zip(weights) {
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
            loss += w as f64 * (lse - row[y as usize]);
        }
        loss
    }

    /// Central-difference gradient of `f` at `x`.
    pub fn numeric_grad(x: &[f64], eps: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
        let mut x = x.to_vec();
        (0..x.len())
            .map(|i| {
                let orig = x[i];
                x[i] = orig + eps;
                let up = f(&x);
                x[i] = orig - eps;
                let down = f(&x);
                x[i] = orig;
                (up - down) / (2.0 * eps)
            })
            .collect()
    }

    /// Σ a·b, the scalar loss whose gradient wrt the layer output is `b`.
    pub fn dot(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Asserts `|analytic − numeric| ≤ rtol·(|numeric| + rms(numeric))` per
    /// element, and that the gradient is not trivially zero (so the check
    /// has teeth).
    pub fn assert_grad_close(name: &str, analytic: &[f32], numeric: &[f64], rtol: f64) {
        assert_eq!(analytic.len(), numeric.len(), "{name}: lengths");
        let rms = (numeric.iter().map(|x| x * x).sum::<f64>() / numeric.len().max(1) as f64).sqrt();
        assert!(rms > 1e-6, "{name}: numeric gradient is ~0 (rms {rms:e}); the check would be vacuous");
        for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
            let err = (a as f64 - n).abs();
            let tol = rtol * (n.abs() + rms);
            assert!(err <= tol, "{name}[{i}]: analytic {a:e} vs numeric {n:e} (err {err:e} > tol {tol:e})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{self as r, assert_grad_close, numeric_grad};
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * scale).collect()
    }

    fn f64s(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| v as f64).collect()
    }

    fn assert_values_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{name}: lengths");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{name}[{i}]: {g} vs {w}");
        }
    }

    const EPS: f64 = 1e-5;

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if isa() != Isa::Portable {
            v.push(isa());
        }
        if isa() == Isa::Avx512 {
            v.push(Isa::Avx2);
        }
        v
    }

    /// Naive f64 C = (acc ? C : 0) + A·B + bias.
    fn naive_gemm(c: &mut [f64], rsc: usize, a: &MatRef<'_>, b: &MatRef<'_>, acc: bool, bias: Option<&[f32]>) {
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = if acc { c[i * rsc + j] } else { 0.0 };
                s += bias.map_or(0.0, |b| b[j] as f64);
                for p in 0..a.cols {
                    s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
                c[i * rsc + j] = s;
            }
        }
    }

    #[test]
    fn gemm_matches_naive_on_every_path_layout_and_edge() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut pack = vec![f32::NAN; GEMM_PACK_LEN];
        let dims = [
            (1, 1, 1),
            (3, 5, 7),
            (8, 32, 16),
            (9, 33, 17),
            (17, 31, 300),
            (64, 96, 128),
            (13, 600, 40),
            (70, 530, 257),
        ];
        for &(m, n, k) in &dims {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for (acc, with_bias) in [(false, false), (true, false), (false, true), (true, true)] {
                    let a_data = randn(&mut rng, m * k + 3, 1.0);
                    let b_data = randn(&mut rng, k * n + 5, 1.0);
                    let bias = randn(&mut rng, n, 1.0);
                    // Stored with padding in the leading dimension to exercise strides.
                    let a = if ta { MatRef::new(&a_data, k, m, m).t() } else { MatRef::new(&a_data, m, k, k) };
                    let b = if tb { MatRef::new(&b_data, n, k, k).t() } else { MatRef::new(&b_data, k, n, n) };
                    let rsc = n + 3;
                    let c0 = randn(&mut rng, m * rsc, 1.0);
                    let mut want = f64s(&c0);
                    naive_gemm(&mut want, rsc, &a, &b, acc, with_bias.then_some(&bias[..]));
                    for &path in &isas() {
                        let mut c = c0.clone();
                        let bias = with_bias.then_some(&bias[..]);
                        let epi = Epilogue { accumulate: acc, bias, tri: Tri::Full };
                        gemm_on(path, MatMut::new(&mut c, m, n, rsc), a, b, epi, &mut pack);
                        for i in 0..m {
                            for j in 0..rsc {
                                let (g, w) = (c[i * rsc + j] as f64, want[i * rsc + j]);
                                let tol = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                                assert!(
                                    (g - w).abs() <= tol,
                                    "{path:?} m{m} n{n} k{k} ta{ta} tb{tb} acc{acc} bias{with_bias} ({i},{j}): {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gemm_general_strides_and_k_zero() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut pack = vec![0.0; GEMM_PACK_LEN];
        let (m, n, k) = (5, 37, 11);
        let a_data = randn(&mut rng, 400, 1.0);
        let b_data = randn(&mut rng, 2000, 1.0);
        // Neither layout has a unit stride: exercises the scalar packing path.
        let a = MatRef { data: &a_data, rows: m, cols: k, rs: 3, cs: 17 };
        let b = MatRef { data: &b_data, rows: k, cols: n, rs: 2, cs: 41 };
        let mut want = vec![0.0; m * n];
        naive_gemm(&mut want, n, &a, &b, false, None);
        for &path in &isas() {
            let mut c = vec![f32::NAN; m * n];
            let epi = Epilogue { accumulate: false, bias: None, tri: Tri::Full };
            gemm_on(path, MatMut::new(&mut c, m, n, n), a, b, epi, &mut pack);
            assert_values_close("general strides", &c, &want, 1e-5);
            let bias = randn(&mut rng, n, 1.0);
            let empty = MatRef::new(&[], m, 0, 0);
            let epi = Epilogue { accumulate: false, bias: Some(&bias), tri: Tri::Full };
            gemm_on(path, MatMut::new(&mut c, m, n, n), empty, MatRef::new(&[], 0, n, n), epi, &mut pack);
            for row in c.chunks(n) {
                assert_eq!(row, &bias[..]);
            }
        }
    }

    #[test]
    fn triangular_gemms_match_naive() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut pack = vec![0.0; GEMM_PACK_LEN];
        // t > GEMM_KC exercises a depth split inside the triangle.
        for (t, n) in [(1, 3), (5, 4), (8, 32), (19, 40), (70, 33), (300, 20)] {
            let mut lower = randn(&mut rng, t * t, 1.0);
            for i in 0..t {
                lower[i * t + i + 1..(i + 1) * t].fill(0.0);
            }
            let b_data = randn(&mut rng, t * n, 1.0);
            let b = MatRef::new(&b_data, t, n, n);
            let l = MatRef::new(&lower, t, t, t);
            for (a, tri) in [(l, Tri::LowerA), (l.t(), Tri::UpperA)] {
                let mut want = vec![0.0; t * n];
                naive_gemm(&mut want, n, &a, &b, false, None);
                for &path in &isas() {
                    let mut c = vec![f32::NAN; t * n];
                    let epi = Epilogue { accumulate: false, bias: None, tri };
                    gemm_on(path, MatMut::new(&mut c, t, n, n), a, b, epi, &mut pack);
                    assert_values_close(&format!("{tri:?} t{t} {path:?}"), &c, &want, 1e-5 * (t as f64).sqrt());
                }
            }
            // LowerC: only the lower triangle is defined.
            let q = randn(&mut rng, t * n, 1.0);
            let (qa, kb) = (MatRef::new(&q, t, n, n), MatRef::new(&b_data, t, n, n).t());
            let mut want = vec![0.0; t * t];
            naive_gemm(&mut want, t, &qa, &kb, false, None);
            for &path in &isas() {
                let mut c = vec![f32::NAN; t * t];
                let epi = Epilogue { accumulate: false, bias: None, tri: Tri::LowerC };
                gemm_on(path, MatMut::new(&mut c, t, t, t), qa, kb, epi, &mut pack);
                for i in 0..t {
                    assert_values_close(
                        "LowerC",
                        &c[i * t..=i * t + i],
                        &want[i * t..=i * t + i],
                        1e-5 * (n as f64).sqrt(),
                    );
                }
            }
        }
    }

    #[test]
    fn exp_and_tanh_are_accurate() {
        let mut x = -100.0f32;
        while x < 90.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            if x < -87.0 {
                assert_eq!(got, 0.0);
            } else if x <= 88.0 {
                assert!((got - want).abs() <= 4e-7 * want, "exp({x}) = {got} vs {want}");
            }
            let th = tanh_approx(x / 10.0) as f64;
            assert!((th - (x as f64 / 10.0).tanh()).abs() <= 2e-7, "tanh({})", x / 10.0);
            x += 0.0137;
        }
        assert!(exp_approx(f32::NAN).is_nan());
    }

    /// Runs `f` with [`isa`] forced to each path this CPU supports.
    fn on_each_isa<R>(mut f: impl FnMut() -> R) -> Vec<R> {
        let out = isas()
            .into_iter()
            .map(|i| {
                FORCED_ISA.with(|c| c.set(Some(i)));
                f()
            })
            .collect();
        FORCED_ISA.with(|c| c.set(None));
        out
    }

    #[test]
    fn elementwise_kernels_give_identical_bits_on_every_isa() {
        let mut rng = StdRng::seed_from_u64(12);
        let (t, c, v) = (13, 100, 77);
        let x = randn(&mut rng, t * c, 3.0);
        let w = randn(&mut rng, c, 1.0);
        let b = randn(&mut rng, c, 1.0);
        let dy = randn(&mut rng, t * c, 1.0);
        let logits = randn(&mut rng, t * v, 5.0);
        let targets: Vec<u32> = (0..t as u32).map(|i| i * 5).collect();
        let weights = randn(&mut rng, t, 1.0);
        let runs = on_each_isa(|| {
            let (mut out, mut mean, mut rstd) = (vec![0.0; t * c], vec![0.0; t], vec![0.0; t]);
            layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b);
            let (mut dx, mut dw, mut db) = (vec![0.0; t * c], vec![0.0; c], vec![0.0; c]);
            layernorm_backward(&mut dx, &mut dw, &mut db, &dy, &x, &w, &mean, &rstd);
            let mut g = vec![0.0; t * c];
            gelu_forward(&mut g, &x);
            let mut dg = dy.clone();
            gelu_backward(&mut dg, &x);
            let mut sm = x[..t * t].to_vec();
            causal_softmax(&mut sm, t, 0.3);
            let mut ds = dy[..t * t].to_vec();
            causal_softmax_backward(&mut ds, &sm, t, 0.3);
            let mut l = logits.clone();
            let loss = crossentropy_forward_backward(&mut l, &targets, &weights, v);
            let mut cs = vec![0.0; c];
            column_sums(&mut cs, &x);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let all: Vec<Vec<u32>> =
                [&out, &mean, &rstd, &dx, &dw, &db, &g, &dg, &sm, &ds, &l, &cs].map(|v| bits(v)).into();
            (all, loss.to_bits())
        });
        assert!(runs.len() >= 2 || isa() == Isa::Portable);
        for r in &runs[1..] {
            assert!(r == &runs[0], "an elementwise kernel differs between instruction sets");
        }
    }

    #[test]
    fn reductions_are_identical_on_every_isa() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = randn(&mut rng, 1000, 3.0);
        let w = randn(&mut rng, 100, 1.0);
        let b = randn(&mut rng, 100, 1.0);
        let mut out = [vec![0.0; 1000], vec![0.0; 1000]];
        let (mut m, mut s) = (vec![0.0; 10], vec![0.0; 10]);
        layernorm_forward(&mut out[0], &mut m, &mut s, &x, &w, &b);
        // The portable body alone (what a CPU without AVX would run).
        let mut acc = [0.0f32; LANES];
        for ch in x[..992].chunks_exact(LANES) {
            for i in 0..LANES {
                acc[i] += ch[i];
            }
        }
        let mut want = reduce_lanes(acc);
        for &v in &x[992..] {
            want += v;
        }
        assert_eq!(lane_sum(&x).to_bits(), want.to_bits());
        let mut logits = [x.clone(), x.clone()];
        let targets: Vec<u32> = (0..10).map(|i| i * 7).collect();
        let weights = vec![1.0; 10];
        let l0 = crossentropy_forward(&mut logits[0], &targets, &weights, 100);
        let l1 = crossentropy_forward_backward(&mut logits[1], &targets, &weights, 100);
        assert_eq!(l0.to_bits(), l1.to_bits());
        gelu_forward(&mut out[1], &x);
        let again = {
            let mut o = vec![0.0; 1000];
            gelu_forward(&mut o, &x);
            o
        };
        assert_eq!(out[1], again);
    }

    #[test]
    fn embedding_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(4);
        let (v, c, tm) = (7, 5, 6);
        let inputs = [3u32, 1, 3, 6];
        let t = inputs.len();
        let wte = randn(&mut rng, v * c, 1.0);
        let wpe = randn(&mut rng, tm * c, 1.0);
        let dout = randn(&mut rng, t * c, 1.0);
        let mut out = vec![0.0; t * c];
        embedding_forward(&mut out, &inputs, &wte, &wpe, c);
        assert_values_close("embedding", &out, &r::embedding(&inputs, &f64s(&wte), &f64s(&wpe), c), 1e-6);
        let mut dwte = vec![0.0; v * c];
        let mut dwpe = vec![f32::NAN; tm * c];
        embedding_backward(&mut dwte, &mut dwpe, &dout, &inputs, c);
        let d = f64s(&dout);
        let nwte = numeric_grad(&f64s(&wte), EPS, |w| r::dot(&r::embedding(&inputs, w, &f64s(&wpe), c), &d));
        let nwpe = numeric_grad(&f64s(&wpe), EPS, |p| r::dot(&r::embedding(&inputs, &f64s(&wte), p, c), &d));
        assert_grad_close("dwte", &dwte, &nwte, 1e-6);
        assert_grad_close("dwpe", &dwpe, &nwpe, 1e-6);
    }

    #[test]
    fn layernorm_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(5);
        for (t, c) in [(3, 7), (4, 40)] {
            let x: Vec<f32> = randn(&mut rng, t * c, 2.0).iter().map(|v| v + 0.5).collect();
            let w: Vec<f32> = randn(&mut rng, c, 1.0).iter().map(|v| v + 1.0).collect();
            let b = randn(&mut rng, c, 1.0);
            let dout = randn(&mut rng, t * c, 1.0);
            let (mut out, mut mean, mut rstd) = (vec![0.0; t * c], vec![0.0; t], vec![0.0; t]);
            layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b);
            assert_values_close("layernorm", &out, &r::layernorm(&f64s(&x), &f64s(&w), &f64s(&b)), 1e-5);
            // dinp accumulates: start from a known offset and subtract it.
            let base = randn(&mut rng, t * c, 1.0);
            let mut dinp = base.clone();
            let (mut dw, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
            layernorm_backward(&mut dinp, &mut dw, &mut db, &dout, &x, &w, &mean, &rstd);
            let dx: Vec<f32> = dinp.iter().zip(&base).map(|(a, b)| a - b).collect();
            let (xd, wd, bd, d) = (f64s(&x), f64s(&w), f64s(&b), f64s(&dout));
            let nx = numeric_grad(&xd, EPS, |x| r::dot(&r::layernorm(x, &wd, &bd), &d));
            let nw = numeric_grad(&wd, EPS, |w| r::dot(&r::layernorm(&xd, w, &bd), &d));
            let nb = numeric_grad(&bd, EPS, |b| r::dot(&r::layernorm(&xd, &wd, b), &d));
            assert_grad_close("ln dinp", &dx, &nx, 1e-3);
            assert_grad_close("ln dw", &dw, &nw, 1e-4);
            assert_grad_close("ln db", &db, &nb, 1e-5);
        }
    }

    #[test]
    fn matmul_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut pack = vec![0.0; GEMM_PACK_LEN];
        for shape in [Linear { t: 3, c: 5, oc: 7 }, Linear { t: 9, c: 33, oc: 40 }] {
            let Linear { t, c, oc } = shape;
            let x = randn(&mut rng, t * c, 1.0);
            let w = randn(&mut rng, oc * c, 1.0);
            let b = randn(&mut rng, oc, 1.0);
            let dout = randn(&mut rng, t * oc, 1.0);
            let mut out = randn(&mut rng, t * oc, 1.0);
            let before = f64s(&out);
            matmul_forward(shape, &mut out, &x, &w, Some(&b), true, &mut pack);
            let want: Vec<f64> = r::linear(&f64s(&x), &f64s(&w), Some(&f64s(&b)), c, oc)
                .iter()
                .zip(&before)
                .map(|(a, b)| a + b)
                .collect();
            assert_values_close("matmul accumulate", &out, &want, 1e-5);
            matmul_forward(shape, &mut out, &x, &w, Some(&b), false, &mut pack);
            assert_values_close("matmul", &out, &r::linear(&f64s(&x), &f64s(&w), Some(&f64s(&b)), c, oc), 1e-5);
            let (mut dx, mut dw, mut db) = (vec![f32::NAN; t * c], vec![f32::NAN; oc * c], vec![f32::NAN; oc]);
            matmul_backward(shape, &mut dx, &mut dw, Some(&mut db), &dout, &x, &w);
            let (xd, wd, bd, d) = (f64s(&x), f64s(&w), f64s(&b), f64s(&dout));
            let nx = numeric_grad(&xd, EPS, |x| r::dot(&r::linear(x, &wd, Some(&bd), c, oc), &d));
            let nw = numeric_grad(&wd, EPS, |w| r::dot(&r::linear(&xd, w, Some(&bd), c, oc), &d));
            let nb = numeric_grad(&bd, EPS, |b| r::dot(&r::linear(&xd, &wd, Some(b), c, oc), &d));
            assert_grad_close("matmul dinp", &dx, &nx, 1e-5);
            assert_grad_close("matmul dw", &dw, &nw, 1e-5);
            assert_grad_close("matmul db", &db, &nb, 1e-5);
        }
    }

    #[test]
    fn projection_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut pack = vec![0.0; GEMM_PACK_LEN];
        let shape = Linear { t: 4, c: 6, oc: 11 };
        let x = randn(&mut rng, 24, 1.0);
        let wte = randn(&mut rng, 66, 1.0);
        let dout = randn(&mut rng, 44, 1.0);
        let mut logits = vec![f32::NAN; 44];
        projection_forward(shape, &mut logits, &x, &wte, &mut pack);
        assert_values_close("projection", &logits, &r::linear(&f64s(&x), &f64s(&wte), None, 6, 11), 1e-5);
        let (mut dx, mut dwte) = (vec![f32::NAN; 24], vec![f32::NAN; 66]);
        projection_backward(shape, &mut dx, &mut dwte, &dout, &x, &wte);
        let (xd, wd, d) = (f64s(&x), f64s(&wte), f64s(&dout));
        let nx = numeric_grad(&xd, EPS, |x| r::dot(&r::linear(x, &wd, None, 6, 11), &d));
        let nw = numeric_grad(&wd, EPS, |w| r::dot(&r::linear(&xd, w, None, 6, 11), &d));
        assert_grad_close("projection dx", &dx, &nx, 1e-5);
        assert_grad_close("projection dwte", &dwte, &nw, 1e-5);
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(8);
        let mut pack = vec![0.0; GEMM_PACK_LEN];
        for shape in [Attention { t: 5, c: 8, heads: 2 }, Attention { t: 19, c: 36, heads: 3 }] {
            let Attention { t, c, heads } = shape;
            let qkv = randn(&mut rng, t * 3 * c, 1.5);
            let dout = randn(&mut rng, t * c, 1.0);
            let (mut out, mut att) = (vec![f32::NAN; t * c], vec![f32::NAN; heads * t * t]);
            attention_forward(shape, &mut out, &mut att, &qkv, &mut pack);
            let qd = f64s(&qkv);
            assert_values_close("attention", &out, &r::attention(&qd, t, c, heads), 1e-5);
            for (i, row) in att.chunks(t).enumerate() {
                assert!(row[i % t + 1..].iter().all(|&p| p == 0.0), "probabilities above the diagonal");
            }
            let mut dqkv = vec![f32::NAN; t * 3 * c];
            let mut datt = vec![f32::NAN; t * t];
            attention_backward(shape, &mut dqkv, &mut datt, &dout, &qkv, &att, &mut pack);
            let d = f64s(&dout);
            let n = numeric_grad(&qd, EPS, |q| r::dot(&r::attention(q, t, c, heads), &d));
            assert_grad_close("attention dqkv", &dqkv, &n, 1e-4);
        }
    }

    #[test]
    fn gelu_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(9);
        let x = randn(&mut rng, 300, 5.0);
        let dout = randn(&mut rng, 300, 1.0);
        let mut out = vec![0.0; 300];
        gelu_forward(&mut out, &x);
        assert_values_close("gelu", &out, &r::gelu(&f64s(&x)), 1e-6);
        let mut d = dout.clone();
        gelu_backward(&mut d, &x);
        let dd = f64s(&dout);
        let n = numeric_grad(&f64s(&x), EPS, |x| r::dot(&r::gelu(x), &dd));
        assert_grad_close("gelu", &d, &n, 1e-5);
    }

    #[test]
    fn residual_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(10);
        let (a, b, dout) = (randn(&mut rng, 20, 1.0), randn(&mut rng, 20, 1.0), randn(&mut rng, 20, 1.0));
        let mut out = vec![0.0; 20];
        residual_forward(&mut out, &a, &b);
        let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect();
        assert_values_close("residual", &out, &sum, 1e-7);
        let (mut da, mut db) = (vec![0.0; 20], vec![1.0; 20]);
        residual_backward(&mut da, &mut db, &dout);
        let d = f64s(&dout);
        let na = numeric_grad(&f64s(&a), EPS, |a| {
            r::dot(&a.iter().zip(&b).map(|(x, y)| x + *y as f64).collect::<Vec<_>>(), &d)
        });
        assert_grad_close("residual da", &da, &na, 1e-6);
        let db: Vec<f32> = db.iter().map(|v| v - 1.0).collect();
        assert_grad_close("residual db", &db, &na, 1e-6);
    }

    #[test]
    fn crossentropy_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(11);
        let (t, v) = (6, 37);
        let logits = randn(&mut rng, t * v, 4.0);
        let targets: Vec<u32> = (0..t).map(|_| rng.gen_range(0..v as u32)).collect();
        let weights = vec![1.0, 0.5, 0.0, 2.0, 1.0, 0.25];
        let want = r::crossentropy(&f64s(&logits), &targets, &weights, v);
        let mut scratch = logits.clone();
        let loss = crossentropy_forward(&mut scratch, &targets, &weights, v);
        assert!((loss - want).abs() <= 1e-5 * want.abs(), "{loss} vs {want}");
        let mut d = logits.clone();
        let loss2 = crossentropy_forward_backward(&mut d, &targets, &weights, v);
        assert_eq!(loss.to_bits(), loss2.to_bits());
        let n = numeric_grad(&f64s(&logits), EPS, |l| r::crossentropy(l, &targets, &weights, v));
        assert_grad_close("crossentropy", &d, &n, 1e-4);
        // A zero weight masks the position entirely.
        assert!(d[2 * v..3 * v].iter().all(|&g| g == 0.0));
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use std::time::{Duration, Instant};

    /// GFLOP/s of one GEMM shape (`ta`/`tb`: operand stored transposed).
    fn gflops(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> f64 {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let mut pack = vec![0.0; GEMM_PACK_LEN];
        let av = if ta { MatRef::new(&a, k, m, m).t() } else { MatRef::new(&a, m, k, k) };
        let bv = if tb { MatRef::new(&b, n, k, k).t() } else { MatRef::new(&b, k, n, n) };
        let start = Instant::now();
        let mut reps = 0;
        while start.elapsed() < Duration::from_millis(200) {
            for _ in 0..10 {
                gemm(MatMut::new(&mut c, m, n, n), av, bv, false, None, &mut pack);
            }
            reps += 10;
        }
        2.0 * (m * n * k * reps) as f64 / start.elapsed().as_secs_f64() / 1e9
    }

    #[test]
    #[ignore = "benchmark: run with --ignored --nocapture"]
    fn bench_gemm_shapes() {
        for (t, c, f) in [(64, 128, 512), (128, 256, 1024)] {
            for (what, oc, ic) in [("qkv", 3 * c, c), ("proj", c, c), ("fc", f, c), ("fcproj", c, f), ("lm", 256, c)] {
                let fwd = gflops(t, oc, ic, false, true);
                let dinp = gflops(t, ic, oc, false, false);
                let dw = gflops(oc, ic, t, true, false);
                println!("T={t} {what:7} {oc:5}x{ic:5}: fwd {fwd:6.1}  dinp {dinp:6.1}  dw {dw:6.1} GFLOP/s");
            }
        }
    }
}
