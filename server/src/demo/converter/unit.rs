//! One simulated RTU unit: its register images, what it lets be read and written, and how it
//! executes a request PDU (functions 3, 4, 6 and 16; exceptions 01, 02, 03 and configured
//! ones; write effects such as a relay state following its switch register).

use std::collections::BTreeMap;

use headend_modbus_map::{Decoded, Function, RegisterMap, Write};

use super::Fault;

/// What a write to a holding register does besides storing the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    /// The value written to `holding` appears in input register `input` (a Bicom relay's
    /// state following its switch register).
    Mirror { holding: u16, input: u16 },
    /// Writing a value with `bit` set to `holding` zeroes `count` holding registers from
    /// `start` (a bit-per-counter reset register); the reset register then reads 0.
    ResetBits {
        holding: u16,
        bit: u16,
        start: u16,
        count: u16,
    },
}

/// Register image and behaviour of one RTU unit.
#[derive(Clone, Debug, Default)]
pub struct SimUnit {
    pub(super) holding: BTreeMap<u16, u16>,
    pub(super) input: BTreeMap<u16, u16>,
    /// (function code 3/4, first, last) inclusive.
    readable: Vec<(u8, u16, u16)>,
    /// (first, last, allowed values: empty = any).
    writable: Vec<(u16, u16, Vec<u16>)>,
    /// (function code, first, last, exception code).
    exceptions: Vec<(u8, u16, u16, u8)>,
    effects: Vec<WriteEffect>,
    pub(super) fault: Fault,
    pub(super) requests: u64,
}

fn code(function: Function) -> u8 {
    function.code()
}

impl SimUnit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `first..=last` readable with `function`.
    pub fn readable(mut self, function: Function, first: u16, last: u16) -> Self {
        self.readable.push((code(function), first, last));
        self
    }

    pub fn holding(mut self, address: u16, words: &[u16]) -> Self {
        store(&mut self.holding, address, words);
        self
    }

    pub fn input(mut self, address: u16, words: &[u16]) -> Self {
        store(&mut self.input, address, words);
        self
    }

    /// Holding registers `first..=last` accept writes (functions 6 and 16) of `allowed`
    /// values (any when empty; others get exception 03).
    pub fn writable(mut self, first: u16, last: u16, allowed: &[u16]) -> Self {
        self.writable.push((first, last, allowed.to_vec()));
        self
    }

    /// Requests with `function_code` touching `first..=last` get exception `exception`.
    pub fn exception(mut self, function_code: u8, first: u16, last: u16, exception: u8) -> Self {
        self.exceptions
            .push((function_code, first, last, exception));
        self
    }

    pub fn effect(mut self, effect: WriteEffect) -> Self {
        self.effects.push(effect);
        self
    }

    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }
}

pub(super) fn store(image: &mut BTreeMap<u16, u16>, address: u16, words: &[u16]) {
    for (n, w) in words.iter().enumerate() {
        image.insert(address.wrapping_add(n as u16), *w);
    }
}

/// A unit following `map`, holding `values` (see [`RegisterMap::encode`]); readable ranges
/// are the map's (or its planned blocks where it declares none). Relay maps get a writable
/// switch register whose value the state register follows; resettable counters get a
/// working reset register.
///
/// # Panics
/// When `values` cannot be encoded with `map` (a test bug).
pub fn unit_from_map(map: &RegisterMap, values: &Decoded) -> SimUnit {
    let mut unit = SimUnit::new();
    for (function, first, last) in map.readable() {
        unit = unit.readable(*function, *first, *last);
    }
    for block in map.plan() {
        let declared = map.readable().iter().any(|(f, _, _)| *f == block.function);
        if !declared {
            unit = unit.readable(block.function, block.start, block.start + block.count - 1);
        }
        // Every planned register exists (zero unless a value says otherwise).
        let zeros = vec![0u16; usize::from(block.count)];
        unit = match block.function {
            Function::ReadHolding => unit.holding(block.start, &zeros),
            Function::ReadInput => unit.input(block.start, &zeros),
        };
    }
    let registers = map
        .encode(values)
        .unwrap_or_else(|e| panic!("unit_from_map({}): {e}", map.model));
    for (function, address, word) in registers {
        unit = match function {
            Function::ReadHolding => unit.holding(address, &[word]),
            Function::ReadInput => unit.input(address, &[word]),
        };
    }
    if let (Some(Write::Single { address, .. } | Write::Multiple { address, .. }), Some(state)) =
        (map.relay_write(true), map.relay_state_read())
    {
        let on = map.relay_write(true).map(|w| first_value(&w)).unwrap_or(1);
        let off = map.relay_write(false).map(|w| first_value(&w)).unwrap_or(0);
        unit = unit.writable(address, address, &[on, off]);
        if state.function == Function::ReadInput {
            unit = unit.effect(WriteEffect::Mirror {
                holding: address,
                input: state.start,
            });
        }
    }
    for counter in map.counters() {
        let Some(reset) = map.counter_reset(&counter.name) else {
            continue;
        };
        let Some(counter_block) = map.counter_registers(&counter.name) else {
            continue;
        };
        let address = reset.address();
        unit = unit
            .writable(address, address, &[])
            .effect(WriteEffect::ResetBits {
                holding: address,
                bit: first_value(&reset),
                start: counter_block.start,
                count: counter_block.count,
            });
    }
    unit
}

fn first_value(write: &Write) -> u16 {
    match write {
        Write::Single { value, .. } => *value,
        Write::Multiple { values, .. } => values.first().copied().unwrap_or(0),
    }
}

pub(super) fn write_registers(unit: &mut SimUnit, registers: &[(Function, u16, u16)]) {
    for (function, address, word) in registers {
        match function {
            Function::ReadHolding => unit.holding.insert(*address, *word),
            Function::ReadInput => unit.input.insert(*address, *word),
        };
    }
}

pub(super) fn read_image(image: &BTreeMap<u16, u16>, address: u16, count: u16) -> Vec<u16> {
    (0..count)
        .map(|n| image.get(&address.wrapping_add(n)).copied().unwrap_or(0))
        .collect()
}

fn be16(pdu: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*pdu.get(at)?, *pdu.get(at + 1)?]))
}

/// Executes one request PDU on a unit; returns the response PDU (possibly an exception).
pub(super) fn execute(unit: &mut SimUnit, pdu: &[u8]) -> Vec<u8> {
    let function = pdu.first().copied().unwrap_or(0);
    let exception = |code: u8| vec![function | 0x80, code];
    match function {
        3 | 4 => {
            let (Some(start), Some(count), 5) = (be16(pdu, 1), be16(pdu, 3), pdu.len()) else {
                return exception(0x03);
            };
            if !(1..=125).contains(&count) {
                return exception(0x03);
            }
            let last = u32::from(start) + u32::from(count) - 1;
            if let Some(code) = configured_exception(unit, function, start, last) {
                return exception(code);
            }
            let readable = unit.readable.iter().any(|(f, a, b)| {
                *f == function && u32::from(*a) <= u32::from(start) && last <= u32::from(*b)
            });
            if !readable {
                return exception(0x02);
            }
            let image = if function == 3 {
                &unit.holding
            } else {
                &unit.input
            };
            let words = read_image(image, start, count);
            let mut out = vec![function, (2 * count) as u8];
            for w in words {
                out.extend_from_slice(&w.to_be_bytes());
            }
            out
        }
        6 => {
            let (Some(address), Some(value), 5) = (be16(pdu, 1), be16(pdu, 3), pdu.len()) else {
                return exception(0x03);
            };
            if let Some(code) = configured_exception(unit, 6, address, u32::from(address)) {
                return exception(code);
            }
            match write(unit, address, &[value]) {
                Ok(()) => pdu.to_vec(),
                Err(code) => exception(code),
            }
        }
        16 => {
            let (Some(address), Some(count), Some(&bytes)) =
                (be16(pdu, 1), be16(pdu, 3), pdu.get(5))
            else {
                return exception(0x03);
            };
            if !(1..=123).contains(&count)
                || usize::from(bytes) != 2 * usize::from(count)
                || pdu.len() != 6 + usize::from(bytes)
            {
                return exception(0x03);
            }
            let last = u32::from(address) + u32::from(count) - 1;
            if let Some(code) = configured_exception(unit, 16, address, last) {
                return exception(code);
            }
            let values: Vec<u16> = (0..usize::from(count))
                .filter_map(|n| be16(pdu, 6 + 2 * n))
                .collect();
            match write(unit, address, &values) {
                Ok(()) => pdu[..5].to_vec(),
                Err(code) => exception(code),
            }
        }
        _ => exception(0x01),
    }
}

fn configured_exception(unit: &SimUnit, function: u8, first: u16, last: u32) -> Option<u8> {
    unit.exceptions
        .iter()
        .find(|(f, a, b, _)| *f == function && u32::from(*a) <= last && first <= *b)
        .map(|(_, _, _, code)| *code)
}

/// Stores a write after checking every register is writable with that value.
fn write(unit: &mut SimUnit, address: u16, values: &[u16]) -> Result<(), u8> {
    for (n, value) in values.iter().enumerate() {
        let a = address.checked_add(n as u16).ok_or(0x02)?;
        let range = unit
            .writable
            .iter()
            .find(|(first, last, _)| *first <= a && a <= *last)
            .ok_or(0x02u8)?;
        if !range.2.is_empty() && !range.2.contains(value) {
            return Err(0x03);
        }
    }
    store(&mut unit.holding, address, values);
    for effect in unit.effects.clone() {
        match effect {
            WriteEffect::Mirror { holding, input } => {
                if let Some(v) = unit.holding.get(&holding).copied() {
                    if written(address, values.len(), holding) {
                        unit.input.insert(input, v);
                    }
                }
            }
            WriteEffect::ResetBits {
                holding,
                bit,
                start,
                count,
            } => {
                if written(address, values.len(), holding) {
                    let v = unit.holding.get(&holding).copied().unwrap_or(0);
                    if v & bit != 0 {
                        store(&mut unit.holding, start, &vec![0; usize::from(count)]);
                    }
                    unit.holding.insert(holding, 0);
                }
            }
        }
    }
    Ok(())
}

fn written(address: u16, len: usize, register: u16) -> bool {
    register >= address && usize::from(register - address) < len
}
