//! The aligned push schedule: a device with interval `T` pushes when the gateway's wall
//! clock reaches a multiple of `T` (900 s → :00, :15, :30, :45), as the SG does, so that
//! readings of many gateways line up on the same instants.

/// One device's schedule, in the gateway's local wall-clock seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    interval_s: i64,
    next_due: Option<i64>,
}

impl Schedule {
    pub(crate) fn new(interval_s: u32) -> Self {
        Self {
            interval_s: i64::from(interval_s.max(1)),
            next_due: None,
        }
    }

    /// Whether a push is due at `now`. The first call aligns to the next multiple at or
    /// after `now`; a due push missed for a while (a stalled driver) is made once, not once
    /// per missed multiple; a clock set back by more than an interval realigns.
    pub(crate) fn poll(&mut self, now: i64) -> bool {
        let t = self.interval_s;
        let due = match self.next_due {
            Some(due) if now >= due - t => due,
            _ => ceil_multiple(now, t),
        };
        if now >= due {
            self.next_due = Some(now.div_euclid(t) * t + t);
            true
        } else {
            self.next_due = Some(due);
            false
        }
    }

    /// When the next push would be if `now` were the first poll.
    pub(crate) fn next_due_from(&self, now: i64) -> i64 {
        match self.next_due {
            Some(due) if now >= due - self.interval_s => due,
            _ => ceil_multiple(now, self.interval_s),
        }
    }
}

fn ceil_multiple(x: i64, t: i64) -> i64 {
    let floor = x.div_euclid(t) * t;
    if floor == x {
        x
    } else {
        floor + t
    }
}
