//! The 12-step tables as pure functions.
//!
//! Steps are numbered 1..=12. The helpers below accept *any* `i32` and map
//! it into that range first with [`wrap_step`]:
//! `wrap_step(s) = ((s − 1) mod 12) + 1` with the Euclidean (never negative)
//! modulo, computed in 64-bit so that `i32::MIN` and `i32::MAX` cannot
//! overflow. So 0 → 12, −1 → 11, 13 → 1, 25 → 1. Submitting a task for a
//! step outside 1..=12 is *not* wrapped: the pool rejects it (see
//! [`is_valid_step`]).

use super::{CognitivePhase, CognitiveStream, PoolLayer, ProcessingMode};

/// Cognitive streams.
pub const NUM_STREAMS: usize = 3;
/// Steps in one cycle.
pub const STEPS_PER_CYCLE: i32 = 12;
/// Steps that belong to one stream in a cycle.
pub const STEPS_PER_STREAM: i32 = 4;
/// Triads (groups of three consecutive steps) in one cycle.
pub const TRIADS_PER_CYCLE: i32 = 4;

/// Whether `step` is a real step number, 1..=12.
pub const fn is_valid_step(step: i32) -> bool {
    step >= 1 && step <= STEPS_PER_CYCLE
}

/// Maps any integer onto 1..=12: `((step − 1) mod 12) + 1`, Euclidean
/// modulo, without overflow for any `i32` (0 → 12, −1 → 11, 13 → 1).
pub const fn wrap_step(step: i32) -> i32 {
    ((step as i64 - 1).rem_euclid(STEPS_PER_CYCLE as i64) + 1) as i32
}

/// Zero-based position of `step` (wrapped) in the cycle, 0..=11.
const fn index(step: i32) -> usize {
    (wrap_step(step) - 1) as usize
}

/// Stream of a step (wrapped): `(step − 1) % 3` — Cerebral 1, 4, 7, 10;
/// Somatic 2, 5, 8, 11; Autonomic 3, 6, 9, 12.
pub const fn stream_for_step(step: i32) -> CognitiveStream {
    match index(step) % 3 {
        0 => CognitiveStream::Cerebral,
        1 => CognitiveStream::Somatic,
        _ => CognitiveStream::Autonomic,
    }
}

/// Phase of a step (wrapped): `(step − 1) % 4` — Perception 1, 5, 9;
/// Action 2, 6, 10; Simulation 3, 7, 11; Integration 4, 8, 12.
pub const fn phase_for_step(step: i32) -> CognitivePhase {
    match index(step) % 4 {
        0 => CognitivePhase::Perception,
        1 => CognitivePhase::Action,
        2 => CognitivePhase::Simulation,
        _ => CognitivePhase::Integration,
    }
}

/// Mode of a step (wrapped): Expressive on 1, 2, 3, 5, 6, 9, 10;
/// Reflective on 4, 7, 8, 11, 12.
pub const fn mode_for_step(step: i32) -> ProcessingMode {
    match wrap_step(step) {
        1 | 2 | 3 | 5 | 6 | 9 | 10 => ProcessingMode::Expressive,
        _ => ProcessingMode::Reflective,
    }
}

/// Triad of a step (wrapped): `((step − 1) % 12) / 3`, 0..=3.
pub const fn triad_for_step(step: i32) -> i32 {
    (index(step) / 3) as i32
}

/// Thread-pool layer of a step (wrapped), from the seed design: 1, 5, 9
/// DataLoader; 2, 6, 10 InterOp; 3, 7, 11 IntraOp; 4, 8, 12 the ordered
/// lane ("CUDA stream") of the step's stream (4 → Cerebral's, 8 → Somatic's,
/// 12 → Autonomic's).
pub const fn layer_for_step(step: i32) -> PoolLayer {
    match index(step) % 4 {
        0 => PoolLayer::DataLoader,
        1 => PoolLayer::InterOp,
        2 => PoolLayer::IntraOp,
        _ => PoolLayer::CudaStream,
    }
}

/// The tetrahedral faces: the three threads (vertices 0..=3) of face
/// `index` — 0 {0,1,2}, 1 {0,1,3}, 2 {0,2,3}, 3 {1,2,3}; `None` for any
/// other index.
pub const fn triadic_face(index: i32) -> Option<[i32; 3]> {
    match index {
        0 => Some([0, 1, 2]),
        1 => Some([0, 1, 3]),
        2 => Some([0, 2, 3]),
        3 => Some([1, 2, 3]),
        _ => None,
    }
}

/// The tetrahedral edge joining vertices `a` and `b` (order-free):
/// {0,1} 0, {0,2} 1, {0,3} 2, {1,2} 3, {1,3} 4, {2,3} 5; `None` when a
/// vertex is outside 0..=3 or `a == b`.
pub const fn dyadic_edge(a: i32, b: i32) -> Option<i32> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    match (lo, hi) {
        (0, 1) => Some(0),
        (0, 2) => Some(1),
        (0, 3) => Some(2),
        (1, 2) => Some(3),
        (1, 3) => Some(4),
        (2, 3) => Some(5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_the_spec() {
        use CognitivePhase::*;
        use CognitiveStream::*;
        use PoolLayer::*;
        use ProcessingMode::*;
        let streams = [Cerebral, Somatic, Autonomic].repeat(4);
        let phases = [Perception, Action, Simulation, Integration].repeat(3);
        let modes = [
            Expressive, Expressive, Expressive, Reflective, Expressive, Expressive, Reflective, Reflective, Expressive,
            Expressive, Reflective, Reflective,
        ];
        let layers = [DataLoader, InterOp, IntraOp, CudaStream].repeat(3);
        for step in 1..=12 {
            let i = (step - 1) as usize;
            assert!(is_valid_step(step));
            assert_eq!(stream_for_step(step), streams[i], "stream of {step}");
            assert_eq!(phase_for_step(step), phases[i], "phase of {step}");
            assert_eq!(mode_for_step(step), modes[i], "mode of {step}");
            assert_eq!(layer_for_step(step), layers[i], "layer of {step}");
            assert_eq!(triad_for_step(step), (step - 1) / 3);
        }
        // The ordered-lane steps belong to streams 0, 1, 2 in turn.
        assert_eq!(stream_for_step(4), Cerebral);
        assert_eq!(stream_for_step(8), Somatic);
        assert_eq!(stream_for_step(12), Autonomic);
    }

    #[test]
    fn wrapping_is_total_and_documented() {
        assert_eq!(wrap_step(0), 12);
        assert_eq!(wrap_step(-1), 11);
        assert_eq!(wrap_step(13), 1);
        assert_eq!(wrap_step(25), 1);
        assert_eq!(wrap_step(-11), 1);
        assert_eq!(wrap_step(-12), 12);
        for s in [i32::MIN, i32::MIN + 1, -1_000_000_007, -13, 0, 12, 1_000_000_007, i32::MAX - 1, i32::MAX] {
            let w = wrap_step(s);
            assert!(is_valid_step(w), "{s} -> {w}");
            assert_eq!(((s as i64 - w as i64) % 12), 0, "{s} -> {w}");
            assert_eq!(stream_for_step(s), stream_for_step(w));
            assert_eq!(phase_for_step(s), phase_for_step(w));
            assert_eq!(mode_for_step(s), mode_for_step(w));
            assert_eq!(triad_for_step(s), triad_for_step(w));
            assert_eq!(layer_for_step(s), layer_for_step(w));
        }
        assert!(!is_valid_step(0) && !is_valid_step(13) && !is_valid_step(-1));
        assert!(!is_valid_step(i32::MIN) && !is_valid_step(i32::MAX));
    }

    #[test]
    fn faces_and_edges() {
        assert_eq!(triadic_face(0), Some([0, 1, 2]));
        assert_eq!(triadic_face(1), Some([0, 1, 3]));
        assert_eq!(triadic_face(2), Some([0, 2, 3]));
        assert_eq!(triadic_face(3), Some([1, 2, 3]));
        assert_eq!(triadic_face(4), None);
        assert_eq!(triadic_face(-1), None);
        assert_eq!(triadic_face(i32::MIN), None);
        let edges = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
        for (e, &(a, b)) in edges.iter().enumerate() {
            assert_eq!(dyadic_edge(a, b), Some(e as i32));
            assert_eq!(dyadic_edge(b, a), Some(e as i32));
        }
        for (a, b) in [(0, 0), (3, 3), (0, 4), (-1, 2), (i32::MIN, i32::MAX), (i32::MAX, 0)] {
            assert_eq!(dyadic_edge(a, b), None, "{a},{b}");
        }
        // Every face's three vertices are joined by three distinct edges.
        for f in 0..4 {
            let [a, b, c] = triadic_face(f).unwrap();
            let mut es = [dyadic_edge(a, b).unwrap(), dyadic_edge(a, c).unwrap(), dyadic_edge(b, c).unwrap()];
            es.sort();
            assert!(es[0] < es[1] && es[1] < es[2]);
        }
    }
}
