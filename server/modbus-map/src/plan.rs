//! Merging a map's registers into block reads.
//!
//! Spans (one per value) are sorted per function and covered greedily from the lowest
//! address: a block grows to take the next span while it stays within [`MAX_READ_WORDS`] and
//! every register between them is readable (declared in a `readable` range, or itself part of
//! a value the map reads). For intervals on a line with a maximum length, starting each block
//! at the first uncovered span and extending it as far as allowed gives the fewest blocks.

use crate::{BlockRead, Function, RegisterMap, MAX_READ_WORDS};

/// Every value the map reads: (entry name, function, wire address, words).
pub fn spans_named(map: &RegisterMap) -> Vec<(String, Function, u16, u16)> {
    let mut spans = Vec::new();
    for m in &map.measurements {
        spans.push((
            format!("measurement {:?}", m.column),
            m.field.function,
            m.field.address,
            m.field.ty.words(),
        ));
    }
    for c in &map.counters {
        let entry = format!("counter {:?}", c.spec.name);
        spans.push((
            entry.clone(),
            c.field.function,
            c.field.address,
            c.field.ty.words(),
        ));
        if let Some((function, address)) = c.exponent {
            spans.push((format!("{entry} exponent_register"), function, address, 1));
        }
    }
    if let Some(r) = &map.relay {
        spans.push(("relay".into(), r.state.function, r.state.address, 1));
    }
    if let Some(t) = &map.tariff {
        spans.push(("tariff".into(), t.field.function, t.field.address, 1));
    }
    for i in &map.info {
        spans.push((
            format!("info {:?}", i.name),
            i.field.function,
            i.field.address,
            i.field.ty.words(),
        ));
    }
    spans
}

pub fn plan(map: &RegisterMap) -> Vec<BlockRead> {
    let mut spans: Vec<(Function, u32, u32)> = spans_named(map)
        .into_iter()
        .map(|(_, f, a, w)| (f, u32::from(a), u32::from(a) + u32::from(w)))
        .collect();
    spans.sort_unstable();
    spans.dedup();

    let readable = |function: Function, address: u32| {
        map.readable
            .iter()
            .any(|(f, a, b)| *f == function && u32::from(*a) <= address && address <= u32::from(*b))
            || spans
                .iter()
                .any(|(f, a, b)| *f == function && *a <= address && address < *b)
    };

    let mut blocks = Vec::new();
    let mut current: Option<(Function, u32, u32)> = None;
    for &(function, start, end) in &spans {
        if let Some((f, s, e)) = current {
            let merged_end = e.max(end);
            let fits = f == function
                && merged_end - s <= u32::from(MAX_READ_WORDS)
                && (e..start).all(|a| readable(function, a));
            if fits {
                current = Some((f, s, merged_end));
                continue;
            }
            blocks.push(block(f, s, e));
        }
        current = Some((function, start, end));
    }
    if let Some((f, s, e)) = current {
        blocks.push(block(f, s, e));
    }
    blocks
}

fn block(function: Function, start: u32, end: u32) -> BlockRead {
    // Validation keeps every value inside the 16-bit space and at most 64 words long.
    BlockRead {
        function,
        start: start as u16,
        count: (end - start) as u16,
    }
}
