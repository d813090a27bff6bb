//! The pure shape of a kissing-spheres tree: ids, levels, parents, children,
//! siblings, symmetry groups, and which worker owns which sphere.

use crate::error::{invalid, Result};

/// Children per sphere and number of symmetry groups.
pub const FANOUT: usize = 12;
/// Deepest tree supported: root + 12 + 144 + 1728.
pub const MAX_LEVELS: usize = 4;
/// Spheres per level of a full tree.
pub const SPHERES_PER_LEVEL: [usize; MAX_LEVELS] = [1, 12, 144, 1728];
/// Spheres in a full 4-level tree.
pub const MAX_SPHERES: usize = 1885;

/// Levels the dynamic-threading rule gives for `threads` threads:
/// 1 if ≤ 1, 2 if ≤ 13, 3 if ≤ 157, else 4.
pub fn hierarchy_levels(threads: usize) -> usize {
    match threads {
        0 | 1 => 1,
        2..=13 => 2,
        14..=157 => 3,
        _ => 4,
    }
}

/// First sphere id of `level` (ids are breadth-first from the root).
pub fn level_offset(level: usize) -> usize {
    SPHERES_PER_LEVEL[..level].iter().sum()
}

/// Symmetry groups worker `worker` of `workers` handles under the original
/// allocation rule: group g goes to worker g mod W when W ≤ 12; with more
/// workers, worker t < 12 gets group t and the rest get none.
pub fn groups_for_worker(workers: usize, worker: usize) -> Vec<usize> {
    if workers == 0 || worker >= workers {
        return Vec::new();
    }
    (0..FANOUT).filter(|g| g % workers == worker).collect()
}

/// The worker that owns symmetry group `group` (see [`groups_for_worker`]).
pub fn worker_for_group(workers: usize, group: usize) -> Option<usize> {
    (workers > 0 && group < FANOUT).then(|| group % workers)
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SphereNode {
    /// Sphere id, breadth-first from 0 (the root).
    pub id: usize,
    /// Depth: 0 for the root.
    pub level: usize,
    /// Parent id; `None` for the root.
    pub parent: Option<usize>,
    /// Children ids in ascending order (≤ 12).
    pub children: Vec<usize>,
    /// Symmetry group 0–11; `None` for the root, which spans all groups.
    pub group: Option<usize>,
    /// Level-1 group this sphere's subtree belongs to (0 for the root).
    pub branch: usize,
}

/// A complete or partial tree of spheres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    nodes: Vec<SphereNode>,
    levels: usize,
    per_level: [usize; MAX_LEVELS],
}

impl Hierarchy {
    /// A full tree of `levels` levels (1..=4).
    pub fn full(levels: usize) -> Result<Hierarchy> {
        if !(1..=MAX_LEVELS).contains(&levels) {
            return Err(invalid!("num_levels must be 1..4, got {levels}"));
        }
        Ok(Self::with_count(level_offset(levels)))
    }

    /// The first `count` spheres of a full tree, breadth-first: the last
    /// level may be partial. `count` in 1..=1885.
    pub fn partial(count: usize) -> Result<Hierarchy> {
        if !(1..=MAX_SPHERES).contains(&count) {
            return Err(invalid!("sphere count must be 1..{MAX_SPHERES}, got {count}"));
        }
        Ok(Self::with_count(count))
    }

    fn with_count(count: usize) -> Hierarchy {
        let mut per_level = [0; MAX_LEVELS];
        let mut nodes = Vec::with_capacity(count);
        for id in 0..count {
            let level = (0..MAX_LEVELS).rev().find(|&l| id >= level_offset(l)).unwrap_or(0);
            per_level[level] += 1;
            let index = id - level_offset(level);
            let (parent, group) = if level == 0 {
                (None, None)
            } else {
                (Some(level_offset(level - 1) + index / FANOUT), Some(index % FANOUT))
            };
            let children = if level + 1 < MAX_LEVELS {
                let first = level_offset(level + 1) + index * FANOUT;
                (first..first + FANOUT).filter(|&c| c < count).collect()
            } else {
                Vec::new()
            };
            let branch = match level {
                0 => 0,
                // The level-1 ancestor's index is the position within the level
                // divided by 12^(level-1).
                _ => index / FANOUT.pow(level as u32 - 1),
            };
            nodes.push(SphereNode { id, level, parent, children, group, branch });
        }
        let levels = per_level.iter().filter(|&&n| n > 0).count();
        Hierarchy { nodes, levels, per_level }
    }

    /// Number of levels with at least one sphere.
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// Spheres on `level` (0 beyond the last level).
    pub fn spheres_on_level(&self, level: usize) -> usize {
        self.per_level.get(level).copied().unwrap_or(0)
    }

    /// Total spheres.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The sphere with id `id`, if it exists.
    pub fn node(&self, id: usize) -> Option<&SphereNode> {
        self.nodes.get(id)
    }

    /// All spheres in id order.
    pub fn nodes(&self) -> &[SphereNode] {
        &self.nodes
    }

    /// Other children of the same parent, ascending (empty for the root).
    pub fn siblings(&self, id: usize) -> Vec<usize> {
        match self.node(id).and_then(|n| n.parent) {
            Some(p) => self.nodes[p].children.iter().copied().filter(|&c| c != id).collect(),
            None => Vec::new(),
        }
    }

    /// Whether `a` and `b` are parent and child (either way) or siblings:
    /// the pairs allowed to exchange messages.
    pub fn are_neighbours(&self, a: usize, b: usize) -> bool {
        let parent = |s: usize| self.node(s).and_then(|n| n.parent);
        parent(a) == Some(b) || parent(b) == Some(a) || (a != b && parent(a).is_some() && parent(a) == parent(b))
    }

    /// Spheres with no children: where distributed work lands.
    pub fn leaves(&self) -> Vec<usize> {
        self.nodes.iter().filter(|n| n.children.is_empty()).map(|n| n.id).collect()
    }

    /// Edges between two spheres (siblings are 2 apart, cousins 4).
    pub fn distance(&self, a: usize, b: usize) -> usize {
        let (mut a, mut b, mut d) = (a, b, 0);
        while a != b {
            if self.nodes[a].level >= self.nodes[b].level {
                a = self.nodes[a].parent.unwrap_or(a);
            } else {
                b = self.nodes[b].parent.unwrap_or(b);
            }
            d += 1;
        }
        d
    }

    /// The leaves each of `workers` workers owns, ascending, following the
    /// group allocation rule; several workers sharing one group (more than
    /// 12 workers) split its leaves round-robin.
    pub fn assign_leaves(&self, workers: usize) -> Vec<Vec<usize>> {
        let mut owned = vec![Vec::new(); workers];
        if workers == 0 {
            return owned;
        }
        let mut seen_in_group = [0usize; FANOUT];
        for leaf in self.leaves() {
            let g = self.nodes[leaf].branch;
            let sharing: Vec<usize> =
                if workers <= FANOUT { vec![g % workers] } else { (0..workers).filter(|w| w % FANOUT == g).collect() };
            let w = sharing[seen_in_group[g] % sharing.len()];
            seen_in_group[g] += 1;
            owned[w].push(leaf);
        }
        owned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_trees_have_the_spec_counts() {
        for (levels, total) in [(1, 1), (2, 13), (3, 157), (4, 1885)] {
            let h = Hierarchy::full(levels).unwrap();
            assert_eq!(h.len(), total);
            assert_eq!(h.levels(), levels);
        }
        assert!(Hierarchy::full(0).is_err());
        assert!(Hierarchy::full(5).is_err());
    }

    #[test]
    fn ids_parents_groups_follow_the_numbering() {
        let h = Hierarchy::full(4).unwrap();
        assert_eq!(h.node(1).unwrap().group, Some(0));
        assert_eq!(h.node(12).unwrap().group, Some(11));
        assert_eq!(h.node(13).unwrap().parent, Some(1));
        assert_eq!(h.node(156).unwrap().parent, Some(12));
        assert_eq!(h.node(157).unwrap().parent, Some(13));
        assert_eq!(h.node(1884).unwrap().parent, Some(156));
        assert_eq!(h.node(1884).unwrap().group, Some(11));
        assert_eq!(h.node(1884).unwrap().branch, 11);
        assert_eq!(h.node(0).unwrap().children, (1..=12).collect::<Vec<_>>());
        assert_eq!(h.siblings(14).len(), 11);
        assert_eq!(h.distance(13, 14), 2);
        assert_eq!(h.distance(157, 169), 4);
        assert!(h.are_neighbours(13, 1) && h.are_neighbours(1, 13) && h.are_neighbours(13, 14));
        assert!(!h.are_neighbours(13, 25) && !h.are_neighbours(13, 13) && !h.are_neighbours(0, 13));
    }

    #[test]
    fn dynamic_sizes_build_a_partial_last_level() {
        for (threads, levels) in [(1, 1), (2, 2), (13, 2), (64, 3), (157, 3), (200, 4)] {
            assert_eq!(hierarchy_levels(threads), levels);
            let h = Hierarchy::partial(threads).unwrap();
            assert_eq!(h.len(), threads);
            assert_eq!(h.levels(), levels);
        }
        let h = Hierarchy::partial(64).unwrap();
        assert_eq!(h.spheres_on_level(2), 51);
        assert_eq!(h.node(5).unwrap().children, vec![61, 62, 63]);
    }

    #[test]
    fn allocation_rule_matches_original() {
        for (cores, each) in [(1, 12), (2, 6), (4, 3), (6, 2), (12, 1)] {
            for t in 0..cores {
                assert_eq!(groups_for_worker(cores, t).len(), each);
            }
        }
        assert_eq!(groups_for_worker(12, 7), vec![7]);
        for t in 12..24 {
            assert!(groups_for_worker(24, t).is_empty());
        }
        for cores in [1, 2, 3, 4, 5, 6, 8, 12, 16, 24] {
            let mut covered = [0; FANOUT];
            for t in 0..cores {
                for g in groups_for_worker(cores, t) {
                    covered[g] += 1;
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{cores}: {covered:?}");
        }
    }

    #[test]
    fn every_leaf_has_exactly_one_owner() {
        for (levels, workers) in [(1, 2), (2, 2), (3, 5), (4, 2), (4, 24)] {
            let h = Hierarchy::full(levels).unwrap();
            let owned = h.assign_leaves(workers);
            let mut all: Vec<usize> = owned.concat();
            all.sort();
            assert_eq!(all, h.leaves());
        }
    }
}
