//! Integration tests of `cllm::runtime`, the tiled matmul "virtual
//! accelerator" (ported and extended from the original project's
//! `tests/test_runtime.py` and `tests/test_threaded_runtime.py`).
//!
//! Every scenario runs in three modes — sequential, pipelined with one
//! compute thread, pipelined with two — and the modes must give the same
//! bits. Numeric results are checked twice: bit for bit against an f32
//! emulation of the summation order the kernel documents (plain multiply
//! then add for `Reference`, one fused multiply-add per step for the SIMD
//! kernels, `k` ascending across tiles), and within a rounding-error bound
//! against an f64 reference.

use cllm::runtime::{
    build_schedule, builder, reference_mlp_layers, BuildOptions, Engine, EngineConfig, EngineStats, Exec, KernelImpl,
    Load, MatmulLayer, Op, OpCounts, Store, TensorRef, MAX_COMPUTE_LANES, MAX_SRAM_BYTES, TILE_BYTES, TILE_DIM,
};
use cllm::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// One tile in bytes, as schedule addresses use it.
const T: u32 = TILE_BYTES as u32;
/// How long a single scenario may run before it counts as a hang.
const WATCHDOG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Mode {
    name: &'static str,
    threaded: bool,
    compute_threads: usize,
}

const SEQUENTIAL: Mode = Mode { name: "sequential", threaded: false, compute_threads: 1 };
const MODES: [Mode; 3] = [
    SEQUENTIAL,
    Mode { name: "threaded(1)", threaded: true, compute_threads: 1 },
    Mode { name: "threaded(2)", threaded: true, compute_threads: 2 },
];

fn engine(mode: Mode, sram_bytes: usize) -> Engine {
    engine_with(mode, EngineConfig { sram_bytes, ..EngineConfig::default() })
}

fn engine_with(mode: Mode, config: EngineConfig) -> Engine {
    Engine::new(EngineConfig { threaded: mode.threaded, compute_threads: mode.compute_threads, ..config })
        .unwrap_or_else(|e| panic!("{}: Engine::new failed: {e}", mode.name))
}

/// Panics at the first element whose bits differ.
fn assert_bits_eq(want: &[f32], got: &[f32], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: lengths differ");
    if let Some(i) = want.iter().zip(got).position(|(w, g)| w.to_bits() != g.to_bits()) {
        let (g, w) = (got[i], want[i]);
        panic!("{what}: element {i} is {g} ({:#010x}), expected {w} ({:#010x})", g.to_bits(), w.to_bits());
    }
}

/// Runs `f` once per mode, asserts that every mode returned the same bits
/// and returns the sequential result.
fn same_bits_in_all_modes(what: &str, f: impl Fn(Mode) -> Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    let mut first: Option<Vec<Vec<f32>>> = None;
    for mode in MODES {
        let got = f(mode);
        match &first {
            None => first = Some(got),
            Some(want) => {
                assert_eq!(want.len(), got.len(), "{what}: {} returned another number of outputs", mode.name);
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    assert_bits_eq(w, g, &format!("{what}: output {i} in {} vs sequential", mode.name));
                }
            }
        }
    }
    first.expect("at least one mode")
}

/// Runs `f` on its own thread and panics if it has not finished after
/// [`WATCHDOG`]; a panic inside `f` is passed on.
fn with_watchdog<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("watchdog: {what}"))
        .spawn(move || {
            let r = f();
            let _ = tx.send(r);
        })
        .expect("spawn the watched thread");
    match rx.recv_timeout(WATCHDOG) {
        Ok(r) => {
            handle.join().expect("the watched thread finished");
            r
        }
        Err(RecvTimeoutError::Timeout) => panic!("{what}: no result after {WATCHDOG:?} (hang or deadlock)"),
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{what}: the watched thread ended without a result"),
        },
    }
}

// ---------------------------------------------------------------------------
// Data, ops and references
// ---------------------------------------------------------------------------

fn random(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn identity(n: usize) -> Vec<f32> {
    (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect()
}

fn load(tensor_id: u32, tile_row: u32, tile_col: u32, dst_addr: u32) -> Op {
    Op::Load(Load { tensor_id, tile_row, tile_col, dst_addr, bytes: T, buffer: -1 })
}

fn exec(k: u32, a_addr: u32, b_addr: u32, acc_addr: u32) -> Op {
    Op::Exec(Exec { m: 0, n: 0, k, a_addr, b_addr, acc_addr, buffer: -1 })
}

fn store(tensor_id: u32, tile_row: u32, tile_col: u32, src_addr: u32, apply_relu: bool) -> Op {
    Op::Store(Store { tensor_id, tile_row, tile_col, src_addr, bytes: T, apply_relu })
}

/// `C = A·B` for single tiles: A at 0, B at one tile, the accumulator at two.
fn single_tile_schedule(a: u32, b: u32, c: u32, relu: bool) -> Vec<Op> {
    vec![load(a, 0, 0, 0), load(b, 0, 0, T), exec(0, 0, T, 2 * T), store(c, 0, 0, 2 * T, relu)]
}

fn get(e: &Engine, name: &str, rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    e.get_tensor(name, &mut out, rows, cols).unwrap_or_else(|err| panic!("get_tensor({name}): {err}"));
    out
}

fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// The engine's result for `init + a·b` (`m×k · k×n`, row-major), emulated
/// in f32 with the summation order `kernel` documents: per element one chain
/// over the zero-padded reduction, `k` ascending, starting at `init` or +0.
#[allow(clippy::too_many_arguments)]
fn emulate(
    kernel: KernelImpl,
    init: Option<&[f32]>,
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    apply_relu: bool,
) -> Vec<f32> {
    let fused = kernel.resolve() != KernelImpl::Reference;
    let kp = k.div_ceil(TILE_DIM) * TILE_DIM;
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = init.map_or(0.0, |c| c[i * n + j]);
            for p in 0..kp {
                let (x, y) = if p < k { (a[i * k + p], b[p * n + j]) } else { (0.0, 0.0) };
                acc = if fused { x.mul_add(y, acc) } else { acc + x * y };
            }
            out[i * n + j] = if apply_relu { relu(acc) } else { acc };
        }
    }
    out
}

/// An f64 reference value with the magnitude `Σ|a|·|b|` that bounds its
/// rounding error, and the total reduction length behind it.
struct Reference {
    val: Vec<f64>,
    mag: Vec<f64>,
    depth: usize,
}

impl Reference {
    fn input(x: &[f32]) -> Self {
        Reference {
            val: x.iter().map(|v| f64::from(*v)).collect(),
            mag: x.iter().map(|v| f64::from(v.abs())).collect(),
            depth: 0,
        }
    }

    /// `self · b` (`m×k · k×n`), optionally followed by ReLU.
    fn times(&self, b: &[f32], m: usize, k: usize, n: usize, apply_relu: bool) -> Self {
        let mut val = vec![0f64; m * n];
        let mut mag = vec![0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                let (av, am) = (self.val[i * k + p], self.mag[i * k + p]);
                for j in 0..n {
                    let bv = f64::from(b[p * n + j]);
                    val[i * n + j] += av * bv;
                    mag[i * n + j] += am * bv.abs();
                }
            }
        }
        if apply_relu {
            val.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        Reference { val, mag, depth: self.depth + k.div_ceil(TILE_DIM) * TILE_DIM }
    }

    /// Every element of `got` lies within the rounding bound of a chain of
    /// `depth` f32 steps: `2·(depth + 2)·ε·Σ|a|·|b|`.
    fn assert_close(&self, got: &[f32], what: &str) {
        assert_eq!(got.len(), self.val.len(), "{what}: lengths differ");
        let eps = f64::from(f32::EPSILON);
        for (i, ((g, v), m)) in got.iter().zip(&self.val).zip(&self.mag).enumerate() {
            let tol = 2.0 * (self.depth as f64 + 2.0) * eps * m + 1e-30;
            let err = (f64::from(*g) - v).abs();
            assert!(err <= tol, "{what}: element {i} is {g}, f64 reference {v} (error {err:e} > tolerance {tol:e})");
        }
    }
}

// ---------------------------------------------------------------------------
// Layer chains through the builder
// ---------------------------------------------------------------------------

/// `h_0 = x·w_0`, `h_l = h_{l-1}·w_l`, each optionally with ReLU; tensors
/// are registered as x, w_0, h_0, w_1, h_1, …
struct Chain {
    rows: usize,
    dims: Vec<usize>,
    relu: Vec<bool>,
    x: Vec<f32>,
    w: Vec<Vec<f32>>,
}

impl Chain {
    fn new(seed: u64, rows: usize, dims: &[usize], relu: &[bool]) -> Self {
        assert_eq!(dims.len(), relu.len() + 1);
        let x = random(seed, rows * dims[0]);
        let w = (0..relu.len()).map(|l| random(seed + 1 + l as u64, dims[l] * dims[l + 1])).collect();
        Chain { rows, dims: dims.to_vec(), relu: relu.to_vec(), x, w }
    }

    fn layers(&self) -> Vec<MatmulLayer> {
        let t = |id: u32, rows: usize, cols: usize| TensorRef { id, rows, cols };
        (0..self.w.len())
            .map(|l| {
                let a = if l == 0 { t(0, self.rows, self.dims[0]) } else { t(2 * l as u32, self.rows, self.dims[l]) };
                MatmulLayer {
                    a,
                    b: t(2 * l as u32 + 1, self.dims[l], self.dims[l + 1]),
                    out: t(2 * l as u32 + 2, self.rows, self.dims[l + 1]),
                    relu: self.relu[l],
                }
            })
            .collect()
    }

    fn register(&self, e: &mut Engine) {
        assert_eq!(e.register_tensor("x", self.rows, self.dims[0]).unwrap(), 0);
        e.set_tensor("x", &self.x, self.rows, self.dims[0]).unwrap();
        for (l, w) in self.w.iter().enumerate() {
            let (wn, hn) = (format!("w{l}"), format!("h{l}"));
            assert_eq!(e.register_tensor(&wn, self.dims[l], self.dims[l + 1]).unwrap(), 2 * l as u32 + 1);
            e.set_tensor(&wn, w, self.dims[l], self.dims[l + 1]).unwrap();
            assert_eq!(e.register_tensor(&hn, self.rows, self.dims[l + 1]).unwrap(), 2 * l as u32 + 2);
        }
    }

    fn outputs(&self, e: &Engine) -> Vec<Vec<f32>> {
        (0..self.w.len()).map(|l| get(e, &format!("h{l}"), self.rows, self.dims[l + 1])).collect()
    }

    /// Builds the schedule for `sram_bytes`, runs it in every mode and checks
    /// the outputs against the emulation and the f64 reference.
    fn run_and_check(&self, what: &str, sram_bytes: usize) {
        let sched = build_schedule(&self.layers(), &BuildOptions { sram_bytes }).unwrap();
        let kernel = KernelImpl::best();
        let outs = same_bits_in_all_modes(what, |mode| {
            let mut e = engine(mode, sram_bytes);
            self.register(&mut e);
            e.execute(&sched.ops).unwrap_or_else(|err| panic!("{what} [{}]: {err}", mode.name));
            self.outputs(&e)
        });
        self.check(what, kernel, &outs);
    }

    fn check(&self, what: &str, kernel: KernelImpl, outs: &[Vec<f32>]) {
        let mut emu_in = self.x.clone();
        let mut reference = Reference::input(&self.x);
        for (l, w) in self.w.iter().enumerate() {
            let (m, k, n) = (self.rows, self.dims[l], self.dims[l + 1]);
            let emu = emulate(kernel, None, &emu_in, w, m, k, n, self.relu[l]);
            assert_bits_eq(&emu, &outs[l], &format!("{what}: layer {l} vs the {} emulation", kernel.name()));
            reference = reference.times(w, m, k, n, self.relu[l]);
            reference.assert_close(&outs[l], &format!("{what}: layer {l} vs f64"));
            emu_in = emu;
        }
    }
}

/// The reference MLP's inputs (x, w1, w2, w3), scaled like the original tests.
fn mlp_inputs(seed: u64) -> [Vec<f32>; 4] {
    let s = builder::REFERENCE_MLP_SHAPES;
    let scaled = |i: usize, shape: (usize, usize)| -> Vec<f32> {
        random(seed + i as u64, shape.0 * shape.1).into_iter().map(|v| v * 0.3).collect()
    };
    [scaled(0, s[0]), scaled(1, s[1]), scaled(3, s[3]), scaled(5, s[5])]
}

const MLP_NAMES: [&str; 7] = ["x", "w1", "h1", "w2", "h2", "w3", "out"];

/// Registers the reference MLP's tensors, fills the inputs and returns the
/// schedule.
fn setup_mlp(e: &mut Engine, inputs: &[Vec<f32>; 4]) -> Vec<Op> {
    let mut ids = [0u32; 7];
    for (i, (name, (rows, cols))) in MLP_NAMES.iter().zip(builder::REFERENCE_MLP_SHAPES).enumerate() {
        ids[i] = e.register_tensor(name, rows, cols).unwrap();
    }
    for (input, slot) in inputs.iter().zip([0, 1, 3, 5]) {
        let (rows, cols) = builder::REFERENCE_MLP_SHAPES[slot];
        e.set_tensor(MLP_NAMES[slot], input, rows, cols).unwrap();
    }
    build_schedule(&reference_mlp_layers(ids), &BuildOptions { sram_bytes: e.sram_bytes() }).unwrap().ops
}

/// h1, h2 and out.
fn mlp_outputs(e: &Engine) -> Vec<Vec<f32>> {
    [2, 4, 6]
        .iter()
        .map(|&i| get(e, MLP_NAMES[i], builder::REFERENCE_MLP_SHAPES[i].0, builder::REFERENCE_MLP_SHAPES[i].1))
        .collect()
}

/// Checks h1, h2 and out of the reference MLP against the emulation of
/// `kernel` and the f64 reference.
fn check_mlp(what: &str, kernel: KernelImpl, inputs: &[Vec<f32>; 4], outs: &[Vec<f32>]) {
    let chain = Chain {
        rows: 128,
        dims: vec![128, 64, 32, 32],
        relu: vec![true, true, false],
        x: inputs[0].clone(),
        w: inputs[1..].to_vec(),
    };
    chain.check(what, kernel, outs);
}

// ---------------------------------------------------------------------------
// Engine set-up and tensors
// ---------------------------------------------------------------------------

#[test]
fn engine_is_send() {
    fn assert_send<S: Send>() {}
    assert_send::<Engine>();
}

#[test]
fn engine_config_rejects_bad_sizes_and_thread_counts() {
    for threaded in [false, true] {
        for (sram_bytes, compute_threads) in
            [(TILE_BYTES - 1, 1), (0, 1), (MAX_SRAM_BYTES + 1, 1), (TILE_BYTES, 0), (TILE_BYTES, MAX_COMPUTE_LANES + 1)]
        {
            let config = EngineConfig { sram_bytes, compute_threads, threaded, ..EngineConfig::default() };
            match Engine::new(config) {
                Err(Error::InvalidArgument(_)) => {}
                Err(e) => panic!("{config:?}: wrong error {e:?}"),
                Ok(_) => panic!("{config:?}: accepted"),
            }
        }
    }
    // The smallest SRAM (one tile) and the most compute threads are fine.
    let mut e = engine(MODES[1], TILE_BYTES);
    e.execute(&[]).unwrap();
    let cfg = EngineConfig { threaded: true, compute_threads: MAX_COMPUTE_LANES, ..EngineConfig::default() };
    assert_eq!(Engine::new(cfg).unwrap().config().compute_threads, MAX_COMPUTE_LANES);
}

#[test]
fn register_tensor_assigns_ids_in_registration_order() {
    for mode in MODES {
        let mut e = engine(mode, 64 * 1024);
        assert_eq!(e.register_tensor("A", 32, 32).unwrap(), 0);
        assert_eq!(e.register_tensor("B", 32, 32).unwrap(), 1);
        assert_eq!(e.register_tensor("C", 50, 70).unwrap(), 2);
        assert_eq!(e.tensor_count(), 3);
        assert_eq!(e.tensor_id("B"), Some(1));
        assert_eq!(e.tensor_id("nope"), None);
        assert_eq!(e.tensor_shape(2), Some((50, 70)));
        assert_eq!(e.tensor_shape(3), None);
        // A new tensor starts zero-filled.
        assert!(get(&e, "C", 50, 70).iter().all(|v| v.to_bits() == 0));
    }
}

#[test]
fn set_get_round_trip_is_exact_for_full_and_padded_tensors() {
    for mode in MODES {
        let mut e = engine(mode, 64 * 1024);
        for (name, rows, cols, seed) in [("A", 32, 32, 1), ("P", 48, 48, 2), ("Q", 1, 100, 3), ("R", 33, 1, 4)] {
            e.register_tensor(name, rows, cols).unwrap();
            let mut data = random(seed, rows * cols);
            data[0] = f32::NAN;
            data[rows * cols - 1] = -0.0;
            e.set_tensor(name, &data, rows, cols).unwrap();
            assert_bits_eq(&data, &get(&e, name, rows, cols), &format!("{name} round trip [{}]", mode.name));
        }
    }
}

#[test]
fn tensor_api_rejects_bad_names_shapes_and_buffers() {
    for mode in MODES {
        let mut e = engine(mode, 64 * 1024);
        e.register_tensor("A", 32, 48).unwrap();
        let data = random(5, 32 * 48);
        e.set_tensor("A", &data, 32, 48).unwrap();
        let invalid = |r: cllm::Result<_>, what: &str| match r {
            Err(Error::InvalidArgument(m)) => assert!(!m.is_empty(), "{what}: empty message"),
            other => panic!("{what} [{}]: expected InvalidArgument, got {other:?}", mode.name),
        };
        invalid(e.register_tensor("", 32, 32), "empty name");
        invalid(e.register_tensor("A", 32, 48), "duplicate name");
        invalid(e.register_tensor("A", 64, 64), "duplicate name, other shape");
        invalid(e.register_tensor("Z", 0, 32), "zero rows");
        invalid(e.register_tensor("Z", 32, 0), "zero cols");
        invalid(e.register_tensor("Z", usize::MAX, usize::MAX), "absurd size");
        let mut out = vec![0f32; 32 * 48];
        invalid(e.set_tensor("nope", &data, 32, 48).map(|_| 0), "set unknown name");
        invalid(e.get_tensor("nope", &mut out, 32, 48).map(|_| 0), "get unknown name");
        invalid(e.set_tensor("A", &data, 48, 32).map(|_| 0), "set transposed shape");
        invalid(e.get_tensor("A", &mut out, 48, 32).map(|_| 0), "get transposed shape");
        invalid(e.set_tensor("A", &data[1..], 32, 48).map(|_| 0), "set short buffer");
        invalid(e.get_tensor("A", &mut out[1..], 32, 48).map(|_| 0), "get short buffer");
        let long = vec![1f32; 32 * 48 + 1];
        invalid(e.set_tensor("A", &long, 32, 48).map(|_| 0), "set long buffer");
        // The failed calls registered nothing and changed nothing.
        assert_eq!(e.tensor_count(), 1);
        assert_eq!(e.tensor_id("Z"), None);
        assert_bits_eq(&data, &get(&e, "A", 32, 48), "A after rejected calls");
        assert_eq!(e.register_tensor("Z", 1, 1).unwrap(), 1, "ids stay dense after rejected registrations");
    }
}

// ---------------------------------------------------------------------------
// Single tiles
// ---------------------------------------------------------------------------

/// Engine with A (0), B (1), C (2), all 32×32, A and B filled.
fn single_tile_engine(mode: Mode, a: &[f32], b: &[f32]) -> Engine {
    let mut e = engine(mode, 64 * 1024);
    for name in ["A", "B", "C"] {
        e.register_tensor(name, 32, 32).unwrap();
    }
    e.set_tensor("A", a, 32, 32).unwrap();
    e.set_tensor("B", b, 32, 32).unwrap();
    e
}

/// C = relu?(A·B) through the single-tile schedule, in every mode.
fn single_tile_product(what: &str, a: &[f32], b: &[f32], apply_relu: bool) -> Vec<f32> {
    let outs = same_bits_in_all_modes(what, |mode| {
        let mut e = single_tile_engine(mode, a, b);
        e.execute(&single_tile_schedule(0, 1, 2, apply_relu)).unwrap();
        vec![get(&e, "C", 32, 32)]
    });
    let c = outs.into_iter().next().unwrap();
    let emu = emulate(KernelImpl::best(), None, a, b, 32, 32, 32, apply_relu);
    assert_bits_eq(&emu, &c, &format!("{what} vs emulation"));
    Reference::input(a).times(b, 32, 32, 32, apply_relu).assert_close(&c, what);
    c
}

#[test]
fn identity_tile_matmul_returns_a_exactly() {
    let a = random(10, 1024);
    let c = single_tile_product("A·I", &a, &identity(32), false);
    assert_bits_eq(&a, &c, "A·I == A");
}

#[test]
fn random_tile_matmul_matches_f64_reference() {
    for seed in [11, 12, 13] {
        single_tile_product("A·B", &random(seed, 1024), &random(seed + 100, 1024), false);
    }
}

#[test]
fn exec_with_k_1_accumulates_over_k_on_the_same_accumulator() {
    // C = A0·B0 + A1·B1 with A = [A0 A1] (32×64) and B = [B0; B1] (64×32),
    // loading the second pair over the first while the first EXEC may
    // still be reading it.
    let a = random(20, 32 * 64);
    let b = random(21, 64 * 32);
    let ops = vec![
        load(0, 0, 0, 0),
        load(1, 0, 0, T),
        exec(0, 0, T, 2 * T),
        load(0, 0, 1, 0),
        load(1, 1, 0, T),
        exec(1, 0, T, 2 * T),
        store(2, 0, 0, 2 * T, false),
    ];
    let outs = same_bits_in_all_modes("accumulate over k", |mode| {
        let mut e = engine(mode, 64 * 1024);
        e.register_tensor("A", 32, 64).unwrap();
        e.register_tensor("B", 64, 32).unwrap();
        e.register_tensor("C", 32, 32).unwrap();
        e.set_tensor("A", &a, 32, 64).unwrap();
        e.set_tensor("B", &b, 64, 32).unwrap();
        e.execute(&ops).unwrap();
        vec![get(&e, "C", 32, 32)]
    });
    assert_bits_eq(&emulate(KernelImpl::best(), None, &a, &b, 32, 64, 32, false), &outs[0], "A0·B0 + A1·B1");
    Reference::input(&a).times(&b, 32, 64, 32, false).assert_close(&outs[0], "A0·B0 + A1·B1");
}

#[test]
fn exec_with_nonzero_k_accumulates_onto_a_loaded_tile() {
    // ACC += A·B without k == 0: a LOADed tile is the starting value.
    let (a, b, bias) = (random(30, 1024), random(31, 1024), random(32, 1024));
    let ops = vec![
        load(0, 0, 0, 0),
        load(1, 0, 0, T),
        load(2, 0, 0, 2 * T),
        exec(3, 0, T, 2 * T),
        store(3, 0, 0, 2 * T, false),
    ];
    let outs = same_bits_in_all_modes("bias + A·B", |mode| {
        let mut e = single_tile_engine(mode, &a, &b);
        e.register_tensor("D", 32, 32).unwrap();
        e.set_tensor("C", &bias, 32, 32).unwrap();
        e.execute(&ops).unwrap();
        vec![get(&e, "D", 32, 32)]
    });
    assert_bits_eq(&emulate(KernelImpl::best(), Some(&bias), &a, &b, 32, 32, 32, false), &outs[0], "bias + A·B");
}

#[test]
fn accumulating_after_a_store_continues_from_the_stored_value() {
    // EXEC k=0, STORE, EXEC k=1 on the same (now closed) accumulator, STORE:
    // the second result is A·B + A·B.
    let (a, b) = (random(40, 1024), random(41, 1024));
    let ops = vec![
        load(0, 0, 0, 0),
        load(1, 0, 0, T),
        exec(0, 0, T, 2 * T),
        store(2, 0, 0, 2 * T, false),
        exec(1, 0, T, 2 * T),
        store(3, 0, 0, 2 * T, false),
    ];
    let outs = same_bits_in_all_modes("reopened accumulator", |mode| {
        let mut e = single_tile_engine(mode, &a, &b);
        e.register_tensor("D", 32, 32).unwrap();
        e.execute(&ops).unwrap();
        vec![get(&e, "C", 32, 32), get(&e, "D", 32, 32)]
    });
    let once = emulate(KernelImpl::best(), None, &a, &b, 32, 32, 32, false);
    let twice = emulate(KernelImpl::best(), Some(&once), &a, &b, 32, 32, 32, false);
    assert_bits_eq(&once, &outs[0], "first STORE");
    assert_bits_eq(&twice, &outs[1], "second STORE");
}

#[test]
fn sram_reads_as_zero_before_it_is_written_in_every_execute() {
    let (a, b) = (random(50, 1024), random(51, 1024));
    let eye = identity(32);
    let outs = same_bits_in_all_modes("SRAM reads as zero", |mode| {
        let mut e = single_tile_engine(mode, &a, &b);
        e.register_tensor("I", 32, 32).unwrap(); // id 3
        e.set_tensor("I", &eye, 32, 32).unwrap();
        let mut results = Vec::new();
        for round in 0..3 {
            // Fill SRAM with garbage: operands and results everywhere.
            let mut dirty = Vec::new();
            for slot in 0..16u32 {
                dirty.push(load(slot % 2, 0, 0, slot * T));
            }
            for slot in 2..16u32 {
                dirty.push(exec(u32::from(slot % 3 != 0), 0, T, slot * T));
                dirty.push(store(2, 0, 0, slot * T, slot % 2 == 0));
            }
            e.execute(&dirty).unwrap();
            // A fresh accumulator with k = 1 starts at zero: C = A·I = A.
            e.execute(&[load(0, 0, 0, 0), load(3, 0, 0, T), exec(1, 0, T, 2 * T), store(2, 0, 0, 2 * T, false)])
                .unwrap();
            let c = get(&e, "C", 32, 32);
            assert_bits_eq(&a, &c, &format!("k=1 on a fresh accumulator, round {round} [{}]", mode.name));
            results.push(c);
            // An operand that was never loaded in this execute reads as zero
            // (B, then A, then both).
            for ops in [
                vec![load(0, 0, 0, 0), exec(0, 0, T, 2 * T), store(2, 0, 0, 2 * T, false)],
                vec![load(1, 0, 0, T), exec(0, 0, T, 2 * T), store(2, 0, 0, 2 * T, false)],
                vec![exec(1, 5 * T, 9 * T, 12 * T), store(2, 0, 0, 12 * T, false)],
            ] {
                e.set_tensor("C", &b, 32, 32).unwrap();
                e.execute(&ops).unwrap();
                let c = get(&e, "C", 32, 32);
                assert!(c.iter().all(|v| *v == 0.0), "unloaded operand did not read as zero [{}]: {ops:?}", mode.name);
                results.push(c);
            }
        }
        results
    });
    assert_eq!(outs.len(), 12);
}

#[test]
fn addresses_aligned_to_64_but_not_to_a_tile_work() {
    // A loaded 64 bytes (16 floats) into the tile the EXEC reads at 0: the
    // EXEC sees 16 zeros then the first 1008 floats of A.
    let a = random(60, 1024);
    let eye = identity(32);
    let ops = vec![
        load(0, 0, 0, 64),
        load(1, 0, 0, 2 * T + 128),
        exec(0, 0, 2 * T + 128, 4 * T + 192),
        store(2, 0, 0, 4 * T + 192, false),
    ];
    let outs = same_bits_in_all_modes("64-byte aligned tiles", |mode| {
        let mut e = single_tile_engine(mode, &a, &eye);
        e.execute(&ops).unwrap();
        vec![get(&e, "C", 32, 32)]
    });
    let shifted: Vec<f32> = (0..1024).map(|i| if i < 16 { 0.0 } else { a[i - 16] }).collect();
    assert_bits_eq(&shifted, &outs[0], "shifted A · I");
}

#[test]
fn closed_accumulator_can_be_read_as_an_operand_after_its_store() {
    // relu(A·B) stays in SRAM after a ReLU STORE and feeds the next EXEC.
    let (a, b) = (random(70, 1024), random(71, 1024));
    let eye = identity(32);
    let ops = vec![
        load(0, 0, 0, 0),
        load(1, 0, 0, T),
        exec(0, 0, T, 2 * T),
        store(2, 0, 0, 2 * T, true),
        load(3, 0, 0, T),
        exec(0, 2 * T, T, 3 * T),
        store(4, 0, 0, 3 * T, false),
    ];
    let outs = same_bits_in_all_modes("accumulator as operand", |mode| {
        let mut e = single_tile_engine(mode, &a, &b);
        e.register_tensor("I", 32, 32).unwrap();
        e.register_tensor("D", 32, 32).unwrap();
        e.set_tensor("I", &eye, 32, 32).unwrap();
        e.execute(&ops).unwrap();
        vec![get(&e, "C", 32, 32), get(&e, "D", 32, 32)]
    });
    let c = emulate(KernelImpl::best(), None, &a, &b, 32, 32, 32, true);
    assert_bits_eq(&c, &outs[0], "relu(A·B)");
    assert_bits_eq(&c, &outs[1], "relu(A·B)·I");
}

// ---------------------------------------------------------------------------
// ReLU
// ---------------------------------------------------------------------------

#[test]
fn relu_zeros_negatives() {
    let c = single_tile_product("ones · -ones with ReLU", &[1.0; 1024], &[-1.0; 1024], true);
    assert!(c.iter().all(|v| v.to_bits() == 0), "relu(-32) must be +0.0");
    let c = single_tile_product("ones · -ones without ReLU", &[1.0; 1024], &[-1.0; 1024], false);
    assert!(c.iter().all(|v| *v == -32.0));
}

#[test]
fn relu_keeps_positives_and_zeros_only_negatives() {
    let five_eye: Vec<f32> = identity(32).iter().map(|v| v * 5.0).collect();
    let c = single_tile_product("5I · I with ReLU", &five_eye, &identity(32), true);
    assert_bits_eq(&five_eye, &c, "relu(5I)");
    // Mixed signs: relu(A·I) == max(A, 0) element by element.
    let a = random(80, 1024);
    let c = single_tile_product("A·I with ReLU", &a, &identity(32), true);
    let want: Vec<f32> = a.iter().map(|v| relu(*v)).collect();
    assert_bits_eq(&want, &c, "relu(A)");
    assert!(a.iter().any(|v| *v < 0.0) && a.iter().any(|v| *v > 0.0));
}

#[test]
fn relu_store_applies_in_place_so_a_second_store_sees_it() {
    let (a, b) = (random(90, 1024), random(91, 1024));
    // relu STORE first, plain STORE second: both relu'd. Plain first, relu
    // second: only the second.
    let cases = [(true, false), (false, true)];
    for (first_relu, second_relu) in cases {
        let ops = vec![
            load(0, 0, 0, 0),
            load(1, 0, 0, T),
            exec(0, 0, T, 2 * T),
            store(2, 0, 0, 2 * T, first_relu),
            store(3, 0, 0, 2 * T, second_relu),
        ];
        let outs = same_bits_in_all_modes("two STOREs of one accumulator", |mode| {
            let mut e = single_tile_engine(mode, &a, &b);
            e.register_tensor("D", 32, 32).unwrap();
            e.execute(&ops).unwrap();
            vec![get(&e, "C", 32, 32), get(&e, "D", 32, 32)]
        });
        let raw = emulate(KernelImpl::best(), None, &a, &b, 32, 32, 32, false);
        let relued: Vec<f32> = raw.iter().map(|v| relu(*v)).collect();
        assert!(raw.iter().any(|v| *v < 0.0));
        let (want_first, want_second) = if first_relu { (&relued, &relued) } else { (&raw, &relued) };
        assert_bits_eq(want_first, &outs[0], "first STORE");
        assert_bits_eq(want_second, &outs[1], "second STORE");
    }
}

// ---------------------------------------------------------------------------
// Multi-tile and the builder
// ---------------------------------------------------------------------------

#[test]
fn matmul_64x64_with_manual_2x2x2_schedule() {
    let (a, b) = (random(100, 64 * 64), random(101, 64 * 64));
    let mut ops = Vec::new();
    for m in 0..2u32 {
        for n in 0..2u32 {
            let acc = 0x2000 + (m * 2 + n) * T;
            for k in 0..2u32 {
                ops.push(load(0, m, k, 0));
                ops.push(load(1, k, n, 0x1000));
                ops.push(Op::Exec(Exec { m, n, k, a_addr: 0, b_addr: 0x1000, acc_addr: acc, buffer: -1 }));
            }
            ops.push(store(2, m, n, acc, false));
        }
    }
    let outs = same_bits_in_all_modes("64x64", |mode| {
        let mut e = engine(mode, 256 * 1024);
        for name in ["A", "B", "C"] {
            e.register_tensor(name, 64, 64).unwrap();
        }
        e.set_tensor("A", &a, 64, 64).unwrap();
        e.set_tensor("B", &b, 64, 64).unwrap();
        e.execute(&ops).unwrap();
        let s = e.stats();
        assert_eq!((s.loads, s.executes, s.stores), (16, 8, 4));
        vec![get(&e, "C", 64, 64)]
    });
    assert_bits_eq(&emulate(KernelImpl::best(), None, &a, &b, 64, 64, 64, false), &outs[0], "64x64 vs emulation");
    Reference::input(&a).times(&b, 64, 64, 64, false).assert_close(&outs[0], "64x64");
}

#[test]
fn builder_single_layer_with_relu_matches_reference() {
    Chain::new(200, 32, &[32, 32], &[true]).run_and_check("relu(x·w) 32x32", 64 * 1024);
    Chain::new(201, 96, &[64, 96], &[false]).run_and_check("x·w 96x64·64x96", 64 * 1024);
}

#[test]
fn builder_reference_three_layer_mlp_matches_reference() {
    let inputs = mlp_inputs(300);
    let outs = same_bits_in_all_modes("reference MLP", |mode| {
        let mut e = engine(mode, 256 * 1024);
        let ops = setup_mlp(&mut e, &inputs);
        e.execute(&ops).unwrap();
        mlp_outputs(&e)
    });
    check_mlp("reference MLP", KernelImpl::best(), &inputs, &outs);
    assert!(outs[2].iter().any(|v| *v != 0.0));
}

#[test]
fn builder_handles_shapes_that_are_not_multiples_of_32() {
    Chain::new(400, 50, &[70, 33], &[false]).run_and_check("50x70 · 70x33", 256 * 1024);
    Chain::new(401, 50, &[70, 33, 1, 65], &[true, false, true]).run_and_check("50x70 → 33 → 1 → 65", 256 * 1024);
    Chain::new(402, 1, &[1, 1], &[false]).run_and_check("1x1 · 1x1", 64 * 1024);
}

#[test]
fn builder_schedules_with_evictions_in_a_small_sram() {
    // Three tiles of SRAM: every operand is evicted and reloaded.
    Chain::new(500, 100, &[100, 70, 40], &[true, false]).run_and_check("3-tile SRAM", 3 * TILE_BYTES);
    Chain::new(501, 128, &[128, 64, 32, 32], &[true, true, false]).run_and_check("5-tile SRAM", 5 * TILE_BYTES + 100);
}

#[test]
fn tensors_registered_between_executes_can_be_used() {
    let (a, b) = (random(600, 1024), random(601, 1024));
    let outs = same_bits_in_all_modes("late registration", |mode| {
        let mut e = single_tile_engine(mode, &a, &b);
        e.execute(&single_tile_schedule(0, 1, 2, false)).unwrap();
        let mut outs = vec![get(&e, "C", 32, 32)];
        for (i, name) in ["D", "E", "F"].into_iter().enumerate() {
            let id = e.register_tensor(name, 32, 32).unwrap();
            assert_eq!(id, 3 + i as u32);
            e.execute(&single_tile_schedule(0, id - 1, id, false)).unwrap();
            outs.push(get(&e, name, 32, 32));
        }
        outs
    });
    assert_bits_eq(&emulate(KernelImpl::best(), None, &a, &b, 32, 32, 32, false), &outs[0], "C");
}

// ---------------------------------------------------------------------------
// Stats and traces
// ---------------------------------------------------------------------------

#[test]
fn stats_count_ops_accumulate_and_reset() {
    let inputs = mlp_inputs(700);
    for mode in MODES {
        let mut e = engine(mode, 256 * 1024);
        assert_eq!(e.stats(), EngineStats::default());
        let ops = setup_mlp(&mut e, &inputs);
        let counts = OpCounts::of(&ops);
        e.execute(&ops).unwrap();
        let s = e.stats();
        assert_eq!(
            (s.loads, s.executes, s.stores),
            (counts.loads as u64, counts.executes as u64, counts.stores as u64)
        );
        assert!(s.total_ns > 0, "{}: total_ns is 0", mode.name);
        if !mode.threaded {
            assert_eq!(s.overlap_ns, 0, "sequential mode cannot overlap");
            assert_eq!((s.dma_stalls, s.compute_stalls), (0, 0), "sequential mode cannot stall");
        }
        assert!(s.overlap_ns <= s.total_ns);
        e.execute(&ops).unwrap();
        let s2 = e.stats();
        assert_eq!((s2.loads, s2.executes, s2.stores), (2 * s.loads, 2 * s.executes, 2 * s.stores));
        assert!(s2.total_ns > s.total_ns);
        e.reset_stats();
        assert_eq!(e.stats(), EngineStats::default());
        // The single-tile schedule of the original test.
        e.execute(&single_tile_schedule(0, 1, 2, false)).unwrap();
        let s3 = e.stats();
        assert_eq!((s3.loads, s3.executes, s3.stores), (2, 1, 1));
        // An empty schedule counts nothing.
        e.execute(&[]).unwrap();
        assert_eq!((e.stats().loads, e.stats().executes, e.stats().stores), (2, 1, 1));
        // A rejected schedule counts nothing either.
        assert!(e.execute(&[store(2, 0, 0, 0, false)]).is_err());
        assert_eq!((e.stats().loads, e.stats().executes, e.stats().stores), (2, 1, 1));
    }
}

#[test]
fn trace_json_without_trace_flag_is_wrong_state() {
    for mode in MODES {
        let e = engine(mode, 64 * 1024);
        assert!(matches!(e.trace_json(), Err(Error::WrongState(_))), "{}", mode.name);
        let path = std::env::temp_dir().join(format!("cllm-no-trace-{}.json", std::process::id()));
        assert!(matches!(e.write_trace(&path), Err(Error::WrongState(_))), "{}", mode.name);
        assert!(!path.exists());
    }
}

/// Checks that `json` is balanced (brackets outside strings) and returns
/// the op indices of its per-op "X" events (the ones with an "op" arg;
/// other complete events, such as the calling thread's phases in category
/// "call", are not ops).
fn trace_events(json: &str) -> Vec<u32> {
    let mut depth = Vec::new();
    let (mut in_str, mut escaped) = (false, false);
    for ch in json.chars() {
        if in_str {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' | '[' => depth.push(ch),
            '}' => assert_eq!(depth.pop(), Some('{'), "unbalanced JSON"),
            ']' => assert_eq!(depth.pop(), Some('['), "unbalanced JSON"),
            _ => {}
        }
    }
    assert!(depth.is_empty() && !in_str, "unterminated JSON");
    assert!(json.trim_start().starts_with('{') && json.trim_end().ends_with('}'));
    let complete = json.matches("\"ph\":\"X\"").count();
    let calls = json.matches("\"cat\":\"call\"").count();
    assert_eq!(complete - calls, json.matches("\"args\":{\"op\":").count(), "an X event without an op arg");
    json.split("\"args\":{\"op\":")
        .skip(1)
        .map(|rest| rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()].parse().unwrap())
        .collect()
}

#[test]
fn trace_json_has_one_complete_event_per_op_and_named_threads() {
    let inputs = mlp_inputs(800);
    for mode in MODES {
        let mut e = engine_with(mode, EngineConfig { trace: true, ..EngineConfig::default() });
        let ops = setup_mlp(&mut e, &inputs);
        // Before any execute the trace is empty but valid.
        assert!(trace_events(&e.trace_json().unwrap()).is_empty());
        e.execute(&ops).unwrap();
        let json = e.trace_json().unwrap();
        assert!(json.contains("\"traceEvents\""));
        let mut indices = trace_events(&json);
        assert_eq!(indices.len(), ops.len(), "{}: one X event per op", mode.name);
        indices.sort_unstable();
        assert!(indices.iter().copied().eq(0..ops.len() as u32), "{}: every op index once", mode.name);
        let lanes = if mode.threaded { 1 + mode.compute_threads } else { 2 };
        assert!(json.matches("\"name\":\"thread_name\"").count() >= lanes, "{}: unnamed threads", mode.name);
        let names: &[&str] = if mode.threaded {
            &["\"DMA lane\"", "\"compute lane 0\""]
        } else {
            &["\"sequential: DMA ops\"", "\"sequential: compute ops\""]
        };
        for name in names {
            assert!(json.contains(name), "{}: no thread named {name}", mode.name);
        }
        if mode.compute_threads == 2 {
            assert!(json.contains("\"compute lane 1\""));
        }
        for (name, count) in
            [("LOAD", ops.iter().filter(|o| matches!(o, Op::Load(_))).count()), ("EXEC", OpCounts::of(&ops).executes)]
        {
            assert_eq!(json.matches(&format!("\"name\":\"{name}\"")).count(), count, "{}: {name} events", mode.name);
        }
        // The trace shows the last execute only.
        e.execute(&single_tile_schedule(0, 1, 2, false)).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(trace_events(&e.trace_json().unwrap()).len(), 4);
        e.execute(&[]).unwrap();
        assert!(trace_events(&e.trace_json().unwrap()).is_empty());
    }
}

#[test]
fn write_trace_writes_the_json_to_a_file() {
    let inputs = mlp_inputs(900);
    for mode in MODES {
        let mut e = engine_with(mode, EngineConfig { trace: true, ..EngineConfig::default() });
        let ops = setup_mlp(&mut e, &inputs);
        e.execute(&ops).unwrap();
        let tag = mode.name.replace(['(', ')'], "_");
        let path = std::env::temp_dir().join(format!("cllm-runtime-trace-{}-{tag}.json", std::process::id()));
        e.write_trace(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(written, e.trace_json().unwrap());
        assert_eq!(trace_events(&written).len(), ops.len());
        let bad = std::env::temp_dir().join(format!("cllm-no-such-dir-{}", std::process::id())).join("t.json");
        assert!(matches!(e.write_trace(&bad), Err(Error::System(_))), "{}", mode.name);
    }
}

// ---------------------------------------------------------------------------
// Determinism and stress
// ---------------------------------------------------------------------------

#[test]
fn threaded_mlp_gives_identical_bits_over_1000_runs() {
    let inputs = mlp_inputs(1000);
    let want = {
        let mut e = engine(SEQUENTIAL, 256 * 1024);
        let ops = setup_mlp(&mut e, &inputs);
        e.execute(&ops).unwrap();
        mlp_outputs(&e)
    };
    check_mlp("MLP", KernelImpl::best(), &inputs, &want);
    for mode in &MODES[1..] {
        let mode = *mode;
        let want = want.clone();
        let inputs = inputs.clone();
        with_watchdog(&format!("1000 MLP runs [{}]", mode.name), move || {
            let mut e = engine(mode, 256 * 1024);
            let ops = setup_mlp(&mut e, &inputs);
            for run in 0..1000 {
                e.execute(&ops).unwrap();
                let got = mlp_outputs(&e);
                for (w, g) in want.iter().zip(&got) {
                    assert_bits_eq(w, g, &format!("run {run} [{}]", mode.name));
                }
            }
            assert_eq!(e.stats().executes, 1000 * OpCounts::of(&ops).executes as u64);
        });
    }
}

#[test]
fn long_accumulation_chain_after_two_loads_completes() {
    // 2 LOADs, then 1000 EXECs into one accumulator (far more than a lane's
    // ring holds), then one STORE: the compute lane's first EXEC needs the
    // LOADs, so they must reach the DMA lane even while the caller waits
    // for room in the compute lane's ring.
    let (a, b) = (random(1050, 1024), random(1051, 1024));
    let mut ops = vec![load(0, 0, 0, 0), load(1, 0, 0, T)];
    ops.extend((0..1000).map(|k| exec(k, 0, T, 2 * T)));
    ops.push(store(2, 0, 0, 2 * T, false));
    let outs = same_bits_in_all_modes("1000-EXEC chain", |mode| {
        let (a, b, ops) = (a.clone(), b.clone(), ops.clone());
        with_watchdog(&format!("1000-EXEC chain [{}]", mode.name), move || {
            let mut e = single_tile_engine(mode, &a, &b);
            e.execute(&ops).unwrap();
            vec![get(&e, "C", 32, 32)]
        })
    });
    let mut want = emulate(KernelImpl::best(), None, &a, &b, 32, 32, 32, false);
    for _ in 1..1000 {
        want = emulate(KernelImpl::best(), Some(&want), &a, &b, 32, 32, 32, false);
    }
    assert_bits_eq(&want, &outs[0], "1000·(A·B)");
}

#[test]
fn more_compute_threads_than_cores_give_the_same_bits() {
    let inputs = mlp_inputs(1060);
    let want = {
        let mut e = engine(SEQUENTIAL, 256 * 1024);
        let ops = setup_mlp(&mut e, &inputs);
        e.execute(&ops).unwrap();
        mlp_outputs(&e)
    };
    for compute_threads in [3, MAX_COMPUTE_LANES] {
        for pin_threads in [true, false] {
            let (want, inputs) = (want.clone(), inputs.clone());
            let what = format!("{compute_threads} compute threads, pinned: {pin_threads}");
            with_watchdog(&what.clone(), move || {
                let config = EngineConfig { threaded: true, compute_threads, pin_threads, ..EngineConfig::default() };
                let mut e = Engine::new(config).unwrap();
                let ops = setup_mlp(&mut e, &inputs);
                for _ in 0..20 {
                    e.execute(&ops).unwrap();
                    for (w, g) in want.iter().zip(&mlp_outputs(&e)) {
                        assert_bits_eq(w, g, &what);
                    }
                }
            });
        }
    }
}

#[test]
fn engine_moved_to_another_thread_keeps_working() {
    let inputs = mlp_inputs(1070);
    let outs = same_bits_in_all_modes("moved engine", |mode| {
        let mut e = engine(mode, 256 * 1024);
        let ops = setup_mlp(&mut e, &inputs);
        e.execute(&ops).unwrap();
        let before = mlp_outputs(&e);
        let (e, after) = std::thread::spawn(move || {
            e.execute(&ops).unwrap();
            let after = mlp_outputs(&e);
            (e, after)
        })
        .join()
        .unwrap();
        for (w, g) in before.iter().zip(&after) {
            assert_bits_eq(w, g, &format!("[{}] on another thread", mode.name));
        }
        drop(e);
        before
    });
    check_mlp("moved engine", KernelImpl::best(), &inputs, &outs);
}

#[test]
fn hundred_open_accumulators_before_the_first_store() {
    // 8 A tiles, one B tile, then 100 EXECs into 100 distinct accumulators
    // and only then the 100 STOREs (the original engine deadlocked here).
    // Run it again with 600 accumulators, more than a lane's ring holds.
    for count in [100u32, 600] {
        let a = random(1100, 256 * 32);
        let b = random(1101, 32 * 32);
        let mut ops: Vec<Op> = (0..8).map(|r| load(0, r, 0, r * T)).collect();
        ops.push(load(1, 0, 0, 8 * T));
        for i in 0..count {
            ops.push(exec(0, (i % 8) * T, 8 * T, (9 + i) * T));
        }
        for i in 0..count {
            ops.push(store(2, 0, i, (9 + i) * T, i % 3 == 0));
        }
        let sram = (9 + count as usize).next_multiple_of(128) * TILE_BYTES;
        let cols = 32 * count as usize;
        let outs = same_bits_in_all_modes("open accumulators", |mode| {
            let ops = ops.clone();
            let (a, b) = (a.clone(), b.clone());
            with_watchdog(&format!("{count} open accumulators [{}]", mode.name), move || {
                let mut e = engine(mode, sram);
                e.register_tensor("A", 256, 32).unwrap();
                e.register_tensor("B", 32, 32).unwrap();
                e.register_tensor("C", 32, cols).unwrap();
                e.set_tensor("A", &a, 256, 32).unwrap();
                e.set_tensor("B", &b, 32, 32).unwrap();
                e.execute(&ops).unwrap();
                vec![get(&e, "C", 32, cols)]
            })
        });
        let c = &outs[0];
        for i in 0..count as usize {
            let a_tile = &a[(i % 8) * 1024..(i % 8 + 1) * 1024];
            let want = emulate(KernelImpl::best(), None, a_tile, &b, 32, 32, 32, i % 3 == 0);
            let got: Vec<f32> = (0..32).flat_map(|r| c[r * cols + 32 * i..r * cols + 32 * i + 32].to_vec()).collect();
            assert_bits_eq(&want, &got, &format!("output tile {i} of {count}"));
        }
    }
}

#[test]
fn schedule_of_10000_ops_runs_correctly() {
    // 400 units of 25 ops: 8 k-steps of (LOAD A, LOAD B, EXEC) into a
    // rotating accumulator, double-buffered operand slots, then a STORE
    // into one of two output tensors.
    let (a, b) = (random(1200, 256 * 256), random(1201, 256 * 256));
    let mut ops = Vec::with_capacity(10_000);
    for u in 0..400u32 {
        let (m, n) = ((u / 8) % 8, u % 8);
        let acc = (4 + u % 4) * T;
        for k in 0..8u32 {
            let slot = 2 * ((u * 8 + k) % 2) * T;
            ops.push(load(0, m, k, slot));
            ops.push(load(1, k, n, slot + T));
            ops.push(Op::Exec(Exec { m, n, k, a_addr: slot, b_addr: slot + T, acc_addr: acc, buffer: (k % 2) as i32 }));
        }
        ops.push(store(2 + (u / 64) % 2, m, n, acc, false));
    }
    assert_eq!(ops.len(), 10_000);
    let outs = same_bits_in_all_modes("10000 ops", |mode| {
        let (a, b, ops) = (a.clone(), b.clone(), ops.clone());
        with_watchdog(&format!("10000 ops [{}]", mode.name), move || {
            let mut e = engine(mode, 64 * 1024);
            for name in ["A", "B", "C0", "C1"] {
                e.register_tensor(name, 256, 256).unwrap();
            }
            e.set_tensor("A", &a, 256, 256).unwrap();
            e.set_tensor("B", &b, 256, 256).unwrap();
            e.execute(&ops).unwrap();
            let s = e.stats();
            assert_eq!((s.loads, s.executes, s.stores), (6400, 3200, 400));
            vec![get(&e, "C0", 256, 256), get(&e, "C1", 256, 256)]
        })
    });
    let want = emulate(KernelImpl::best(), None, &a, &b, 256, 256, 256, false);
    assert_bits_eq(&want, &outs[0], "C0");
    assert_bits_eq(&want, &outs[1], "C1");
    Reference::input(&a).times(&b, 256, 256, 256, false).assert_close(&outs[0], "C0");
}

#[test]
fn empty_schedule_is_a_no_op() {
    for mode in MODES {
        let mut e = single_tile_engine(mode, &random(1300, 1024), &random(1301, 1024));
        e.execute(&[]).unwrap();
        e.execute(&[]).unwrap();
        let s = e.stats();
        assert_eq!((s.loads, s.executes, s.stores), (0, 0, 0));
        assert!(get(&e, "C", 32, 32).iter().all(|v| v.to_bits() == 0));
        e.execute(&single_tile_schedule(0, 1, 2, false)).unwrap();
        e.execute(&[]).unwrap();
        assert_eq!(e.stats().executes, 1);
    }
}

// ---------------------------------------------------------------------------
// Invalid schedules
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    OutOfRange,
    Invalid,
}

/// Value the output tensor is filled with before a rejected schedule.
const SENTINEL: f32 = 777.25;

/// Four valid ops that would write C (id 2) if they ran: a rejected
/// schedule starting with them must leave C alone.
fn prefix(tail: &[Op]) -> Vec<Op> {
    let mut ops = single_tile_schedule(0, 1, 2, false);
    ops.extend_from_slice(tail);
    ops
}

/// Runs `ops` (which must fail at op `index` with `kind`) in every mode on
/// a 64 KiB engine with A (0), B (1), C (2), each run under the watchdog;
/// checks the message, that C kept its sentinel, and that the engine still
/// runs a valid schedule correctly afterwards.
fn check_rejected(what: &str, ops: Vec<Op>, kind: Kind, index: usize) {
    let (a, b) = (random(1400, 1024), random(1401, 1024));
    let prefix_name = format!("op {index} ({}):", ops[index].name());
    let outs = same_bits_in_all_modes(what, |mode| {
        let (a, b, ops, what, prefix_name) = (a.clone(), b.clone(), ops.clone(), what.to_string(), prefix_name.clone());
        with_watchdog(&format!("{what} [{}]", mode.name), move || {
            let mut e = single_tile_engine(mode, &a, &b);
            let sentinel = vec![SENTINEL; 1024];
            e.set_tensor("C", &sentinel, 32, 32).unwrap();
            let check = |r: cllm::Result<()>| {
                let Err(err) = r else { panic!("{what} [{}]: accepted", mode.name) };
                let ok_kind = match kind {
                    Kind::OutOfRange => matches!(err, Error::OutOfRange(_)),
                    Kind::Invalid => matches!(err, Error::InvalidArgument(_)),
                };
                assert!(ok_kind, "{what} [{}]: expected {kind:?}, got {err:?}", mode.name);
                assert!(
                    err.message().starts_with(&prefix_name),
                    "{what} [{}]: message does not start with {prefix_name:?}: {err}",
                    mode.name
                );
            };
            check(e.execute(&ops));
            assert_bits_eq(&sentinel, &get(&e, "C", 32, 32), &format!("{what} [{}]: C after the rejection", mode.name));
            assert_eq!(e.stats().executes, 0);
            // The engine still works, and a second rejection changes nothing.
            e.execute(&single_tile_schedule(0, 1, 2, false)).unwrap();
            let c = get(&e, "C", 32, 32);
            check(e.execute(&ops));
            assert_bits_eq(&c, &get(&e, "C", 32, 32), &format!("{what} [{}]: C after the second rejection", mode.name));
            e.execute(&single_tile_schedule(1, 0, 2, true)).unwrap();
            vec![c, get(&e, "C", 32, 32)]
        })
    });
    assert_bits_eq(&emulate(KernelImpl::best(), None, &a, &b, 32, 32, 32, false), &outs[0], what);
    assert_bits_eq(&emulate(KernelImpl::best(), None, &b, &a, 32, 32, 32, true), &outs[1], what);
}

#[test]
fn rejects_sram_addresses_out_of_range() {
    let end = 16 * T; // 64 KiB
    let cases: Vec<(&str, Vec<Op>, usize)> = vec![
        ("LOAD at the end of SRAM", prefix(&[load(0, 0, 0, end)]), 4),
        ("LOAD straddling the end of SRAM", prefix(&[load(0, 0, 0, end - T + 64)]), 4),
        ("LOAD near u32::MAX", prefix(&[load(0, 0, 0, !63)]), 4),
        ("EXEC a_addr out of range", prefix(&[exec(0, end, T, 3 * T)]), 4),
        ("EXEC b_addr out of range", prefix(&[exec(0, 0, end + 7 * T, 3 * T)]), 4),
        ("EXEC acc_addr out of range", prefix(&[exec(0, 0, T, end)]), 4),
        ("STORE src_addr out of range", prefix(&[exec(0, 0, T, 3 * T), store(2, 0, 0, end, false)]), 5),
        ("out-of-range op first", vec![load(0, 0, 0, end), load(0, 0, 0, 0)], 0),
    ];
    for (what, ops, index) in cases {
        check_rejected(what, ops, Kind::OutOfRange, index);
    }
}

#[test]
fn rejects_unknown_tensor_ids() {
    let cases: Vec<(&str, Vec<Op>, usize)> = vec![
        ("LOAD of tensor 3", prefix(&[load(3, 0, 0, 3 * T)]), 4),
        ("LOAD of tensor u32::MAX", prefix(&[load(u32::MAX, 0, 0, 3 * T)]), 4),
        ("STORE to tensor 3", prefix(&[exec(0, 0, T, 3 * T), store(3, 0, 0, 3 * T, false)]), 5),
    ];
    for (what, ops, index) in cases {
        check_rejected(what, ops, Kind::OutOfRange, index);
    }
}

#[test]
fn rejects_tile_coordinates_out_of_range() {
    let cases: Vec<(&str, Vec<Op>, usize)> = vec![
        ("LOAD tile row 1 of a 1x1-tile tensor", prefix(&[load(0, 1, 0, 3 * T)]), 4),
        ("LOAD tile col 1 of a 1x1-tile tensor", prefix(&[load(1, 0, 1, 3 * T)]), 4),
        ("LOAD tile row u32::MAX", prefix(&[load(0, u32::MAX, 0, 3 * T)]), 4),
        ("STORE tile col 1", prefix(&[exec(0, 0, T, 3 * T), store(2, 0, 1, 3 * T, false)]), 5),
        ("STORE tile (5, 5)", prefix(&[exec(0, 0, T, 3 * T), store(2, 5, 5, 3 * T, true)]), 5),
    ];
    for (what, ops, index) in cases {
        check_rejected(what, ops, Kind::OutOfRange, index);
    }
}

#[test]
fn rejects_store_without_an_exec() {
    let cases: Vec<(&str, Vec<Op>, usize)> = vec![
        ("STORE as the only op", vec![store(2, 0, 0, 0, false)], 0),
        ("STORE from never-written SRAM", prefix(&[store(2, 0, 0, 5 * T, false)]), 4),
        ("STORE from a LOADed operand", prefix(&[store(2, 0, 0, T, false)]), 4),
        ("STORE from inside an accumulator", prefix(&[store(2, 0, 0, 2 * T + 64, false)]), 4),
        (
            "STORE after a LOAD overwrote the accumulator",
            prefix(&[load(0, 0, 0, 2 * T), store(2, 0, 0, 2 * T, false)]),
            5,
        ),
        (
            "STORE after an overlapping accumulator replaced it",
            prefix(&[exec(0, 0, T, 2 * T + 1024), store(2, 0, 0, 2 * T + 1024, false), store(2, 0, 0, 2 * T, false)]),
            6,
        ),
    ];
    for (what, ops, index) in cases {
        check_rejected(what, ops, Kind::Invalid, index);
    }
}

#[test]
fn rejects_load_over_an_accumulator_in_use() {
    let cases: Vec<(&str, Vec<Op>, usize)> = vec![
        ("LOAD onto an open accumulator", prefix(&[exec(0, 0, T, 3 * T), load(0, 0, 0, 3 * T)]), 5),
        ("LOAD partly over an open accumulator", prefix(&[exec(0, 0, T, 3 * T), load(0, 0, 0, 3 * T - 64)]), 5),
        (
            "LOAD over an accumulator between k steps",
            prefix(&[
                exec(0, 0, T, 3 * T),
                exec(1, 0, T, 3 * T),
                load(1, 0, 0, 3 * T + 2048),
                store(2, 0, 0, 3 * T, false),
            ]),
            6,
        ),
    ];
    for (what, ops, index) in cases {
        check_rejected(what, ops, Kind::Invalid, index);
    }
}

#[test]
fn rejects_exec_reading_an_open_accumulator_as_an_operand() {
    let cases: Vec<(&str, Vec<Op>, usize)> = vec![
        ("a_addr on an open accumulator", prefix(&[exec(0, 0, T, 3 * T), exec(0, 3 * T, T, 4 * T)]), 5),
        ("b_addr on an open accumulator", prefix(&[exec(0, 0, T, 3 * T), exec(0, 0, 3 * T, 4 * T)]), 5),
        ("a_addr partly on an open accumulator", prefix(&[exec(0, 0, T, 3 * T), exec(0, 3 * T + 1024, T, 5 * T)]), 5),
    ];
    for (what, ops, index) in cases {
        check_rejected(what, ops, Kind::Invalid, index);
    }
}

#[test]
fn rejects_operand_overlapping_its_own_accumulator() {
    let cases: Vec<(&str, Vec<Op>, usize)> = vec![
        ("a_addr == acc_addr", prefix(&[exec(0, 3 * T, T, 3 * T)]), 4),
        ("b_addr == acc_addr", prefix(&[exec(0, 0, 3 * T, 3 * T)]), 4),
        ("b_addr partly inside acc", prefix(&[exec(0, 0, 3 * T + 64, 3 * T)]), 4),
        ("acc partly over both operands", prefix(&[exec(0, 0, T, T - 64)]), 4),
        ("acc partly over another open accumulator", prefix(&[exec(0, 0, T, 3 * T), exec(0, 0, T, 3 * T + 64)]), 5),
    ];
    for (what, ops, index) in cases {
        check_rejected(what, ops, Kind::Invalid, index);
    }
}

#[test]
fn rejects_misaligned_addresses() {
    let cases: Vec<(&str, Vec<Op>, usize)> = vec![
        ("LOAD dst_addr 32", prefix(&[load(0, 0, 0, 32)]), 4),
        ("EXEC a_addr 4", prefix(&[exec(0, 4, T, 3 * T)]), 4),
        ("EXEC b_addr T + 1", prefix(&[exec(0, 0, T + 1, 3 * T)]), 4),
        ("EXEC acc_addr 3T + 32", prefix(&[exec(0, 0, T, 3 * T + 32)]), 4),
        ("STORE src_addr 2T + 16", prefix(&[store(2, 0, 0, 2 * T + 16, false)]), 4),
    ];
    for (what, ops, index) in cases {
        check_rejected(what, ops, Kind::Invalid, index);
    }
}

#[test]
fn rejects_transfer_sizes_other_than_4096_bytes() {
    let with_bytes = |op: Op, bytes: u32| match op {
        Op::Load(l) => Op::Load(Load { bytes, ..l }),
        Op::Store(s) => Op::Store(Store { bytes, ..s }),
        other => other,
    };
    let mut cases: Vec<(String, Vec<Op>, usize)> = Vec::new();
    for bytes in [0, 4, 2048, 4095, 4097, 8192, u32::MAX] {
        cases.push((format!("LOAD of {bytes} bytes"), prefix(&[with_bytes(load(0, 0, 0, 3 * T), bytes)]), 4));
        cases.push((format!("STORE of {bytes} bytes"), prefix(&[with_bytes(store(2, 0, 0, 2 * T, false), bytes)]), 4));
    }
    for (what, ops, index) in cases {
        check_rejected(&what, ops, Kind::Invalid, index);
    }
}

#[test]
fn rejection_names_the_first_bad_op() {
    // A planning error (op 5) before an operand error (op 6), and the other
    // way round.
    check_rejected(
        "hazard before misalignment",
        prefix(&[exec(0, 0, T, 3 * T), load(0, 0, 0, 3 * T), load(0, 0, 0, 32)]),
        Kind::Invalid,
        5,
    );
    check_rejected(
        "range before hazard",
        prefix(&[load(0, 0, 0, 16 * T), exec(0, 0, T, 3 * T), load(0, 0, 0, 3 * T)]),
        Kind::OutOfRange,
        4,
    );
}

// ---------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------

#[test]
fn injected_faults_fail_execute_and_the_engine_recovers() {
    let inputs = mlp_inputs(1500);
    let mut ops_probe = engine(SEQUENTIAL, 256 * 1024);
    let ops = setup_mlp(&mut ops_probe, &inputs);
    let position = |pred: fn(&Op) -> bool, nth_from_end: bool| -> u32 {
        let mut it = ops.iter().enumerate().filter(|(_, o)| pred(o)).map(|(i, _)| i as u32);
        if nth_from_end {
            it.next_back().unwrap()
        } else {
            it.next().unwrap()
        }
    };
    let first_load = position(|o| matches!(o, Op::Load(_)), false);
    let execs: Vec<u32> = (0..ops.len() as u32).filter(|i| matches!(ops[*i as usize], Op::Exec(_))).collect();
    let mid_exec = execs[execs.len() / 2];
    let last_store = position(|o| matches!(o, Op::Store(_)), true);
    let faults = [first_load, mid_exec, last_store, execs[0], 0];
    let outs = same_bits_in_all_modes("fault injection", |mode| {
        let inputs = inputs.clone();
        with_watchdog(&format!("fault injection [{}]", mode.name), move || {
            let mut e = engine(mode, 256 * 1024);
            let ops = setup_mlp(&mut e, &inputs);
            e.execute(&ops).unwrap();
            let want = mlp_outputs(&e);
            for fault in faults {
                e.inject_fault(Some(fault));
                for attempt in 0..2 {
                    match e.execute(&ops) {
                        Err(Error::System(m)) => assert!(m.contains(&fault.to_string()), "message {m:?} names no op"),
                        other => panic!("[{}] fault at op {fault}, attempt {attempt}: got {other:?}", mode.name),
                    }
                }
                e.inject_fault(None);
                e.execute(&ops).unwrap();
                let got = mlp_outputs(&e);
                for (w, g) in want.iter().zip(&got) {
                    assert_bits_eq(w, g, &format!("[{}] after a fault at op {fault}", mode.name));
                }
            }
            // A fault past the end of the schedule never fires.
            e.inject_fault(Some(ops.len() as u32));
            e.execute(&ops).unwrap();
            e.inject_fault(None);
            mlp_outputs(&e)
        })
    });
    check_mlp("after faults", KernelImpl::best(), &inputs, &outs);
}

// ---------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------

#[test]
fn every_available_kernel_matches_its_emulation_and_the_others() {
    let inputs = mlp_inputs(1600);
    let odd = Chain::new(1601, 50, &[70, 33], &[true]);
    let odd_sched = build_schedule(&odd.layers(), &BuildOptions::default()).unwrap();
    let mut simd: Option<Vec<Vec<f32>>> = None;
    let mut results = Vec::new();
    for kernel in KernelImpl::ALL {
        let config = EngineConfig { kernel: Some(kernel), ..EngineConfig::default() };
        if !kernel.is_available() {
            for mode in MODES {
                let r = Engine::new(EngineConfig {
                    threaded: mode.threaded,
                    compute_threads: mode.compute_threads,
                    ..config
                });
                assert!(matches!(r, Err(Error::InvalidArgument(_))), "{}: unavailable kernel accepted", kernel.name());
            }
            continue;
        }
        let outs = same_bits_in_all_modes(kernel.name(), |mode| {
            let mut e = engine_with(mode, config);
            assert_eq!(e.kernel(), kernel);
            let ops = setup_mlp(&mut e, &inputs);
            e.execute(&ops).unwrap();
            let mut outs = mlp_outputs(&e);
            let mut e = engine_with(mode, config);
            odd.register(&mut e);
            e.execute(&odd_sched.ops).unwrap();
            outs.extend(odd.outputs(&e));
            outs
        });
        check_mlp(kernel.name(), kernel, &inputs, &outs[..3]);
        odd.check(kernel.name(), kernel, &outs[3..]);
        if kernel != KernelImpl::Reference {
            // The SIMD kernels are documented to be bit-identical.
            match &simd {
                None => simd = Some(outs.clone()),
                Some(want) => {
                    for (w, g) in want.iter().zip(&outs) {
                        assert_bits_eq(w, g, &format!("{} vs the other SIMD kernel", kernel.name()));
                    }
                }
            }
        }
        results.push(outs);
    }
    assert!(!results.is_empty() && KernelImpl::Reference.is_available());
    assert_eq!(KernelImpl::best(), engine(SEQUENTIAL, TILE_BYTES).kernel());
}

// ---------------------------------------------------------------------------
// Regressions found by review and fuzzing
// ---------------------------------------------------------------------------

/// An EXEC with k != 0 on an accumulator nothing wrote in this schedule
/// starts from zero even when the pipelined engine has already reused
/// every spare physical tile in the same run (67 loads fill 3 + 64 tiles).
#[test]
fn accumulating_onto_an_unwritten_tile_starts_from_zero_after_tile_reuse() {
    let outs = same_bits_in_all_modes("k=1 on a fresh accumulator after 67 loads", |mode| {
        let mut e = engine(mode, 3 * TILE_BYTES);
        e.register_tensor("I", 32, 32).unwrap();
        e.register_tensor("C", 32, 32).unwrap();
        e.set_tensor("I", &identity(32), 32, 32).unwrap();
        let mut ops: Vec<Op> = (0..67).map(|_| load(0, 0, 0, 0)).collect();
        ops.push(exec(1, 0, 0, 2 * T));
        ops.push(store(1, 0, 0, 2 * T, false));
        e.execute(&ops).unwrap();
        vec![get(&e, "C", 32, 32)]
    });
    assert_bits_eq(&identity(32), &outs[0], "0 + I·I");
}

/// A STORE into an edge tile writes only the part inside the registered
/// shape: the padding stays zero, so the tensor can be used as a matmul
/// operand afterwards (here A is stored from a tile full of ones, then
/// multiplied by B; garbage in A's padded columns would meet B's padded
/// rows, which are also set to ones by a store).
#[test]
fn stores_into_edge_tiles_keep_the_padding_zero() {
    let outs = same_bits_in_all_modes("padding stays zero", |mode| {
        let mut e = engine(mode, 8 * TILE_BYTES);
        e.register_tensor("ones", 32, 32).unwrap();
        e.register_tensor("A", 20, 20).unwrap();
        e.register_tensor("B", 20, 20).unwrap();
        e.register_tensor("C", 20, 20).unwrap();
        e.register_tensor("I", 32, 32).unwrap();
        e.set_tensor("ones", &vec![1.0; 1024], 32, 32).unwrap();
        e.set_tensor("I", &identity(32), 32, 32).unwrap();
        let ops = vec![
            load(0, 0, 0, 0),
            load(4, 0, 0, T),
            exec(0, 0, T, 2 * T),         // ones · I = ones
            store(1, 0, 0, 2 * T, false), // A = ones (20x20 visible)
            store(2, 0, 0, 2 * T, false), // B = ones
            load(1, 0, 0, 3 * T),
            load(2, 0, 0, 4 * T),
            exec(0, 3 * T, 4 * T, 5 * T), // C = A · B over the padded tiles
            store(3, 0, 0, 5 * T, false),
        ];
        e.execute(&ops).unwrap();
        vec![get(&e, "C", 20, 20), get(&e, "A", 20, 20)]
    });
    assert!(outs[1].iter().all(|v| *v == 1.0));
    assert!(outs[0].iter().all(|v| *v == 20.0), "C = A·B must sum 20 ones, not 32: {:?}", &outs[0][..4]);
}
