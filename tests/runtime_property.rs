//! Property tests of `cllm::runtime`.
//!
//! 1. Builder schedules over random layer chains, random data and random
//!    SRAM sizes (small ones force evictions): sequential, pipelined with one
//!    compute thread and with two give the same bits, those bits are what
//!    the kernel's documented summation order gives (f32 emulation), and
//!    they lie within a rounding bound, scaled by the reduction length, of
//!    an f64 reference.
//! 2. Random valid hand-made schedules (addresses reused and overlapping,
//!    accumulators reopened, ReLU in place, STOREs read back by later
//!    LOADs, ...): every mode gives exactly what a plain interpreter of the
//!    documented semantics gives.

use cllm::runtime::{
    build_schedule, BuildOptions, Engine, EngineConfig, Exec, KernelImpl, Load, MatmulLayer, Op, Store, TensorRef,
    TILE_BYTES, TILE_DIM, TILE_FLOATS,
};
use cllm::Error;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug)]
struct Mode {
    name: &'static str,
    threaded: bool,
    compute_threads: usize,
}

const MODES: [Mode; 3] = [
    Mode { name: "sequential", threaded: false, compute_threads: 1 },
    Mode { name: "threaded(1)", threaded: true, compute_threads: 1 },
    Mode { name: "threaded(2)", threaded: true, compute_threads: 2 },
];

fn engine(mode: Mode, sram_bytes: usize) -> Engine {
    let config = EngineConfig {
        sram_bytes,
        threaded: mode.threaded,
        compute_threads: mode.compute_threads,
        ..EngineConfig::default()
    };
    Engine::new(config).unwrap_or_else(|e| panic!("{}: Engine::new: {e}", mode.name))
}

fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn get(e: &Engine, name: &str, rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    e.get_tensor(name, &mut out, rows, cols).unwrap();
    out
}

/// Index and values of the first element whose bits differ.
fn first_difference(want: &[f32], got: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(want.len(), got.len());
    want.iter().zip(got).position(|(w, g)| w.to_bits() != g.to_bits()).map(|i| (i, want[i], got[i]))
}

fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// One step of the documented accumulation chain.
fn step(fused: bool, acc: f32, x: f32, y: f32) -> f32 {
    if fused {
        x.mul_add(y, acc)
    } else {
        acc + x * y
    }
}

// ---------------------------------------------------------------------------
// 1. Builder schedules over random layer chains
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ChainCase {
    rows: usize,
    dims: Vec<usize>,
    relu: Vec<bool>,
    sram_bytes: usize,
    seed: u64,
}

fn chain_case() -> impl Strategy<Value = ChainCase> {
    (1usize..=3)
        .prop_flat_map(|layers| {
            (
                1usize..=100,
                prop::collection::vec(1usize..=100, layers + 1),
                prop::collection::vec(any::<bool>(), layers),
                12 * 1024usize..=256 * 1024,
                any::<u64>(),
            )
        })
        .prop_map(|(rows, dims, relu, sram_bytes, seed)| ChainCase { rows, dims, relu, sram_bytes, seed })
}

/// Tensor ids: x = 0, w_l = 2l + 1, h_l = 2l + 2.
fn chain_layers(c: &ChainCase) -> Vec<MatmulLayer> {
    let t = |id: usize, rows: usize, cols: usize| TensorRef { id: id as u32, rows, cols };
    (0..c.relu.len())
        .map(|l| MatmulLayer {
            a: t(2 * l, c.rows, c.dims[l]),
            b: t(2 * l + 1, c.dims[l], c.dims[l + 1]),
            out: t(2 * l + 2, c.rows, c.dims[l + 1]),
            relu: c.relu[l],
        })
        .collect()
}

fn check_chain(c: &ChainCase) -> Result<(), TestCaseError> {
    let sched = build_schedule(&chain_layers(c), &BuildOptions { sram_bytes: c.sram_bytes })
        .map_err(|e| TestCaseError::fail(format!("build_schedule: {e}")))?;
    let mut rng = StdRng::seed_from_u64(c.seed);
    let x = random(&mut rng, c.rows * c.dims[0]);
    let w: Vec<Vec<f32>> = (0..c.relu.len()).map(|l| random(&mut rng, c.dims[l] * c.dims[l + 1])).collect();

    let mut results: Vec<Vec<Vec<f32>>> = Vec::new();
    for mode in MODES {
        let mut e = engine(mode, c.sram_bytes);
        e.register_tensor("x", c.rows, c.dims[0]).unwrap();
        e.set_tensor("x", &x, c.rows, c.dims[0]).unwrap();
        for (l, wl) in w.iter().enumerate() {
            e.register_tensor(&format!("w{l}"), c.dims[l], c.dims[l + 1]).unwrap();
            e.set_tensor(&format!("w{l}"), wl, c.dims[l], c.dims[l + 1]).unwrap();
            e.register_tensor(&format!("h{l}"), c.rows, c.dims[l + 1]).unwrap();
        }
        let outputs = |e: &Engine| -> Vec<Vec<f32>> {
            (0..w.len()).map(|l| get(e, &format!("h{l}"), c.rows, c.dims[l + 1])).collect()
        };
        e.execute(&sched.ops).map_err(|err| TestCaseError::fail(format!("[{}] execute: {err}", mode.name)))?;
        let first = outputs(&e);
        // A second run of the same schedule gives the same bits.
        e.execute(&sched.ops).map_err(|err| TestCaseError::fail(format!("[{}] second execute: {err}", mode.name)))?;
        for (l, (a, b)) in first.iter().zip(&outputs(&e)).enumerate() {
            if let Some((i, want, got)) = first_difference(a, b) {
                return Err(TestCaseError::fail(format!(
                    "[{}] layer {l}: second run differs at {i}: {got} vs {want}",
                    mode.name
                )));
            }
        }
        results.push(first);
    }
    for (mode, got) in MODES.iter().zip(&results).skip(1) {
        for (l, (want, got)) in results[0].iter().zip(got).enumerate() {
            if let Some((i, want, got)) = first_difference(want, got) {
                return Err(TestCaseError::fail(format!(
                    "{}: layer {l} differs from sequential at {i}: {got} vs {want}",
                    mode.name
                )));
            }
        }
    }

    // f32 emulation of the kernel's chain and the f64 reference with the
    // magnitude Σ|a|·|b| that bounds the rounding error.
    let fused = KernelImpl::best() != KernelImpl::Reference;
    let eps = f64::from(f32::EPSILON);
    let mut emu_in = x.clone();
    let mut val: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    let mut mag: Vec<f64> = x.iter().map(|v| f64::from(v.abs())).collect();
    let mut depth = 0usize;
    for (l, wl) in w.iter().enumerate() {
        let (m, k, n) = (c.rows, c.dims[l], c.dims[l + 1]);
        let kp = k.div_ceil(TILE_DIM) * TILE_DIM;
        depth += kp;
        let mut emu = vec![0f32; m * n];
        let mut nval = vec![0f64; m * n];
        let mut nmag = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f32;
                let (mut v, mut g) = (0f64, 0f64);
                for p in 0..kp {
                    let (a, b) = if p < k { (emu_in[i * k + p], wl[p * n + j]) } else { (0.0, 0.0) };
                    acc = step(fused, acc, a, b);
                    if p < k {
                        v += val[i * k + p] * f64::from(b);
                        g += mag[i * k + p] * f64::from(b.abs());
                    }
                }
                emu[i * n + j] = if c.relu[l] { relu(acc) } else { acc };
                nval[i * n + j] = if c.relu[l] { v.max(0.0) } else { v };
                nmag[i * n + j] = g;
            }
        }
        let got = &results[0][l];
        if let Some((i, want, g)) = first_difference(&emu, got) {
            return Err(TestCaseError::fail(format!("layer {l}: element {i} is {g}, the kernel's chain gives {want}")));
        }
        for (i, g) in got.iter().enumerate() {
            let tol = 2.0 * (depth as f64 + 2.0) * eps * nmag[i] + 1e-30;
            let err = (f64::from(*g) - nval[i]).abs();
            prop_assert!(err <= tol, "layer {l}: element {i} is {g}, f64 {} (error {err:e} > {tol:e})", nval[i]);
        }
        emu_in = emu;
        val = nval;
        mag = nmag;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn builder_chains_agree_across_modes_and_with_f64_reference(case in chain_case()) {
        check_chain(&case)?;
    }
}

// ---------------------------------------------------------------------------
// 2. Random valid schedules against an interpreter
// ---------------------------------------------------------------------------

/// (rows, cols) of the tensors the random schedules use; the second is
/// padded, so STOREs write and LOADs read its padding.
const TENSORS: [(usize, usize); 3] = [(64, 64), (40, 50), (32, 96)];

fn tile_counts(rows: usize, cols: usize) -> (u32, u32) {
    (rows.div_ceil(TILE_DIM) as u32, cols.div_ceil(TILE_DIM) as u32)
}

/// Raw choices for one op, turned into an op by [`OpSpec::to_op`].
#[derive(Clone, Copy, Debug)]
struct OpSpec {
    kind: u8,
    tensor: u8,
    row: u8,
    col: u8,
    addr: [u16; 3],
    k: u8,
    relu: bool,
    from_last_acc: bool,
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    (0u8..10, 0u8..3, any::<u8>(), any::<u8>(), any::<[u16; 3]>(), 0u8..4, any::<bool>(), any::<bool>()).prop_map(
        |(kind, tensor, row, col, addr, k, relu, from_last_acc)| OpSpec {
            kind,
            tensor,
            row,
            col,
            addr,
            k,
            relu,
            from_last_acc,
        },
    )
}

#[derive(Clone, Debug)]
struct ScheduleCase {
    sram_tiles: usize,
    /// Extra SRAM bytes beyond the whole tiles.
    sram_extra: usize,
    /// Addresses only multiples of 64 (not of 4096) when set.
    fine: bool,
    specs: Vec<OpSpec>,
    seed: u64,
}

fn schedule_case() -> impl Strategy<Value = ScheduleCase> {
    (3usize..=10, 0usize..4096, any::<bool>(), prop::collection::vec(op_spec(), 1..400), any::<u64>()).prop_map(
        |(sram_tiles, sram_extra, fine, specs, seed)| ScheduleCase { sram_tiles, sram_extra, fine, specs, seed },
    )
}

impl ScheduleCase {
    fn sram_bytes(&self) -> usize {
        self.sram_tiles * TILE_BYTES + self.sram_extra
    }

    fn addr(&self, raw: u16) -> u32 {
        let raw = raw as usize;
        let tile = raw % self.sram_tiles;
        let offset = if self.fine { (raw / self.sram_tiles) % 4 * 64 } else { 0 };
        (tile * TILE_BYTES + offset).min(self.sram_bytes() - TILE_BYTES) as u32
    }
}

impl OpSpec {
    fn to_op(self, case: &ScheduleCase, last_acc: Option<u32>) -> Op {
        let t = self.tensor as usize % TENSORS.len();
        let (tr, tc) = tile_counts(TENSORS[t].0, TENSORS[t].1);
        let (tile_row, tile_col) = (u32::from(self.row) % tr, u32::from(self.col) % tc);
        let bytes = TILE_BYTES as u32;
        let [a0, a1, a2] = self.addr.map(|a| case.addr(a));
        match self.kind {
            0..=3 => Op::Load(Load { tensor_id: t as u32, tile_row, tile_col, dst_addr: a0, bytes, buffer: -1 }),
            4..=7 => {
                let k = u32::from(self.k % 3);
                let acc_addr = match last_acc {
                    Some(acc) if self.from_last_acc && self.k == 3 => acc,
                    _ => a2,
                };
                Op::Exec(Exec { m: 0, n: 0, k, a_addr: a0, b_addr: a1, acc_addr, buffer: -1 })
            }
            _ => {
                let src_addr = match last_acc {
                    Some(acc) if self.from_last_acc || self.k < 3 => acc,
                    _ => a0,
                };
                Op::Store(Store { tensor_id: t as u32, tile_row, tile_col, src_addr, bytes, apply_relu: self.relu })
            }
        }
    }
}

/// The documented semantics, plainly: SRAM reads as zero at the start of
/// every execute; tensors are stored padded to whole tiles.
struct Interpreter {
    fused: bool,
    sram: Vec<f32>,
    /// Padded row-major storage and padded column count per tensor.
    tensors: Vec<(Vec<f32>, usize)>,
}

impl Interpreter {
    fn new(kernel: KernelImpl, sram_bytes: usize) -> Self {
        let tensors = TENSORS
            .iter()
            .map(|&(r, c)| {
                let (pr, pc) = (r.div_ceil(TILE_DIM) * TILE_DIM, c.div_ceil(TILE_DIM) * TILE_DIM);
                (vec![0f32; pr * pc], pc)
            })
            .collect();
        Interpreter { fused: kernel.resolve() != KernelImpl::Reference, sram: vec![0f32; sram_bytes / 4], tensors }
    }

    fn set(&mut self, t: usize, data: &[f32]) {
        let (_, cols) = TENSORS[t];
        let (store, pc) = &mut self.tensors[t];
        for (r, row) in data.chunks_exact(cols).enumerate() {
            store[r * *pc..r * *pc + cols].copy_from_slice(row);
        }
    }

    fn get(&self, t: usize) -> Vec<f32> {
        let (rows, cols) = TENSORS[t];
        let (store, pc) = &self.tensors[t];
        (0..rows).flat_map(|r| store[r * pc..r * pc + cols].iter().copied()).collect()
    }

    fn run(&mut self, ops: &[Op]) {
        self.sram.fill(0.0);
        for op in ops {
            match *op {
                Op::Load(l) => {
                    let (store, pc) = &self.tensors[l.tensor_id as usize];
                    let dst = l.dst_addr as usize / 4;
                    for r in 0..TILE_DIM {
                        let src = (l.tile_row as usize * TILE_DIM + r) * pc + l.tile_col as usize * TILE_DIM;
                        self.sram[dst + r * TILE_DIM..dst + (r + 1) * TILE_DIM]
                            .copy_from_slice(&store[src..src + TILE_DIM]);
                    }
                }
                Op::Exec(e) => {
                    let (a, b, c) = (e.a_addr as usize / 4, e.b_addr as usize / 4, e.acc_addr as usize / 4);
                    let mut out = [0f32; TILE_FLOATS];
                    for i in 0..TILE_DIM {
                        for j in 0..TILE_DIM {
                            let mut acc = if e.k == 0 { 0.0 } else { self.sram[c + i * TILE_DIM + j] };
                            for p in 0..TILE_DIM {
                                acc = step(
                                    self.fused,
                                    acc,
                                    self.sram[a + i * TILE_DIM + p],
                                    self.sram[b + p * TILE_DIM + j],
                                );
                            }
                            out[i * TILE_DIM + j] = acc;
                        }
                    }
                    self.sram[c..c + TILE_FLOATS].copy_from_slice(&out);
                }
                Op::Store(s) => {
                    let src = s.src_addr as usize / 4;
                    if s.apply_relu {
                        self.sram[src..src + TILE_FLOATS].iter_mut().for_each(|v| *v = relu(*v));
                    }
                    // Only the part inside the registered shape is written:
                    // the padding stays zero.
                    let (rows, cols) = TENSORS[s.tensor_id as usize];
                    let (row0, col0) = (s.tile_row as usize * TILE_DIM, s.tile_col as usize * TILE_DIM);
                    let (h, w) = ((rows - row0).min(TILE_DIM), (cols - col0).min(TILE_DIM));
                    let (store, pc) = &mut self.tensors[s.tensor_id as usize];
                    for r in 0..h {
                        let dst = (row0 + r) * *pc + col0;
                        store[dst..dst + w].copy_from_slice(&self.sram[src + r * TILE_DIM..src + r * TILE_DIM + w]);
                    }
                }
            }
        }
    }
}

fn engine_with_tensors(mode: Mode, sram_bytes: usize, data: &[Vec<f32>]) -> Engine {
    let mut e = engine(mode, sram_bytes);
    for (t, (&(rows, cols), d)) in TENSORS.iter().zip(data).enumerate() {
        e.register_tensor(&format!("t{t}"), rows, cols).unwrap();
        e.set_tensor(&format!("t{t}"), d, rows, cols).unwrap();
    }
    e
}

/// Turns the specs into a valid schedule: each op is kept only if the
/// engine accepts the schedule with it appended. Since validation is one
/// forward pass, a rejection must name the appended op. (A fault injected
/// at op 0 makes an accepted schedule stop before running anything, so
/// each check costs only the validation.)
fn valid_schedule(case: &ScheduleCase, data: &[Vec<f32>]) -> Result<Vec<Op>, TestCaseError> {
    let mut validator = engine_with_tensors(MODES[0], case.sram_bytes(), data);
    validator.inject_fault(Some(0));
    let mut ops: Vec<Op> = Vec::new();
    let mut last_acc = None;
    for spec in &case.specs {
        let op = spec.to_op(case, last_acc);
        ops.push(op);
        match validator.execute(&ops) {
            Err(Error::System(_)) => {
                if let Op::Exec(e) = op {
                    last_acc = Some(e.acc_addr);
                }
            }
            Ok(()) => prop_assert!(false, "the injected fault at op 0 did not fire"),
            Err(err) => {
                let at = format!("op {} ({}):", ops.len() - 1, op.name());
                prop_assert!(err.message().starts_with(&at), "a valid prefix was rejected: {err}\nops: {ops:#?}");
                ops.pop();
            }
        }
    }
    Ok(ops)
}

fn check_schedule(case: &ScheduleCase) -> Result<(), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(case.seed);
    let data: Vec<Vec<f32>> = TENSORS.iter().map(|&(r, c)| random(&mut rng, r * c)).collect();
    // The same specs at both address granularities: tile-aligned schedules
    // and 64-byte aligned ones take different paths through the planner
    // (only the former are renamed), and one engine runs both in turn.
    let first = valid_schedule(case, &data)?;
    let second = valid_schedule(&ScheduleCase { fine: !case.fine, ..case.clone() }, &data)?;
    let runs = [&first, &second, &first, &second];
    // Each execute starts from the DRAM the previous one left and from an
    // SRAM full of its leftovers, which must read as zero again.
    let mut model = Interpreter::new(KernelImpl::best(), case.sram_bytes());
    for (t, d) in data.iter().enumerate() {
        model.set(t, d);
    }
    let want: Vec<Vec<Vec<f32>>> = runs
        .iter()
        .map(|ops| {
            model.run(ops);
            (0..TENSORS.len()).map(|t| model.get(t)).collect()
        })
        .collect();
    // A run that fails part way (injected fault) first, so the checked runs
    // also show that a failure leaves no stale state behind. Its STOREs into
    // the padded tensor go to tensor 0 instead, so that resetting the
    // tensors afterwards restores their padding too.
    let faulty: Vec<Op> = first
        .iter()
        .map(|op| match *op {
            Op::Store(s) if s.tensor_id == 1 => Op::Store(Store { tensor_id: 0, ..s }),
            other => other,
        })
        .collect();
    let fault = (case.seed % first.len().max(1) as u64) as u32;
    for mode in MODES {
        let mut e = engine_with_tensors(mode, case.sram_bytes(), &data);
        if !faulty.is_empty() {
            e.inject_fault(Some(fault));
            let r = e.execute(&faulty);
            prop_assert!(matches!(r, Err(Error::System(_))), "[{}] fault at op {fault}: {r:?}", mode.name);
            e.inject_fault(None);
            for (t, (&(rows, cols), d)) in TENSORS.iter().zip(&data).enumerate() {
                e.set_tensor(&format!("t{t}"), d, rows, cols).unwrap();
            }
        }
        for (round, (ops, want)) in runs.iter().zip(&want).enumerate() {
            e.execute(ops).map_err(|err| TestCaseError::fail(format!("[{}] execute {round}: {err}", mode.name)))?;
            for (t, &(rows, cols)) in TENSORS.iter().enumerate() {
                let got = get(&e, &format!("t{t}"), rows, cols);
                if let Some((i, w, g)) = first_difference(&want[t], &got) {
                    return Err(TestCaseError::fail(format!(
                        "[{}] execute {round}: tensor {t} element {i} is {g}, the interpreter gives {w}\n\
                         schedule ({} ops): {ops:#?}",
                        mode.name,
                        ops.len()
                    )));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_valid_schedules_match_an_interpreter_in_every_mode(case in schedule_case()) {
        check_schedule(&case)?;
    }
}
