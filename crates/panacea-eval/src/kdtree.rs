//! A static k-d tree (Bentley, "Multidimensional binary search trees used for associative
//! searching", CACM 18(9) 1975) answering "the smallest value of f(p) over the tree's points p"
//! by branch and bound, for any f that has a lower bound over an axis-aligned box.
//!
//! Nearest-neighbour distances (spacing, GD, IGD), IGD+'s one-sided distance, the ε indicators
//! and weak dominance (coverage) are all of that form, so each costs O(log n) per query on
//! low-dimensional fronts instead of a scan of every point. The answer is exactly the brute-force
//! minimum: every candidate is evaluated with the same f, and a box is skipped only when its
//! bound is at least the best value found, so only values that cannot be smaller are skipped.
//! Bounds must be computed so that rounding cannot push them above a point's value; the
//! functions below use the monotonicity of IEEE rounding for that (e.g. a box edge closer than a
//! point gives a smaller rounded difference).

/// Points per leaf: below this a linear scan beats further splits.
const LEAF: usize = 12;

#[derive(Debug, Clone)]
struct Node {
    /// Range of `order` covered by this node.
    start: usize,
    end: usize,
    /// Children (indices into `nodes`), `None` for a leaf.
    children: Option<(usize, usize)>,
}

/// A k-d tree over the rows of flat row-major data (n rows of d values), with each node's
/// bounding box.
#[derive(Debug, Clone)]
pub(crate) struct KdTree<'a> {
    data: &'a [f64],
    d: usize,
    /// Row indices, grouped so that each node covers a contiguous range.
    order: Vec<usize>,
    /// The rows copied in `order`, so a leaf's rows are contiguous in memory.
    sorted: Vec<f64>,
    nodes: Vec<Node>,
    /// Per node, its box: `2·d` values, lower corner then upper corner.
    boxes: Vec<f64>,
}

impl<'a> KdTree<'a> {
    /// Builds the tree by median splits on each box's widest side. O(n log n).
    pub(crate) fn new(data: &'a [f64], d: usize) -> KdTree<'a> {
        let n = data.len().checked_div(d).unwrap_or(0);
        let mut tree = KdTree {
            data,
            d,
            order: (0..n).collect(),
            sorted: Vec::new(),
            nodes: Vec::new(),
            boxes: Vec::new(),
        };
        if n > 0 {
            tree.build(0, n);
        }
        tree.sorted = tree.order.iter().flat_map(|&i| &data[i * d..(i + 1) * d]).copied().collect();
        tree
    }

    fn build(&mut self, start: usize, end: usize) -> usize {
        let d = self.d;
        let mut lo = vec![f64::INFINITY; d];
        let mut hi = vec![f64::NEG_INFINITY; d];
        for &i in &self.order[start..end] {
            for (k, &v) in self.data[i * d..(i + 1) * d].iter().enumerate() {
                lo[k] = lo[k].min(v);
                hi[k] = hi[k].max(v);
            }
        }
        let id = self.nodes.len();
        self.nodes.push(Node { start, end, children: None });
        self.boxes.extend_from_slice(&lo);
        self.boxes.extend_from_slice(&hi);
        let axis = (0..d).max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b])));
        if let Some(axis) = axis.filter(|&a| end - start > LEAF && hi[a] > lo[a]) {
            let mid = start + (end - start) / 2;
            let data = self.data;
            self.order[start..end].select_nth_unstable_by(mid - start, |&a, &b| {
                data[a * d + axis].total_cmp(&data[b * d + axis])
            });
            let left = self.build(start, mid);
            let right = self.build(mid, end);
            self.nodes[id].children = Some((left, right));
        }
        id
    }

    /// min over rows p (except row `skip`) of `value(p)`, where `bound(lo, hi)` is at most
    /// `value(p)` for every p in the box [lo, hi]. Stops early once the best value is at most
    /// `good_enough` (use −∞ for the exact minimum). Returns +∞ when no row qualifies.
    pub(crate) fn min_by(
        &self,
        skip: Option<usize>,
        good_enough: f64,
        value: impl Fn(&[f64]) -> f64,
        bound: impl Fn(&[f64], &[f64]) -> f64,
    ) -> f64 {
        let mut best = f64::INFINITY;
        if self.nodes.is_empty() {
            return best;
        }
        let d = self.d;
        let node_bound = |id: usize| {
            let b = &self.boxes[id * 2 * d..(id + 1) * 2 * d];
            bound(&b[..d], &b[d..])
        };
        let mut stack: Vec<(usize, f64)> = Vec::with_capacity(64);
        stack.push((0, node_bound(0)));
        while let Some((id, b)) = stack.pop() {
            if b >= best {
                continue;
            }
            let node = &self.nodes[id];
            match node.children {
                None => {
                    let rows = self.sorted[node.start * d..node.end * d].chunks_exact(d);
                    for (&i, p) in self.order[node.start..node.end].iter().zip(rows) {
                        if Some(i) != skip {
                            best = best.min(value(p));
                        }
                    }
                    if best <= good_enough {
                        return best;
                    }
                }
                Some((l, r)) => {
                    let (bl, br) = (node_bound(l), node_bound(r));
                    // The more promising child is popped first.
                    if bl <= br {
                        stack.push((r, br));
                        stack.push((l, bl));
                    } else {
                        stack.push((l, bl));
                        stack.push((r, br));
                    }
                }
            }
        }
        best
    }
}

/// Per coordinate, how far `q` lies outside [lo, hi] (0 inside). For p in the box the rounded
/// |p_k − q_k| is at least this rounded gap.
#[inline]
fn gap(q: f64, lo: f64, hi: f64) -> f64 {
    if q < lo {
        lo - q
    } else if q > hi {
        q - hi
    } else {
        0.0
    }
}

/// L1 distance, summed in coordinate order.
#[inline]
pub(crate) fn l1(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum()
}

/// Squared L2 distance, squares summed in coordinate order. Searches compare squares and take
/// one square root of the minimum: `sqrt` is correctly rounded and monotone, so that root is
/// exactly the smallest of the roots.
#[inline]
pub(crate) fn l2_squared(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>()
}

/// Lower bound of [`l1`] from `q` to the box.
pub(crate) fn l1_box(q: &[f64], lo: &[f64], hi: &[f64]) -> f64 {
    q.iter().zip(lo).zip(hi).map(|((&q, &l), &h)| gap(q, l, h)).sum()
}

/// Lower bound of [`l2_squared`] from `q` to the box.
pub(crate) fn l2_squared_box(q: &[f64], lo: &[f64], hi: &[f64]) -> f64 {
    q.iter()
        .zip(lo)
        .zip(hi)
        .map(|((&q, &l), &h)| {
            let g = gap(q, l, h);
            g * g
        })
        .sum::<f64>()
}
