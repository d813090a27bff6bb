//! Validation and planning: one pass over a schedule that rejects anything
//! unsafe or meaningless before a single byte moves, resolves every operand
//! to memory offsets, lists the SRAM that must read as zero, and (for the
//! pipelined mode) computes each op's dependencies on the other lanes.
//!
//! SRAM is tracked in blocks of `G` bytes, the largest power of two between
//! 64 and 4096 that divides every address in the schedule; since addresses
//! are multiples of 64 and every range is 4096 bytes, each range is a whole
//! number of blocks and the tracking is exact.
//!
//! Renaming (pipelined mode, when every address is a multiple of 4096): a
//! LOAD, or an EXEC that starts an accumulation, writes a fresh physical
//! tile instead of the one its address named last, the way a CPU renames
//! registers. The value every later op reads is the same, but a LOAD no
//! longer waits for the EXECs that still read the previous contents of its
//! address: the DMA lane runs ahead by up to [`RUNAHEAD_TILES`] tiles. A
//! physical tile is reused only when no address maps to it, and the
//! dependencies make its reuse wait for its last reader.

use super::memory::TensorStore;
use super::schedule::Op;
use super::{ALIGNMENT, TILE_BYTES, TILE_DIM, TILE_FLOATS};
use crate::error::{invalid, out_of_range, Error, Result};

/// Most compute lanes an engine may run.
pub const MAX_COMPUTE_LANES: usize = 8;
/// Virtual lane of LOADs (run by the DMA thread).
pub(crate) const LANE_LOAD: usize = 0;
/// Virtual lane of STOREs (run by the DMA thread, which may let LOADs pass
/// a STORE that is waiting for its accumulator).
pub(crate) const LANE_STORE: usize = 1;
/// First compute lane; compute lane `c` is `LANE_COMPUTE + c`.
pub(crate) const LANE_COMPUTE: usize = 2;
/// Number of virtual lanes at most.
pub(crate) const MAX_LANES: usize = LANE_COMPUTE + MAX_COMPUTE_LANES;

/// What one planned op does, with every operand resolved. SRAM operands
/// are float offsets; DRAM operands are pointers into tensor storage,
/// valid while the engine is borrowed for the execute call.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    Load {
        dst: usize,
        src: *const f32,
        stride: usize,
    },
    Exec {
        a: usize,
        b: usize,
        acc: usize,
        zero_first: bool,
    },
    /// Writes only the `rows × cols` part of the tile inside the tensor's
    /// registered shape, so the padding stays zero.
    Store {
        src: usize,
        dst: *mut f32,
        stride: usize,
        relu: bool,
        rows: usize,
        cols: usize,
    },
}

/// A validated op ready to run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlannedOp {
    /// Index in the caller's schedule, for traces and messages.
    pub index: u32,
    pub step: Step,
    /// Virtual lane that runs it (pipelined mode).
    pub lane: u8,
    /// For each virtual lane, how many of its ops must have completed
    /// before this one may start (pipelined mode; zeros otherwise).
    pub deps: [u32; MAX_LANES],
}

// SAFETY: the raw pointers refer to tensor storage owned by the engine,
// which outlives every lane's use of a plan (execute waits for the lanes),
// and the dependencies serialise every conflicting access.
unsafe impl Send for PlannedOp {}

/// Spare physical tiles of a pipelined engine beyond its SRAM: how far the
/// DMA lane may run ahead of compute when addresses are reused.
pub(crate) const RUNAHEAD_TILES: usize = 16;

/// Validation state of one logical SRAM block, valid when `epoch` is current.
#[derive(Clone, Copy, Default)]
struct Block {
    epoch: u32,
    written: bool,
    /// 1 + index of the accumulator record covering this block, or 0.
    acc: u32,
}

/// Dependency state of one unit of the dependency space (a physical tile
/// when renaming, else a logical block), valid when `epoch` is current.
#[derive(Clone, Copy, Default)]
struct DepUnit {
    epoch: u32,
    writer_lane: u8,
    writer_seq: u32,
    readers: [u32; MAX_LANES],
}

/// An accumulator: the 4 KiB at `addr` that EXECs accumulate into.
struct AccRecord {
    addr: usize,
    /// Between an EXEC and the STORE that reads it.
    open: bool,
    /// Overwritten by a LOAD or by another accumulator.
    alive: bool,
    opened_by: usize,
    lane: usize,
}

/// Dependency state of one tensor tile in DRAM.
#[derive(Clone, Copy, Default)]
struct DramTile {
    epoch: u32,
    last_store: u32,
    last_load: u32,
}

/// The result of planning: the ops, the SRAM to zero first, and how many
/// ops each virtual lane runs.
#[derive(Default)]
pub(crate) struct Plan {
    pub ops: Vec<PlannedOp>,
    /// (float offset, float count) ranges of the executing SRAM read before
    /// anything in this schedule writes them: they must read as zero, as
    /// if SRAM had been cleared.
    pub zero: Vec<(usize, usize)>,
    pub lane_ops: [u32; MAX_LANES],
}

/// How a call is planned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Compute lanes; 0 = sequential (no dependencies).
    pub compute_lanes: usize,
    /// Physical tiles of the executing SRAM when renaming is allowed
    /// (pipelined engines), else 0.
    pub physical_tiles: usize,
}

/// Reusable planner: keeps its tracking arrays between calls so planning
/// allocates nothing in the steady state.
#[derive(Default)]
pub(crate) struct Planner {
    blocks: Vec<Block>,
    deps: Vec<DepUnit>,
    accs: Vec<AccRecord>,
    dram: Vec<Vec<DramTile>>,
    /// Logical tile -> (epoch, physical tile), when renaming.
    map: Vec<(u32, u32)>,
    /// Physical tile -> (epoch, 1 + logical tile) while an address maps to it.
    owner: Vec<(u32, u32)>,
    next_tile: usize,
    zero_tile_used: bool,
    epoch: u32,
    pub plan: Plan,
}

/// Per-call settings derived from the layout and the schedule.
#[derive(Clone, Copy)]
struct Call {
    block_bytes: usize,
    pipelined: bool,
    compute_lanes: usize,
    /// Physical tiles when renaming this call, else 0.
    rename: usize,
}

/// A range of the dependency space.
#[derive(Clone, Copy)]
struct Units {
    first: usize,
    count: usize,
}

fn check_sram(i: usize, op: &str, what: &str, addr: u32, bytes: u32, sram_bytes: usize) -> Result<()> {
    if bytes as usize != TILE_BYTES {
        return Err(invalid!("op {i} ({op}): bytes is {bytes}, must be {TILE_BYTES} (one 32x32 fp32 tile)"));
    }
    if !(addr as usize).is_multiple_of(ALIGNMENT) {
        return Err(invalid!("op {i} ({op}): {what} 0x{addr:x} is not a multiple of {ALIGNMENT}"));
    }
    if addr as usize + TILE_BYTES > sram_bytes {
        return Err(out_of_range!(
            "op {i} ({op}): {what} 0x{addr:x} + {TILE_BYTES} bytes is outside SRAM ({sram_bytes} bytes)"
        ));
    }
    Ok(())
}

fn at(i: usize, op: &str, e: Error) -> Error {
    match e {
        Error::OutOfRange(m) => Error::OutOfRange(format!("op {i} ({op}): {m}")),
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("op {i} ({op}): {m}")),
        other => other,
    }
}

/// First pass: ranges, alignment, ids and tile coordinates. Returns the
/// block size and the end of the highest range, or the first error with
/// its op index.
fn check_operands(ops: &[Op], sram_bytes: usize, tensors: &TensorStore) -> (usize, usize, Option<(usize, Error)>) {
    let mut block = TILE_BYTES;
    let mut end = 0usize;
    let mut note = |addr: u32| {
        if addr != 0 {
            block = block.min(1 << addr.trailing_zeros().min(TILE_BYTES.trailing_zeros()));
        }
        end = end.max(addr as usize + TILE_BYTES);
    };
    for (i, op) in ops.iter().enumerate() {
        let name = op.name();
        let r = match op {
            Op::Load(l) => check_sram(i, name, "dst_addr", l.dst_addr, l.bytes, sram_bytes)
                .and_then(|_| tensors.check_tile(l.tensor_id, l.tile_row, l.tile_col).map_err(|e| at(i, name, e)))
                .map(|_| note(l.dst_addr)),
            Op::Exec(e) => check_sram(i, name, "a_addr", e.a_addr, TILE_BYTES as u32, sram_bytes)
                .and_then(|_| check_sram(i, name, "b_addr", e.b_addr, TILE_BYTES as u32, sram_bytes))
                .and_then(|_| check_sram(i, name, "acc_addr", e.acc_addr, TILE_BYTES as u32, sram_bytes))
                .map(|_| {
                    note(e.a_addr);
                    note(e.b_addr);
                    note(e.acc_addr);
                }),
            Op::Store(s) => check_sram(i, name, "src_addr", s.src_addr, s.bytes, sram_bytes)
                .and_then(|_| tensors.check_tile(s.tensor_id, s.tile_row, s.tile_col).map_err(|e| at(i, name, e)))
                .map(|_| note(s.src_addr)),
        };
        if let Err(e) = r {
            return (block, end, Some((i, e)));
        }
    }
    (block, end, None)
}

fn overlaps(a: usize, b: usize) -> bool {
    a < b + TILE_BYTES && b < a + TILE_BYTES
}

impl Planner {
    /// Validates `ops` and builds the plan for `layout`. On error nothing
    /// has been touched and the error names the first bad op.
    pub(crate) fn plan(
        &mut self,
        ops: &[Op],
        sram_bytes: usize,
        tensors: &mut TensorStore,
        layout: Layout,
    ) -> Result<()> {
        debug_assert!(layout.compute_lanes <= MAX_COMPUTE_LANES);
        if ops.len() > u32::MAX as usize - 1 {
            return Err(invalid!("schedule has {} ops, at most {} are allowed", ops.len(), u32::MAX - 1));
        }
        self.plan.ops.clear();
        self.plan.zero.clear();
        self.plan.lane_ops = [0; MAX_LANES];
        self.accs.clear();
        self.next_tile = 0;
        self.zero_tile_used = false;
        let (block_bytes, end, first_error) = check_operands(ops, sram_bytes, tensors);
        let checked = first_error.as_ref().map_or(ops.len(), |(i, _)| *i);
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // After 2^32 calls stale epochs could look current: start over.
            self.blocks.clear();
            self.deps.clear();
            self.map.clear();
            self.owner.clear();
            self.dram.iter_mut().for_each(Vec::clear);
            self.epoch = 1;
        }
        let pipelined = layout.compute_lanes > 0;
        let rename = if pipelined && block_bytes == TILE_BYTES { layout.physical_tiles } else { 0 };
        let call = Call { block_bytes, pipelined, compute_lanes: layout.compute_lanes, rename };
        let nblocks = end.div_ceil(block_bytes);
        if self.blocks.len() < nblocks {
            self.blocks.resize(nblocks, Block::default());
        }
        if pipelined {
            let units = if rename > 0 { rename } else { nblocks };
            if self.deps.len() < units {
                self.deps.resize(units, DepUnit::default());
            }
            if self.dram.len() < tensors.len() {
                self.dram.resize_with(tensors.len(), Vec::new);
            }
        }
        if rename > 0 {
            if self.map.len() < nblocks {
                self.map.resize(nblocks, (0, 0));
            }
            if self.owner.len() < rename {
                self.owner.resize(rename, (0, 0));
            }
        }
        let mut next_compute = 0usize;
        for (i, op) in ops[..checked].iter().enumerate() {
            self.plan_op(i, op, call, tensors, &mut next_compute)?;
        }
        match first_error {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    fn block(&mut self, b: usize) -> &mut Block {
        let epoch = self.epoch;
        let blk = &mut self.blocks[b];
        if blk.epoch != epoch {
            *blk = Block { epoch, ..Block::default() };
        }
        blk
    }

    fn unit(&mut self, u: usize) -> &mut DepUnit {
        let epoch = self.epoch;
        let d = &mut self.deps[u];
        if d.epoch != epoch {
            *d = DepUnit { epoch, ..DepUnit::default() };
        }
        d
    }

    /// The live accumulator record covering block `b`, if any.
    fn acc_at(&mut self, b: usize) -> Option<usize> {
        let r = self.block(b).acc;
        (r != 0 && self.accs[r as usize - 1].alive).then(|| r as usize - 1)
    }

    fn kill_acc(&mut self, r: usize, block_bytes: usize) {
        self.accs[r].alive = false;
        let first = self.accs[r].addr / block_bytes;
        for b in first..first + TILE_BYTES / block_bytes {
            let blk = self.block(b);
            if blk.acc as usize == r + 1 {
                blk.acc = 0;
            }
        }
    }

    /// Whether every block of the tile at `addr` was written earlier in
    /// this schedule.
    fn written(&mut self, call: Call, addr: u32) -> bool {
        let first = addr as usize / call.block_bytes;
        (first..first + TILE_BYTES / call.block_bytes).all(|b| self.block(b).written)
    }

    /// Whether any block of the tile at `addr` was written earlier in this
    /// schedule.
    fn any_written(&mut self, call: Call, addr: u32) -> bool {
        let first = addr as usize / call.block_bytes;
        (first..first + TILE_BYTES / call.block_bytes).any(|b| self.block(b).written)
    }

    fn mark_written(&mut self, call: Call, addr: u32) {
        let first = addr as usize / call.block_bytes;
        for b in first..first + TILE_BYTES / call.block_bytes {
            self.block(b).written = true;
        }
    }

    /// The physical tile reads of logical tile `addr` go to; a tile never
    /// written in this schedule reads the shared zero tile (the last one).
    fn renamed_read(&mut self, call: Call, addr: u32) -> usize {
        let (epoch, tile) = self.map[addr as usize / TILE_BYTES];
        if epoch == self.epoch {
            return tile as usize;
        }
        let zero = call.rename - 1;
        if !self.zero_tile_used {
            self.zero_tile_used = true;
            self.plan.zero.push((zero * TILE_FLOATS, TILE_FLOATS));
        }
        zero
    }

    /// Maps logical tile `addr` to a fresh physical tile (round robin over
    /// the tiles no address maps to, the zero tile excluded).
    fn renamed_write(&mut self, call: Call, addr: u32) -> usize {
        let logical = addr as usize / TILE_BYTES;
        let (epoch, old) = self.map[logical];
        if epoch == self.epoch {
            self.owner[old as usize] = (0, 0);
        }
        let usable = call.rename - 1;
        let tile = loop {
            let t = self.next_tile;
            self.next_tile = (t + 1) % usable;
            if self.owner[t].0 != self.epoch || self.owner[t].1 == 0 {
                break t;
            }
        };
        self.owner[tile] = (self.epoch, logical as u32 + 1);
        self.map[logical] = (self.epoch, tile as u32);
        tile
    }

    /// Dependency units of a physical tile or of a logical address.
    fn units(call: Call, physical: Option<usize>, addr: u32) -> Units {
        match physical {
            Some(t) => Units { first: t, count: 1 },
            None => Units { first: addr as usize / call.block_bytes, count: TILE_BYTES / call.block_bytes },
        }
    }

    /// Adds to `need` what reading (and, if `write`, writing) `u` on
    /// `lane` must wait for.
    fn deps_for(&mut self, u: Units, lane: usize, write: bool, need: &mut [u32; MAX_LANES]) {
        for i in u.first..u.first + u.count {
            let d = *self.unit(i);
            if d.writer_seq != 0 && d.writer_lane as usize != lane {
                let w = d.writer_lane as usize;
                need[w] = need[w].max(d.writer_seq);
            }
            if write {
                for (v, r) in d.readers.iter().enumerate() {
                    if v != lane {
                        need[v] = need[v].max(*r);
                    }
                }
            }
        }
    }

    fn record(&mut self, u: Units, lane: usize, seq: u32, write: bool) {
        for i in u.first..u.first + u.count {
            let d = self.unit(i);
            if write {
                d.writer_lane = lane as u8;
                d.writer_seq = seq;
                d.readers = [0; MAX_LANES];
            } else {
                d.readers[lane] = d.readers[lane].max(seq);
            }
        }
    }

    fn push_zero(&mut self, range: (usize, usize)) {
        if self.plan.zero.last() != Some(&range) {
            self.plan.zero.push(range);
        }
    }

    fn dram_tile(&mut self, tensors: &TensorStore, id: u32, row: u32, col: u32) -> &mut DramTile {
        let t = tensors.get(id).expect("checked in the first pass");
        let tiles = &mut self.dram[id as usize];
        let n = t.tile_rows as usize * t.tile_cols as usize;
        if tiles.len() < n {
            tiles.resize(n, DramTile::default());
        }
        let epoch = self.epoch;
        let tile = &mut tiles[row as usize * t.tile_cols as usize + col as usize];
        if tile.epoch != epoch {
            *tile = DramTile { epoch, ..DramTile::default() };
        }
        tile
    }

    /// Float offset in the executing SRAM of a physical tile or logical
    /// address.
    fn offset(physical: Option<usize>, addr: u32) -> usize {
        physical.map_or(addr as usize / 4, |t| t * TILE_FLOATS)
    }

    fn plan_op(
        &mut self,
        i: usize,
        op: &Op,
        call: Call,
        tensors: &mut TensorStore,
        next_compute: &mut usize,
    ) -> Result<()> {
        let bb = call.block_bytes;
        let renaming = call.rename > 0;
        let mut need = [0u32; MAX_LANES];
        let (step, lane) = match *op {
            Op::Load(l) => {
                let first = l.dst_addr as usize / bb;
                for b in first..first + TILE_BYTES / bb {
                    if let Some(r) = self.acc_at(b) {
                        if self.accs[r].open {
                            return Err(invalid!(
                                "op {i} (LOAD): dst_addr 0x{:x} overwrites the accumulator at 0x{:x} \
                                 (opened by op {}) before a STORE has read it",
                                l.dst_addr,
                                self.accs[r].addr,
                                self.accs[r].opened_by
                            ));
                        }
                        self.kill_acc(r, bb);
                    }
                }
                let lane = LANE_LOAD;
                let seq = self.plan.lane_ops[lane] + 1;
                let phys = renaming.then(|| self.renamed_write(call, l.dst_addr));
                self.mark_written(call, l.dst_addr);
                if call.pipelined {
                    let u = Self::units(call, phys, l.dst_addr);
                    self.deps_for(u, lane, true, &mut need);
                    self.record(u, lane, seq, true);
                    let t = self.dram_tile(tensors, l.tensor_id, l.tile_row, l.tile_col);
                    need[LANE_STORE] = need[LANE_STORE].max(t.last_store);
                    t.last_load = seq;
                }
                let t = &mut tensors.all_mut()[l.tensor_id as usize];
                let (off, stride) = (t.tile_offset(l.tile_row, l.tile_col), t.padded_cols);
                // SAFETY: the tile lies inside the tensor (checked in the
                // first pass), so the offset stays within the allocation.
                let src = unsafe { t.data.as_mut_ptr().add(off) } as *const f32;
                (Step::Load { dst: Self::offset(phys, l.dst_addr), src, stride }, lane)
            }
            Op::Exec(e) => {
                for (name, addr) in [("a_addr", e.a_addr), ("b_addr", e.b_addr)] {
                    if overlaps(addr as usize, e.acc_addr as usize) {
                        return Err(invalid!(
                            "op {i} (EXEC): {name} 0x{addr:x} overlaps its own accumulator at 0x{:x}",
                            e.acc_addr
                        ));
                    }
                    let first = addr as usize / bb;
                    for b in first..first + TILE_BYTES / bb {
                        if let Some(r) = self.acc_at(b) {
                            if self.accs[r].open {
                                return Err(invalid!(
                                    "op {i} (EXEC): {name} 0x{addr:x} reads the accumulator at 0x{:x} \
                                     (opened by op {}) as an operand while it accumulates",
                                    self.accs[r].addr,
                                    self.accs[r].opened_by
                                ));
                            }
                        }
                    }
                }
                let first = e.acc_addr as usize / bb;
                let mut same = None;
                for b in first..first + TILE_BYTES / bb {
                    if let Some(r) = self.acc_at(b) {
                        if self.accs[r].addr == e.acc_addr as usize {
                            same = Some(r);
                        } else if self.accs[r].open {
                            return Err(invalid!(
                                "op {i} (EXEC): acc_addr 0x{:x} overlaps the open accumulator at 0x{:x} (opened by op {})",
                                e.acc_addr,
                                self.accs[r].addr,
                                self.accs[r].opened_by
                            ));
                        } else {
                            self.kill_acc(r, bb);
                        }
                    }
                }
                let restart = e.k == 0 || same.is_none_or(|r| !self.accs[r].open);
                let r = match same {
                    Some(r) => r,
                    None => {
                        self.accs.push(AccRecord {
                            addr: e.acc_addr as usize,
                            open: true,
                            alive: true,
                            opened_by: i,
                            lane: 0,
                        });
                        let r = self.accs.len() - 1;
                        for b in first..first + TILE_BYTES / bb {
                            self.block(b).acc = r as u32 + 1;
                        }
                        r
                    }
                };
                if !self.accs[r].open {
                    self.accs[r].opened_by = i;
                }
                self.accs[r].open = true;
                if call.pipelined && restart {
                    // A new accumulation may go to any lane; keeping the
                    // chain on one lane preserves its order without waits.
                    self.accs[r].lane = *next_compute;
                    *next_compute = (*next_compute + 1) % call.compute_lanes;
                }
                let lane = LANE_COMPUTE + if call.pipelined { self.accs[r].lane } else { 0 };
                let seq = self.plan.lane_ops[lane] + 1;
                // Operands never written in this schedule read as zero.
                let (pa, pb) = if renaming {
                    (Some(self.renamed_read(call, e.a_addr)), Some(self.renamed_read(call, e.b_addr)))
                } else {
                    for addr in [e.a_addr, e.b_addr] {
                        if !self.written(call, addr) {
                            self.push_zero((addr as usize / 4, TILE_FLOATS));
                        }
                    }
                    (None, None)
                };
                // An accumulator nothing wrote yet starts from zero: the
                // EXEC zeroes it itself (zeroing before the run would be
                // undone by earlier users of a renamed tile). Only a
                // partly written one (blocks < 4096 bytes, so no renaming)
                // is zeroed before the run, which keeps the written part.
                let acc_untouched = !self.any_written(call, e.acc_addr);
                let zero_first = e.k == 0 || acc_untouched;
                let pacc = if !renaming {
                    if !zero_first && !self.written(call, e.acc_addr) {
                        self.push_zero((e.acc_addr as usize / 4, TILE_FLOATS));
                    }
                    None
                } else if zero_first {
                    Some(self.renamed_write(call, e.acc_addr))
                } else {
                    Some(self.renamed_read(call, e.acc_addr))
                };
                self.mark_written(call, e.acc_addr);
                if call.pipelined {
                    let (ua, ub, uc) = (
                        Self::units(call, pa, e.a_addr),
                        Self::units(call, pb, e.b_addr),
                        Self::units(call, pacc, e.acc_addr),
                    );
                    self.deps_for(ua, lane, false, &mut need);
                    self.deps_for(ub, lane, false, &mut need);
                    self.deps_for(uc, lane, true, &mut need);
                    self.record(ua, lane, seq, false);
                    self.record(ub, lane, seq, false);
                    self.record(uc, lane, seq, true);
                }
                let step = Step::Exec {
                    a: Self::offset(pa, e.a_addr),
                    b: Self::offset(pb, e.b_addr),
                    acc: Self::offset(pacc, e.acc_addr),
                    zero_first,
                };
                (step, lane)
            }
            Op::Store(s) => {
                let src_block = s.src_addr as usize / bb;
                let r = self.acc_at(src_block).filter(|r| self.accs[*r].addr == s.src_addr as usize);
                let Some(r) = r else {
                    return Err(invalid!(
                        "op {i} (STORE): src_addr 0x{:x} holds no accumulator: no earlier EXEC accumulated there \
                         (or a LOAD has overwritten it since)",
                        s.src_addr
                    ));
                };
                self.accs[r].open = false;
                let lane = LANE_STORE;
                let seq = self.plan.lane_ops[lane] + 1;
                let phys = renaming.then(|| self.renamed_read(call, s.src_addr));
                if call.pipelined {
                    let u = Self::units(call, phys, s.src_addr);
                    self.deps_for(u, lane, s.apply_relu, &mut need);
                    self.record(u, lane, seq, s.apply_relu);
                    let t = self.dram_tile(tensors, s.tensor_id, s.tile_row, s.tile_col);
                    need[LANE_LOAD] = need[LANE_LOAD].max(t.last_load);
                    t.last_store = seq;
                    t.last_load = 0;
                }
                let t = &mut tensors.all_mut()[s.tensor_id as usize];
                let (off, stride) = (t.tile_offset(s.tile_row, s.tile_col), t.padded_cols);
                let rows = (t.rows - s.tile_row as usize * TILE_DIM).min(TILE_DIM);
                let cols = (t.cols - s.tile_col as usize * TILE_DIM).min(TILE_DIM);
                // SAFETY: the tile lies inside the tensor (first pass).
                let dst = unsafe { t.data.as_mut_ptr().add(off) };
                let src = Self::offset(phys, s.src_addr);
                (Step::Store { src, dst, stride, relu: s.apply_relu, rows, cols }, lane)
            }
        };
        self.plan.lane_ops[lane] += 1;
        self.plan.ops.push(PlannedOp { index: i as u32, step, lane: lane as u8, deps: need });
        Ok(())
    }
}
