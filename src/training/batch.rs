//! Training batches: consecutive windows of `batch_size × seq_len` tokens
//! whose targets are the inputs shifted by one token.

use crate::error::{invalid, Result};
use std::sync::Arc;

/// The token written into padding positions (input and target).
pub const PAD_TOKEN: u32 = 0;

/// One batch: `batch_size` rows of `seq_len` positions, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows in the batch.
    pub batch_size: usize,
    /// Positions per row.
    pub seq_len: usize,
    /// Input token of every position.
    pub input_ids: Vec<u32>,
    /// The token that follows each input (next-token target).
    pub target_ids: Vec<u32>,
    /// 1.0 for a real position, 0.0 for padding.
    pub attention_mask: Vec<f32>,
    /// Positions whose mask is 1.
    pub num_valid_tokens: usize,
}

impl Batch {
    /// An all-padding batch.
    pub fn new(batch_size: usize, seq_len: usize) -> Result<Batch> {
        let n = window_len(batch_size, seq_len)?;
        Ok(Batch {
            batch_size,
            seq_len,
            input_ids: vec![PAD_TOKEN; n],
            target_ids: vec![PAD_TOKEN; n],
            attention_mask: vec![0.0; n],
            num_valid_tokens: 0,
        })
    }

    /// Checks the batch's internal consistency: array lengths, a mask of
    /// only 0 and 1, padding positions holding [`PAD_TOKEN`], and
    /// `num_valid_tokens` equal to the mask's count. Token 0 is a valid
    /// token (a NUL byte), so real positions may hold it.
    pub fn validate(&self) -> Result<()> {
        let n = window_len(self.batch_size, self.seq_len)?;
        for (name, len) in [
            ("input_ids", self.input_ids.len()),
            ("target_ids", self.target_ids.len()),
            ("attention_mask", self.attention_mask.len()),
        ] {
            if len != n {
                return Err(invalid!("{name} has {len} entries, expected batch_size × seq_len = {n}"));
            }
        }
        let mut valid = 0;
        for i in 0..n {
            match self.attention_mask[i] {
                1.0 => valid += 1,
                0.0 => {
                    if self.input_ids[i] != PAD_TOKEN || self.target_ids[i] != PAD_TOKEN {
                        return Err(invalid!("position {i} is padding but holds tokens other than {PAD_TOKEN}"));
                    }
                }
                m => return Err(invalid!("attention_mask[{i}] is {m}; only 0 and 1 are allowed")),
            }
        }
        if valid != self.num_valid_tokens {
            return Err(invalid!(
                "num_valid_tokens is {} but the mask has {valid} valid positions",
                self.num_valid_tokens
            ));
        }
        Ok(())
    }

    /// Valid positions of row `row`.
    pub fn row_valid_tokens(&self, row: usize) -> usize {
        let r = row * self.seq_len..(row + 1) * self.seq_len;
        self.attention_mask[r].iter().filter(|&&m| m != 0.0).count()
    }
}

/// Bytes one batch position takes: input, target and mask.
const BYTES_PER_POSITION: u64 = 12;

/// `batch_size × seq_len`, both at least 1, without overflow, and small
/// enough that a batch fits in a quarter of the memory this process may
/// use (a larger one could only fail later, or abort).
pub fn window_len(batch_size: usize, seq_len: usize) -> Result<usize> {
    if batch_size == 0 || seq_len == 0 {
        return Err(invalid!("batch_size ({batch_size}) and seq_len ({seq_len}) must both be at least 1"));
    }
    let n = batch_size
        .checked_mul(seq_len)
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| invalid!("batch_size × seq_len = {batch_size} × {seq_len} is too large"))?;
    let limit = crate::sys::memory_limit_bytes() / 4;
    if (n as u64).saturating_mul(BYTES_PER_POSITION) > limit {
        return Err(invalid!(
            "a batch of {batch_size} × {seq_len} positions needs {} bytes, more than a quarter of the {} this process may use",
            n as u64 * BYTES_PER_POSITION,
            limit * 4
        ));
    }
    Ok(n)
}

/// Walks a token stream in batches. Batch `k` covers positions
/// `k·B·T .. (k+1)·B·T` of the stream; position `p` has input `tokens[p]`
/// and target `tokens[p + 1]`. The last, partial batch is padded unless
/// `drop_last`. With `shuffle`, each pass visits the batches in a
/// different order drawn from a fixed seed, so runs are reproducible.
///
/// Cloning is cheap: the tokens are shared, the position is not.
#[derive(Debug, Clone)]
pub struct BatchIterator {
    tokens: Arc<[u32]>,
    batch_size: usize,
    seq_len: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    /// Passes started so far (each reset starts one); seeds the order.
    pass: u64,
    /// Batch indices in visiting order for the current pass.
    order: Vec<usize>,
    cursor: usize,
}

/// Seed of the shuffled order when none is given.
pub const DEFAULT_SHUFFLE_SEED: u64 = 0x5eed_cafe_f00d;

impl BatchIterator {
    /// An iterator over a copy of `tokens`. Fails when a size is 0 or
    /// when the stream holds no batch at all (fewer than 2 tokens, or
    /// with `drop_last` fewer than `B·T + 1`).
    pub fn new(tokens: &[u32], batch_size: usize, seq_len: usize, shuffle: bool, drop_last: bool) -> Result<Self> {
        let window = window_len(batch_size, seq_len)?;
        let mut it = BatchIterator {
            tokens: tokens.into(),
            batch_size,
            seq_len,
            shuffle,
            drop_last,
            seed: DEFAULT_SHUFFLE_SEED,
            pass: 0,
            order: Vec::new(),
            cursor: 0,
        };
        if it.num_batches() == 0 {
            return Err(invalid!(
                "{} tokens hold no batch of {batch_size} × {seq_len} (= {window}) positions{}",
                it.tokens.len(),
                if drop_last { " with drop_last" } else { "" }
            ));
        }
        it.start_pass();
        Ok(it)
    }

    /// Batches in one pass: ⌊(N−1)/(B·T)⌋, plus one for a partial batch
    /// unless `drop_last`.
    pub fn num_batches(&self) -> usize {
        let usable = self.tokens.len().saturating_sub(1);
        let window = self.batch_size * self.seq_len;
        usable / window + usize::from(!self.drop_last && !usable.is_multiple_of(window))
    }

    /// Starts a new pass from the first batch (a new order when shuffling).
    pub fn reset(&mut self) {
        self.pass += 1;
        self.start_pass();
    }

    fn start_pass(&mut self) {
        self.order = (0..self.num_batches()).collect();
        if self.shuffle {
            let mut rng = SplitMix64::new(self.seed ^ self.pass.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // Fisher–Yates.
            for i in (1..self.order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
        }
        self.cursor = 0;
    }

    /// The same iterator with the shuffled order drawn from `seed`,
    /// restarted at its first pass.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.pass = 0;
        self.start_pass();
        self
    }

    /// Rows per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Positions per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The token stream.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Batches left in the current pass.
    pub fn remaining(&self) -> usize {
        self.order.len() - self.cursor
    }

    /// Batch number `index` of the stream (in stream order, not shuffled).
    pub fn batch_at(&self, index: usize) -> Result<Batch> {
        if index >= self.num_batches() {
            return Err(invalid!("batch {index} out of range 0..{}", self.num_batches()));
        }
        let mut b = Batch::new(self.batch_size, self.seq_len)?;
        self.fill(index, &mut b);
        Ok(b)
    }

    /// Writes batch `index` into `b` (already sized).
    fn fill(&self, index: usize, b: &mut Batch) {
        let window = self.batch_size * self.seq_len;
        let start = index * window;
        // Positions whose target exists: p + 1 < N.
        let end = (start + window).min(self.tokens.len() - 1);
        let valid = end.saturating_sub(start);
        b.input_ids[..valid].copy_from_slice(&self.tokens[start..end]);
        b.target_ids[..valid].copy_from_slice(&self.tokens[start + 1..end + 1]);
        b.attention_mask[..valid].fill(1.0);
        b.input_ids[valid..].fill(PAD_TOKEN);
        b.target_ids[valid..].fill(PAD_TOKEN);
        b.attention_mask[valid..].fill(0.0);
        b.num_valid_tokens = valid;
    }
}

impl Iterator for BatchIterator {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let index = *self.order.get(self.cursor)?;
        self.cursor += 1;
        let mut b = Batch::new(self.batch_size, self.seq_len).ok()?;
        self.fill(index, &mut b);
        Some(b)
    }
}

/// A small, fixed PRNG (splitmix64): results never change with a
/// dependency's version, which keeps shuffles and sampling reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_hand_computed_positions() {
        // 0..=20: 21 tokens, 20 usable positions; B=2, T=3 → 6 per batch.
        let tokens: Vec<u32> = (0..21).collect();
        let mut it = BatchIterator::new(&tokens, 2, 3, false, false).unwrap();
        assert_eq!(it.num_batches(), 4);
        let b0 = it.next().unwrap();
        assert_eq!(b0.input_ids, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(b0.target_ids, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(b0.num_valid_tokens, 6);
        let b1 = it.next().unwrap();
        assert_eq!(b1.input_ids, vec![6, 7, 8, 9, 10, 11]);
        let _ = it.next().unwrap();
        let last = it.next().unwrap();
        // Positions 18, 19 valid (targets 19, 20), the rest padding.
        assert_eq!(last.input_ids, vec![18, 19, 0, 0, 0, 0]);
        assert_eq!(last.target_ids, vec![19, 20, 0, 0, 0, 0]);
        assert_eq!(last.attention_mask, vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(last.num_valid_tokens, 2);
        assert_eq!(last.row_valid_tokens(0), 2);
        assert_eq!(last.row_valid_tokens(1), 0);
        last.validate().unwrap();
        assert!(it.next().is_none());
        it.reset();
        assert_eq!(it.next().unwrap(), b0);
    }

    #[test]
    fn drop_last_skips_the_partial_batch() {
        let tokens: Vec<u32> = (0..21).collect();
        let it = BatchIterator::new(&tokens, 2, 3, false, true).unwrap();
        assert_eq!(it.num_batches(), 3);
        assert_eq!(it.count(), 3);
        // Exactly B·T + 1 tokens make one full batch.
        let it = BatchIterator::new(&tokens[..7], 2, 3, false, true).unwrap();
        assert_eq!(it.num_batches(), 1);
    }

    #[test]
    fn shuffle_permutes_batches_reproducibly_and_differs_per_pass() {
        let tokens: Vec<u32> = (0..1001).collect();
        let mut a = BatchIterator::new(&tokens, 1, 10, true, true).unwrap();
        let mut b = a.clone();
        let first: Vec<u32> = a.by_ref().map(|x| x.input_ids[0]).collect();
        let again: Vec<u32> = b.by_ref().map(|x| x.input_ids[0]).collect();
        assert_eq!(first, again);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).map(|k| k * 10).collect::<Vec<u32>>());
        assert_ne!(first, sorted, "a shuffle of 100 batches left them in order");
        a.reset();
        let second: Vec<u32> = a.map(|x| x.input_ids[0]).collect();
        assert_ne!(first, second);
        // Another seed, another order; the same seed, the same order.
        let seeded = |s| BatchIterator::new(&tokens, 1, 10, true, true).unwrap().with_seed(s);
        let order = |it: BatchIterator| it.map(|x| x.input_ids[0]).collect::<Vec<u32>>();
        assert_eq!(order(seeded(9)), order(seeded(9)));
        assert_ne!(order(seeded(9)), first);
    }

    #[test]
    fn streams_without_a_batch_are_rejected() {
        assert!(BatchIterator::new(&[], 1, 1, false, false).is_err());
        assert!(BatchIterator::new(&[5], 1, 1, false, false).is_err());
        assert!(BatchIterator::new(&[1, 2, 3], 2, 2, false, true).is_err());
        assert!(BatchIterator::new(&[1, 2, 3], 0, 2, false, false).is_err());
        assert!(BatchIterator::new(&[1, 2, 3], 2, 0, false, false).is_err());
        assert!(BatchIterator::new(&[1, 2, 3], usize::MAX, 2, false, false).is_err());
        // Without drop_last a short stream is one padded batch.
        let it = BatchIterator::new(&[1, 2, 3], 2, 2, false, false).unwrap();
        assert_eq!(it.num_batches(), 1);
    }

    #[test]
    fn validate_finds_each_inconsistency() {
        let tokens: Vec<u32> = (0..5).collect();
        let mut b = BatchIterator::new(&tokens, 2, 3, false, false).unwrap().next().unwrap();
        b.validate().unwrap();
        let mut bad = b.clone();
        bad.num_valid_tokens += 1;
        assert!(bad.validate().is_err());
        let mut bad = b.clone();
        bad.attention_mask[0] = 0.5;
        assert!(bad.validate().is_err());
        let mut bad = b.clone();
        bad.input_ids[5] = 7;
        assert!(bad.validate().is_err());
        b.input_ids.pop();
        assert!(b.validate().is_err());
    }
}
