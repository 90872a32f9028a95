//! Histograms from counts kept per unit of time (a minute, ten minutes), the rule both stores follow:
//! the whole units of each bucket are summed from their counts; of a unit that a bucket boundary cuts,
//! only the smaller side is counted from rows and the other side is the unit's count less it; the
//! parts of units the window's ends cut, and units without a count, are counted from rows.

use std::collections::{BTreeMap, HashMap};

use trail_model::time::Micros;

/// What a histogram from counts reads from rows, and how counted units move between buckets.
#[derive(Debug, Default)]
pub struct CutPlan {
    pub from: Micros,
    pub width: Micros,
    pub unit: Micros,
    /// Buckets of the window: `0..buckets`.
    pub buckets: i64,
    /// Units wholly inside the window: `[ceil(from), floor(to))`, in units. Each one's count is
    /// summed into the bucket its start falls in ([`Self::units_of`]).
    pub range: (i64, i64),
    /// Row counts to take: `[lo, hi)` added to bucket `add` and, for the smaller side of a cut unit,
    /// taken from the bucket `take` that holds the unit's count (-1: none).
    pub lo: Vec<Micros>,
    pub hi: Vec<Micros>,
    pub add: Vec<i64>,
    pub take: Vec<i64>,
    /// Units a boundary cuts, whose count (summed into the bucket their start falls in) moves: from
    /// `.0` to `.1` (-1: to nowhere, both sides being counted from rows).
    pub owners: HashMap<i64, (i64, i64)>,
}

impl CutPlan {
    /// The plan for buckets of `width` over `[from, to)`, from counts per `unit` (`width >= unit`, so
    /// no unit is cut by two boundaries); `dense`: the only units with counts, sorted, when not all.
    pub fn new(from: Micros, to: Micros, width: Micros, unit: Micros, dense: Option<&[i64]>) -> Self {
        let buckets = if to > from { (to - from - 1) / width + 1 } else { 0 };
        let range = ((from + unit - 1).div_euclid(unit), to.div_euclid(unit));
        // How the boundary at `p` cuts unit `p / unit`: `None` when its count cannot stand in for a
        // side (the boundary is on a unit's edge, the unit is not wholly in the window, or it has no
        // count), else whether its left side (the earlier bucket's) is the smaller.
        let split = |p: Micros| {
            let u = p.div_euclid(unit);
            let kept = dense.is_none_or(|d| d.binary_search(&u).is_ok());
            (p % unit != 0 && u >= range.0 && u < range.1 && kept).then(|| p - u * unit <= (u + 1) * unit - p)
        };
        let mut plan = Self { from, width, unit, buckets, range, ..Self::default() };
        let mut cut = |l: Micros, h: Micros, b: i64, minus: i64| {
            if l < h {
                plan.lo.push(l);
                plan.hi.push(h);
                plan.add.push(b);
                plan.take.push(minus);
            }
        };
        for b in 0..buckets {
            let start = from + b * width;
            let end = to.min(start.saturating_add(width));
            // The whole units of the bucket: [ceil(start), floor(end)), in units.
            let (first, last) = ((start + unit - 1).div_euclid(unit), end.div_euclid(unit));
            if first > last {
                // Inside one unit, touching neither of its ends (the window's last bucket).
                cut(start, end, b, -1);
                continue;
            }
            // The head: the right side of the unit the boundary at `start` cuts.
            match (b > 0).then(|| split(start)).flatten() {
                Some(true) => {}
                Some(false) => cut(start, first * unit, b, b - 1),
                None => cut(start, first * unit, b, -1),
            }
            // The tail: the left side of the unit the next boundary cuts.
            match (b + 1 < buckets).then(|| split(end)).flatten() {
                Some(true) => cut(last * unit, end, b, b + 1),
                Some(false) => {}
                None => cut(last * unit, end, b, -1),
            }
            // Whole units without counts: their rows.
            if let Some(dense) = dense {
                for (l, h) in crate::gaps(dense, first, last) {
                    cut(l * unit, h * unit, b, -1);
                }
            }
        }
        for b in 1..buckets {
            let boundary = from + b * width;
            let u = boundary.div_euclid(unit);
            match split(boundary) {
                Some(true) => {
                    plan.owners.insert(u, (b - 1, b));
                }
                Some(false) => {}
                None if boundary % unit != 0 && u >= range.0 && u < range.1 => {
                    plan.owners.insert(u, (b - 1, -1));
                }
                None => {}
            }
        }
        plan
    }

    /// The units of [`Self::range`] whose start falls in bucket `b`, `[first, last)` (empty when
    /// `first >= last`): a store that sums the counts one bucket at a time reads these.
    pub fn units_of(&self, b: i64) -> (i64, i64) {
        let start = self.from + b * self.width;
        let ceil = |t: Micros| (t + self.unit - 1).div_euclid(self.unit);
        (ceil(start).max(self.range.0), ceil(start.saturating_add(self.width)).min(self.range.1))
    }

    /// The buckets' counts, by bucket, from what the plan asked for: `rows[i]` the rows of
    /// `[lo[i], hi[i])`, `whole` the units of [`Self::range`] summed per bucket their start falls in,
    /// and `owned` the count of each unit of [`Self::owners`]. Buckets counting nothing are left out.
    pub fn assemble(
        &self,
        rows: &[i64],
        whole: impl IntoIterator<Item = (i64, i64)>,
        owned: impl IntoIterator<Item = (i64, i64)>,
    ) -> BTreeMap<i64, i64> {
        let mut counts = BTreeMap::<i64, i64>::new();
        for ((&n, &to), &minus) in rows.iter().zip(&self.add).zip(&self.take) {
            *counts.entry(to).or_default() += n;
            if minus >= 0 {
                *counts.entry(minus).or_default() -= n;
            }
        }
        for (b, n) in whole {
            *counts.entry(b).or_default() += n;
        }
        // A cut unit's count moves out of the bucket its start falls in: to the next bucket when its
        // left side was the smaller (counted from rows above and taken from there), to nowhere when
        // both sides were counted from rows. A unit whose right side was the smaller stays.
        for (u, n) in owned {
            if let Some(&(from, to)) = self.owners.get(&u) {
                *counts.entry(from).or_default() -= n;
                if to >= 0 {
                    *counts.entry(to).or_default() += n;
                }
            }
        }
        counts.retain(|_, n| *n != 0);
        counts
    }
}

#[cfg(test)]
mod tests {
    use trail_model::time::MICROS_PER_SECOND;

    use super::*;

    const MINUTE: Micros = 60 * MICROS_PER_SECOND;

    /// Runs a plan over events at `times`, with a unit's count kept where `dense` says (every unit
    /// when `None`), summing the whole units one bucket at a time as the embedded store does.
    fn run_plan(plan: &CutPlan, times: &[i64], dense: Option<&[i64]>) -> Vec<(i64, i64)> {
        let in_range = |l: i64, h: i64| times.iter().filter(|&&t| t >= l && t < h).count() as i64;
        let unit = plan.unit;
        let kept = |u: i64| {
            if dense.is_none_or(|d| d.contains(&u)) { in_range(u * unit, (u + 1) * unit) } else { 0 }
        };
        let rows: Vec<i64> = plan.lo.iter().zip(&plan.hi).map(|(&l, &h)| in_range(l, h)).collect();
        let whole = (0..plan.buckets).map(|b| {
            let (first, last) = plan.units_of(b);
            (b, (first..last).map(kept).sum())
        });
        let owned: Vec<(i64, i64)> = plan.owners.keys().map(|&u| (u, kept(u))).collect();
        plan.assemble(&rows, whole, owned).into_iter().collect()
    }

    /// Every plan counts each event of the window once, in its bucket: windows on, just after and
    /// in the middle of a unit, buckets of one unit and more, every unit counted or only some.
    #[test]
    fn a_cut_plan_counts_every_event_once() {
        let unit = 60;
        let times: Vec<i64> = (0..4000).map(|i: i64| (i * 7919 + i * i) % 7200).collect();
        let some: Vec<i64> = (0..120).filter(|u| u % 3 != 1).collect();
        for dense in [None, Some(some.as_slice())] {
            for from in [0, 1, 29, 30, 31, 59, 61, 125] {
                for width in [60, 61, 90, 119, 120, 150, 600] {
                    for to in [from + 1, from + 59, from + 61, from + 3600, from + 3599, 7000] {
                        let plan = CutPlan::new(from, to, width, unit, dense);
                        let mut want = BTreeMap::<i64, i64>::new();
                        for &t in times.iter().filter(|&&t| t >= from && t < to) {
                            *want.entry((t - from) / width).or_default() += 1;
                        }
                        let want: Vec<(i64, i64)> = want.into_iter().collect();
                        let got = run_plan(&plan, &times, dense);
                        assert_eq!(got, want, "from {from} to {to} width {width} dense {}", dense.is_some());
                        // Summed per bucket, the whole units are the range, each once.
                        let units: Vec<i64> = (0..plan.buckets)
                            .flat_map(|b| {
                                let (first, last) = plan.units_of(b);
                                first..last
                            })
                            .collect();
                        assert_eq!(units, (plan.range.0..plan.range.1).collect::<Vec<_>>());
                    }
                }
            }
        }
    }

    /// The soak's chart: the last hour in minutes, from 30.4 s past a minute. Each boundary cuts a
    /// minute into 30.4 s and 29.6 s, and only the 29.6 s are read from rows: about half of the hour
    /// (both sides, as before, were all of it).
    #[test]
    fn an_hour_in_minutes_off_the_minute_reads_the_smaller_side_of_each_cut() {
        let from = 1_000 * MINUTE + 30_400_000;
        let plan = CutPlan::new(from, from + 60 * MINUTE, MINUTE, MINUTE, None);
        let read: i64 = plan.lo.iter().zip(&plan.hi).map(|(l, h)| h - l).sum();
        assert_eq!(
            read,
            60 * 29_600_000 + 30_400_000,
            "59 right sides, the window's head (29.6 s) and tail (30.4 s)"
        );
        assert!(read < 31 * MINUTE);
        assert_eq!(plan.owners.len(), 0, "every cut minute's count stays in the bucket its start is in");
        // Just before the half minute the left sides are the smaller: they are read, and the minutes'
        // counts move to the later bucket.
        let from = 1_000 * MINUTE + 29_000_000;
        let plan = CutPlan::new(from, from + 60 * MINUTE, MINUTE, MINUTE, None);
        let read: i64 = plan.lo.iter().zip(&plan.hi).map(|(l, h)| h - l).sum();
        assert_eq!(read, 59 * 29_000_000 + 31_000_000 + 29_000_000);
        assert_eq!(plan.owners.len(), 59);
    }
}
