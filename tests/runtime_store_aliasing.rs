//! A STORE without ReLU only reads its accumulator, so the pipeline may run
//! it on the DMA thread while an EXEC on a compute thread reads the same
//! tile as an operand. Both sides must take shared access only: a `&mut`
//! over the tile would alias the EXEC's `&` (undefined behaviour that a
//! normal run cannot see). Run under Miri to check it:
//!
//! ```text
//! MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test --test runtime_store_aliasing
//! ```
use cllm::runtime::*;

fn load(t: u32, addr: u32) -> Op {
    Op::Load(Load { tensor_id: t, tile_row: 0, tile_col: 0, dst_addr: addr, bytes: 4096, buffer: -1 })
}
fn exec(k: u32, a: u32, b: u32, acc: u32) -> Op {
    Op::Exec(Exec { m: 0, n: 0, k, a_addr: a, b_addr: b, acc_addr: acc, buffer: -1 })
}
fn store(t: u32, src: u32, relu: bool) -> Op {
    Op::Store(Store { tensor_id: t, tile_row: 0, tile_col: 0, src_addr: src, bytes: 4096, apply_relu: relu })
}

#[test]
fn store_without_relu_runs_alongside_an_exec_reading_the_same_tile() {
    let mut e = Engine::new(EngineConfig {
        sram_bytes: 4 * 4096,
        threaded: true,
        compute_threads: 1,
        kernel: Some(KernelImpl::Reference),
        pin_threads: false, // Miri cannot set affinities
        ..Default::default()
    })
    .unwrap();
    for t in 0..3 {
        e.register_tensor(&format!("t{t}"), 32, 32).unwrap();
    }
    // op 3 (STORE, no ReLU) and op 4 (EXEC reading 8192 as A) do not depend
    // on each other: both only read tile 8192, on different threads.
    let ops = [
        load(0, 0),
        load(1, 4096),
        exec(0, 0, 4096, 8192),
        store(2, 8192, false),
        exec(0, 8192, 0, 12288),
        store(2, 12288, false),
    ];
    e.execute(&ops).unwrap();
    let mut out = vec![1f32; 1024];
    e.get_tensor("t2", &mut out, 32, 32).unwrap();
    assert!(out.iter().all(|v| *v == 0.0), "zero tensors multiply to zero");
}
