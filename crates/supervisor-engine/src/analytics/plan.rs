//! Which rollup rows answer a window: the fewest rows that cover it exactly where the
//! store still keeps fine enough rows, and rounded out to whole hours or days where it
//! does not.
//!
//! Minutes before the roller's watermark are in hour and day rows as well as minute rows;
//! minutes from the watermark on are only in minute rows. So a window is cut in two at
//! the watermark: the part after it is read from minute rows, the part before it from
//! whole days, then whole hours, then minutes at its edges (a day row is one read where
//! 1,440 minute rows would be). Minute rows are kept 48 hours and hour rows 90 days, so an
//! edge older than that is first rounded out to the hour or the day.

use supervisor_model::{Granularity, HOUR_ROWS_KEPT_MS, MINUTE_ROWS_KEPT_MS};

/// Rows of one granularity whose periods start in `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub granularity: Granularity,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The rows to read for a window, and the window they cover (after rounding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub pieces: Vec<Piece>,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// What the store keeps at `now_ms`, with the roller's `watermark_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kept {
    pub watermark_ms: i64,
    /// Minute rows exist for every minute from here (the roller never deletes a minute
    /// it has not folded).
    pub minutes_from_ms: i64,
    /// Hour rows exist for every hour from here.
    pub hours_from_ms: i64,
}

impl Kept {
    pub(crate) fn at(now_ms: i64, watermark_ms: i64) -> Kept {
        Kept {
            watermark_ms,
            minutes_from_ms: watermark_ms
                .min(Granularity::Minute.start_of(now_ms.saturating_sub(MINUTE_ROWS_KEPT_MS))),
            hours_from_ms: Granularity::Hour.start_of(now_ms.saturating_sub(HOUR_ROWS_KEPT_MS)),
        }
    }

    /// The finest granularity kept for every period from `at_ms` on, for rounding edges:
    /// minute rows from the first whole hour they cover, hour rows from the first whole
    /// day, so an edge rounded to one of them never needs a coarser row beside it.
    fn finest_at(&self, at_ms: i64) -> Granularity {
        if at_ms >= ceil(Granularity::Hour, self.minutes_from_ms) {
            Granularity::Minute
        } else if at_ms >= ceil(Granularity::Day, self.hours_from_ms) {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }
}

/// `at_ms` rounded up to a period boundary of `g`.
pub(crate) fn ceil(g: Granularity, at_ms: i64) -> i64 {
    let start = g.start_of(at_ms);
    if start == at_ms {
        at_ms
    } else {
        start.saturating_add(g.millis())
    }
}

/// The plan of a summary over `[from_ms, to_ms)`: its edges rounded to the finest rows
/// kept there, then covered with the coarsest rows that fit.
pub(crate) fn summary(from_ms: i64, to_ms: i64, kept: Kept) -> Plan {
    let from = kept.finest_at(from_ms).start_of(from_ms);
    let to = ceil(kept.finest_at(to_ms), to_ms);
    cover(from, to, kept, Granularity::Day)
}

/// The plan of a trend by `g` over `[from_ms, to_ms)`, already aligned to `g`: no row
/// coarser than `g`, so every row falls in one period. The caller checked that rows of
/// `g` are kept from `from_ms` on.
pub(crate) fn trend(from_ms: i64, to_ms: i64, kept: Kept, g: Granularity) -> Plan {
    cover(from_ms, to_ms, kept, g)
}

fn cover(from: i64, to: i64, kept: Kept, coarsest: Granularity) -> Plan {
    let mut pieces = Vec::new();
    let rolled_to = to.min(kept.watermark_ms);
    if from < rolled_to {
        cover_rolled(from, rolled_to, coarsest, &mut pieces);
    }
    let fresh_from = from.max(kept.watermark_ms);
    if fresh_from < to {
        pieces.push(Piece {
            granularity: Granularity::Minute,
            from_ms: fresh_from,
            to_ms: to,
        });
    }
    pieces.retain(|p| p.from_ms < p.to_ms);
    Plan {
        pieces,
        from_ms: from,
        to_ms: to,
    }
}

/// Covers `[from, to)`, all before the watermark, with whole periods of `coarsest`, then
/// of each finer granularity at the edges.
fn cover_rolled(from: i64, to: i64, coarsest: Granularity, out: &mut Vec<Piece>) {
    let finer = match coarsest {
        Granularity::Minute => None,
        Granularity::Hour => Some(Granularity::Minute),
        Granularity::Day => Some(Granularity::Hour),
    };
    let Some(finer) = finer else {
        out.push(Piece {
            granularity: Granularity::Minute,
            from_ms: from,
            to_ms: to,
        });
        return;
    };
    let (inner_from, inner_to) = (ceil(coarsest, from), coarsest.start_of(to));
    if inner_from >= inner_to {
        cover_rolled(from, to, finer, out);
        return;
    }
    cover_rolled(from, inner_from, finer, out);
    out.push(Piece {
        granularity: coarsest,
        from_ms: inner_from,
        to_ms: inner_to,
    });
    cover_rolled(inner_to, to, finer, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 86_400_000;

    fn piece(granularity: Granularity, from_ms: i64, to_ms: i64) -> Piece {
        Piece {
            granularity,
            from_ms,
            to_ms,
        }
    }

    /// Every millisecond of the plan's window is covered by exactly one piece.
    fn covers_once(plan: &Plan) {
        let mut pieces = plan.pieces.clone();
        pieces.sort_by_key(|p| p.from_ms);
        let mut at = plan.from_ms;
        for p in &pieces {
            assert_eq!(p.from_ms, at, "{plan:?}");
            assert_eq!(p.granularity.start_of(p.from_ms), p.from_ms, "{plan:?}");
            assert_eq!(p.granularity.start_of(p.to_ms), p.to_ms, "{plan:?}");
            at = p.to_ms;
        }
        assert_eq!(at, plan.to_ms, "{plan:?}");
    }

    #[test]
    fn a_recent_window_is_exact_to_the_minute_with_days_and_hours_inside() {
        let now = 100 * DAY + 5 * HOUR + 7 * MIN;
        let kept = Kept::at(now, 100 * DAY + 5 * HOUR + 6 * MIN);
        let from = 98 * DAY + 22 * HOUR + 13 * MIN + 5;
        let plan = summary(from, now, kept);
        covers_once(&plan);
        assert_eq!(plan.from_ms, 98 * DAY + 22 * HOUR + 13 * MIN);
        assert_eq!(plan.to_ms, now);
        assert!(
            plan.pieces
                .contains(&piece(Granularity::Day, 99 * DAY, 100 * DAY))
        );
        assert!(
            plan.pieces
                .contains(&piece(Granularity::Minute, kept.watermark_ms, now))
        );
        assert!(plan.pieces.len() <= 6, "{plan:?}");
    }

    #[test]
    fn old_edges_round_out_to_what_is_kept() {
        let now = 400 * DAY + 12 * HOUR;
        let kept = Kept::at(now, now - MIN);
        // Older than 90 days: whole days.
        let plan = summary(200 * DAY + 3 * HOUR, 201 * DAY + 5 * HOUR, kept);
        covers_once(&plan);
        assert_eq!((plan.from_ms, plan.to_ms), (200 * DAY, 202 * DAY));
        // Between 48 hours and 90 days: whole hours.
        let plan = summary(390 * DAY + 3 * HOUR + 5 * MIN, 391 * DAY + 5 * MIN, kept);
        covers_once(&plan);
        assert_eq!(
            (plan.from_ms, plan.to_ms),
            (390 * DAY + 3 * HOUR, 391 * DAY + HOUR)
        );
        assert!(
            plan.pieces
                .iter()
                .all(|p| p.granularity != Granularity::Minute)
        );
    }

    #[test]
    fn nothing_after_the_watermark_comes_from_hours_or_days() {
        let now = 10 * DAY + 3 * HOUR;
        // The roller is an hour and a half behind.
        let kept = Kept::at(now, now - 90 * MIN);
        let plan = summary(8 * DAY, now, kept);
        covers_once(&plan);
        for p in &plan.pieces {
            if p.granularity != Granularity::Minute {
                assert!(p.to_ms <= kept.watermark_ms, "{p:?}");
            }
        }
    }

    #[test]
    fn a_trend_uses_no_row_coarser_than_its_periods() {
        let now = 10 * DAY + 3 * HOUR + 30 * MIN;
        let kept = Kept::at(now, now - 2 * MIN);
        let plan = trend(7 * DAY, 10 * DAY + 4 * HOUR, kept, Granularity::Hour);
        covers_once(&plan);
        assert!(
            plan.pieces
                .iter()
                .all(|p| p.granularity != Granularity::Day)
        );
        let plan = trend(10 * DAY, 10 * DAY + 4 * HOUR, kept, Granularity::Minute);
        assert!(
            plan.pieces
                .iter()
                .all(|p| p.granularity == Granularity::Minute)
        );
    }
}
