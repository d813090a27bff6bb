//! The three tile operations a schedule is made of.

/// Copy tile (`tile_row`, `tile_col`) of tensor `tensor_id` into SRAM at
/// `dst_addr`, as a contiguous 32×32 fp32 block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Load {
    /// Tensor id from [`crate::runtime::Engine::register_tensor`].
    pub tensor_id: u32,
    /// Tile row (units of 32 rows).
    pub tile_row: u32,
    /// Tile column (units of 32 columns).
    pub tile_col: u32,
    /// Destination byte address in SRAM (multiple of [`super::ALIGNMENT`]).
    pub dst_addr: u32,
    /// Bytes to copy; must be [`super::TILE_BYTES`].
    pub bytes: u32,
    /// Double-buffer slot tag (`k % 2` from the builder), −1 when untagged.
    pub buffer: i32,
}

/// `ACC[acc_addr] += A[a_addr] · B[b_addr]` on 32×32 fp32 tiles; when
/// `k == 0` the accumulator is zeroed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exec {
    /// Output tile row.
    pub m: u32,
    /// Output tile column.
    pub n: u32,
    /// Reduction step; 0 starts a new accumulation.
    pub k: u32,
    /// SRAM byte address of the A tile.
    pub a_addr: u32,
    /// SRAM byte address of the B tile.
    pub b_addr: u32,
    /// SRAM byte address of the accumulator tile.
    pub acc_addr: u32,
    /// Double-buffer slot tag, −1 when untagged.
    pub buffer: i32,
}

/// Copy the accumulator at `src_addr` to tile (`tile_row`, `tile_col`) of a
/// tensor, applying ReLU to the accumulator in place first when `apply_relu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Store {
    /// Destination tensor id.
    pub tensor_id: u32,
    /// Tile row.
    pub tile_row: u32,
    /// Tile column.
    pub tile_col: u32,
    /// Source byte address in SRAM.
    pub src_addr: u32,
    /// Bytes to copy; must be [`super::TILE_BYTES`].
    pub bytes: u32,
    /// Apply `max(0, x)` before storing.
    pub apply_relu: bool,
}

/// One schedule operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// DRAM → SRAM tile copy.
    Load(Load),
    /// Tile multiply-accumulate.
    Exec(Exec),
    /// SRAM → DRAM tile copy.
    Store(Store),
}

impl Op {
    /// `"LOAD"`, `"EXEC"` or `"STORE"`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Load(_) => "LOAD",
            Op::Exec(_) => "EXEC",
            Op::Store(_) => "STORE",
        }
    }
}

impl From<Load> for Op {
    fn from(op: Load) -> Self {
        Op::Load(op)
    }
}

impl From<Exec> for Op {
    fn from(op: Exec) -> Self {
        Op::Exec(op)
    }
}

impl From<Store> for Op {
    fn from(op: Store) -> Self {
        Op::Store(op)
    }
}

/// Counts of each kind of operation in a schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// LOAD operations.
    pub loads: usize,
    /// EXEC operations.
    pub executes: usize,
    /// STORE operations.
    pub stores: usize,
}

impl OpCounts {
    /// Counts the operations of `ops`.
    pub fn of(ops: &[Op]) -> Self {
        let mut c = OpCounts::default();
        for op in ops {
            match op {
                Op::Load(_) => c.loads += 1,
                Op::Exec(_) => c.executes += 1,
                Op::Store(_) => c.stores += 1,
            }
        }
        c
    }
}
