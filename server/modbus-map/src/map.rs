//! The map file format (TOML) and its validation. See `docs/modbus-maps.md`.

use serde::Deserialize;
use sg_wire::message::MEASUREMENT_COLUMNS;

use crate::decimal::Decimal;
use crate::{CounterSpec, Function, MapError, RegisterMap, Write};

/// Headend measurement columns a map may feed: the wire contract's
/// [`MEASUREMENT_COLUMNS`] without its reserved last slot.
pub const COLUMNS: &[&str] = match MEASUREMENT_COLUMNS.split_last() {
    Some((_reserved, columns)) => columns,
    None => &[],
};

/// How addresses are written in a map file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Notation {
    /// Wire addresses (0-based, as in the request frame), e.g. `0xC850`.
    #[default]
    Wire,
    /// The SG/Iskra notation: 30000 + wire address for input registers, 40000 + wire
    /// address for holding registers (`30105` is input register 105 on the wire).
    Sg,
}

/// Order of the 16-bit words of a multi-word value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    #[default]
    HighFirst,
    LowFirst,
}

/// Register value types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    U64,
    F32,
    /// Iskra T5: signed exponent byte, unsigned 24-bit mantissa.
    T5,
    /// Iskra T6: signed exponent byte, two's complement 24-bit mantissa.
    T6,
    /// Iskra T7: direction byte, inductive/capacitive byte, PF × 10000.
    T7,
    /// Text, two characters per word (high byte first), `n` words.
    Ascii(u16),
}

impl ValueType {
    pub fn words(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32
            | ValueType::I32
            | ValueType::F32
            | ValueType::T5
            | ValueType::T6
            | ValueType::T7 => 2,
            ValueType::U64 => 4,
            ValueType::Ascii(n) => n,
        }
    }
}

/// Where a value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub function: Function,
    pub address: u16,
    pub ty: ValueType,
    pub order: WordOrder,
}

#[derive(Clone, Debug)]
pub struct MeasurementDef {
    pub column: &'static str,
    pub field: Field,
    pub scale: Decimal,
    /// Unit prefix factor to the SI unit (e.g. 1000 for kW).
    pub factor: f64,
    pub power_factor: bool,
}

#[derive(Clone, Debug)]
pub struct CounterDef {
    pub spec: CounterSpec,
    pub field: Field,
    pub scale: Decimal,
    /// Power of ten from the file's unit to the canonical unit (3 for kWh).
    pub unit_pow10: i32,
    /// An i16 register holding a decimal exponent applied to the value.
    pub exponent: Option<(Function, u16)>,
    pub reset: Option<Write>,
}

#[derive(Clone, Debug)]
pub struct RelayDef {
    pub state: Field,
    pub on_value: u16,
    pub off_value: u16,
    pub switch_address: u16,
    pub switch_on: u16,
    pub switch_off: u16,
    pub multiple: bool,
}

impl RelayDef {
    pub fn write(&self, on: bool) -> Write {
        let value = if on { self.switch_on } else { self.switch_off };
        if self.multiple {
            Write::Multiple {
                address: self.switch_address,
                values: vec![value],
            }
        } else {
            Write::Single {
                address: self.switch_address,
                value,
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct TariffDef {
    pub field: Field,
}

#[derive(Clone, Debug)]
pub struct InfoDef {
    pub name: String,
    pub field: Field,
}

// ---- raw file structure ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    model: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    notation: Notation,
    #[serde(default)]
    word_order: WordOrder,
    /// Default function for entries that name none.
    function: Option<String>,
    #[serde(default)]
    readable: Vec<RawRange>,
    #[serde(default)]
    measurement: Vec<RawMeasurement>,
    #[serde(default)]
    counter: Vec<RawCounter>,
    relay: Option<RawRelay>,
    tariff: Option<RawTariff>,
    #[serde(default)]
    info: Vec<RawInfo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    function: Option<String>,
    first: u32,
    last: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeasurement {
    column: String,
    register: u32,
    function: Option<String>,
    #[serde(rename = "type")]
    ty: String,
    scale: Option<String>,
    unit: String,
    word_order: Option<WordOrder>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCounter {
    name: String,
    register: u32,
    function: Option<String>,
    #[serde(rename = "type")]
    ty: String,
    scale: Option<String>,
    unit: String,
    word_order: Option<WordOrder>,
    exponent_register: Option<u32>,
    resettable: Option<bool>,
    reset: Option<RawWrite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWrite {
    register: u32,
    value: u16,
    write: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    state_register: u32,
    state_function: Option<String>,
    on_value: Option<u16>,
    off_value: Option<u16>,
    switch_register: u32,
    switch_on: Option<u16>,
    switch_off: Option<u16>,
    write: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTariff {
    register: u32,
    function: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfo {
    name: String,
    register: u32,
    function: Option<String>,
    words: u16,
}

struct Ctx<'a> {
    model: &'a str,
    notation: Notation,
    default_function: Option<Function>,
}

impl Ctx<'_> {
    fn err(&self, entry: impl Into<String>, message: impl Into<String>) -> MapError {
        MapError::Invalid {
            model: self.model.to_string(),
            entry: entry.into(),
            message: message.into(),
        }
    }

    fn function(&self, entry: &str, name: Option<&str>) -> Result<Option<Function>, MapError> {
        match name {
            None => Ok(None),
            Some(name) => parse_function(name)
                .map(Some)
                .map_err(|m| self.err(entry, m)),
        }
    }

    /// Resolves a register number in the map's notation into (function, wire address).
    fn address(
        &self,
        entry: &str,
        register: u32,
        function: Option<&str>,
    ) -> Result<(Function, u16), MapError> {
        let explicit = self.function(entry, function)?;
        match self.notation {
            Notation::Wire => {
                let function = explicit.or(self.default_function).ok_or_else(|| {
                    self.err(
                        entry,
                        "no function: set function = \"holding\" or \"input\" here or at the top",
                    )
                })?;
                let address = u16::try_from(register).map_err(|_| {
                    self.err(
                        entry,
                        format!("register {register} is beyond the 16-bit wire address space"),
                    )
                })?;
                Ok((function, address))
            }
            Notation::Sg => {
                let (implied, base) = match register {
                    30_000..=39_999 => (Function::ReadInput, 30_000),
                    40_000..=49_999 => (Function::ReadHolding, 40_000),
                    _ => {
                        return Err(self.err(
                            entry,
                            format!(
                                "register {register} is not in SG notation (30000 + wire address \
                                 for input registers, 40000 + wire address for holding registers)"
                            ),
                        ))
                    }
                };
                if let Some(f) = explicit {
                    if f != implied {
                        return Err(self.err(
                            entry,
                            format!(
                                "register {register} is a {} register in SG notation but the entry says {}",
                                function_name(implied),
                                function_name(f)
                            ),
                        ));
                    }
                }
                Ok((implied, (register - base) as u16))
            }
        }
    }

    fn field(
        &self,
        entry: &str,
        register: u32,
        function: Option<&str>,
        ty: ValueType,
        order: WordOrder,
    ) -> Result<Field, MapError> {
        let (function, address) = self.address(entry, register, function)?;
        if u32::from(address) + u32::from(ty.words()) > 0x1_0000 {
            return Err(self.err(entry, "value runs past wire address 65535"));
        }
        Ok(Field {
            function,
            address,
            ty,
            order,
        })
    }
}

fn parse_function(name: &str) -> Result<Function, String> {
    match name {
        "holding" | "3" => Ok(Function::ReadHolding),
        "input" | "4" => Ok(Function::ReadInput),
        other => Err(format!(
            "function {other:?} is neither \"holding\" (3) nor \"input\" (4)"
        )),
    }
}

fn function_name(f: Function) -> &'static str {
    match f {
        Function::ReadHolding => "holding",
        Function::ReadInput => "input",
    }
}

fn parse_type(name: &str) -> Result<ValueType, String> {
    Ok(match name {
        "u16" => ValueType::U16,
        "i16" => ValueType::I16,
        "u32" => ValueType::U32,
        "i32" => ValueType::I32,
        "u64" => ValueType::U64,
        "f32" => ValueType::F32,
        "t5" => ValueType::T5,
        "t6" => ValueType::T6,
        "t7" => ValueType::T7,
        other => {
            return Err(format!(
                "type {other:?} is not one of u16, i16, u32, i32, u64, f32, t5, t6, t7"
            ))
        }
    })
}

/// The SI unit family of a column and the unit prefixes accepted for it.
fn measurement_unit(column: &str, unit: &str) -> Result<f64, String> {
    let family: &[(&str, f64)] = match column {
        "frequency" => &[("Hz", 1.0), ("mHz", 1e-3)],
        c if c.starts_with("thd_") => &[("%", 1.0)],
        c if c.starts_with('u') => &[("V", 1.0), ("mV", 1e-3), ("kV", 1e3)],
        c if c.starts_with('i') => &[("A", 1.0), ("mA", 1e-3), ("kA", 1e3)],
        c if c.starts_with("pf") => &[("pf", 1.0), ("", 1.0)],
        c if c.starts_with("pa") => &[("deg", 1.0)],
        c if c.starts_with('p') => &[("W", 1.0), ("kW", 1e3), ("MW", 1e6)],
        c if c.starts_with('q') => &[("var", 1.0), ("kvar", 1e3), ("Mvar", 1e6)],
        c if c.starts_with('s') => &[("VA", 1.0), ("kVA", 1e3), ("MVA", 1e6)],
        "temperature" => &[("degC", 1.0)],
        _ => &[],
    };
    family
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            let names: Vec<_> = family.iter().map(|(u, _)| format!("{u:?}")).collect();
            format!(
                "unit {unit:?} does not fit column {column}; use one of {}",
                names.join(", ")
            )
        })
}

fn counter_unit(unit: &str) -> Result<(&'static str, i32), String> {
    Ok(match unit {
        "Wh" => ("Wh", 0),
        "kWh" => ("Wh", 3),
        "MWh" => ("Wh", 6),
        "varh" => ("varh", 0),
        "kvarh" => ("varh", 3),
        "Mvarh" => ("varh", 6),
        "VAh" => ("VAh", 0),
        "kVAh" => ("VAh", 3),
        "MVAh" => ("VAh", 6),
        other => {
            return Err(format!(
                "counter unit {other:?} is not one of Wh, kWh, MWh, varh, kvarh, Mvarh, VAh, kVAh, MVAh"
            ))
        }
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn write_kind(ctx: &Ctx<'_>, entry: &str, kind: Option<&str>) -> Result<bool, MapError> {
    match kind {
        None | Some("single") | Some("6") => Ok(false),
        Some("multiple") | Some("16") => Ok(true),
        Some(other) => Err(ctx.err(
            entry,
            format!(
                "write {other:?} is neither \"single\" (function 6) nor \"multiple\" (function 16)"
            ),
        )),
    }
}

/// Parses and validates one map file.
pub fn parse(text: &str, file: &str) -> Result<RegisterMap, MapError> {
    let raw: RawMap = toml::from_str(text).map_err(|e| MapError::Syntax {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let model = raw.model.trim().to_string();
    if !valid_name(&model) {
        return Err(MapError::Invalid {
            model: model.clone(),
            entry: "model".into(),
            message: "a model name is 1..64 letters, digits, '-' or '_'".into(),
        });
    }
    let mut ctx = Ctx {
        model: &model,
        notation: raw.notation,
        default_function: None,
    };
    ctx.default_function = ctx.function("function", raw.function.as_deref())?;

    let mut readable = Vec::new();
    for (n, r) in raw.readable.iter().enumerate() {
        let entry = format!("readable[{n}] ({}..{})", r.first, r.last);
        let (f1, first) = ctx.address(&entry, r.first, r.function.as_deref())?;
        let (f2, last) = ctx.address(&entry, r.last, r.function.as_deref())?;
        if f1 != f2 || last < first {
            return Err(ctx.err(entry, "first must not be after last, in one register space"));
        }
        readable.push((f1, first, last));
    }
    readable.sort();

    let mut measurements = Vec::new();
    for m in &raw.measurement {
        let entry = format!("measurement {:?}", m.column);
        let column = COLUMNS
            .iter()
            .copied()
            .find(|c| *c == m.column)
            .ok_or_else(|| {
                ctx.err(
                    &entry,
                    format!(
                        "not a Headend measurement column; use one of {}",
                        COLUMNS.join(", ")
                    ),
                )
            })?;
        if measurements
            .iter()
            .any(|d: &MeasurementDef| d.column == column)
        {
            return Err(ctx.err(&entry, "column fed twice"));
        }
        let ty = parse_type(&m.ty).map_err(|e| ctx.err(&entry, e))?;
        let power_factor = column.starts_with("pf");
        if ty == ValueType::T7 && !power_factor {
            return Err(ctx.err(&entry, "type t7 is a power factor; only pf columns take it"));
        }
        let factor = measurement_unit(column, &m.unit).map_err(|e| ctx.err(&entry, e))?;
        let scale = match &m.scale {
            Some(s) => Decimal::parse(s).map_err(|e| ctx.err(&entry, e))?,
            None => Decimal::ONE,
        };
        let field = ctx.field(
            &entry,
            m.register,
            m.function.as_deref(),
            ty,
            m.word_order.unwrap_or(raw.word_order),
        )?;
        measurements.push(MeasurementDef {
            column,
            field,
            scale,
            factor,
            power_factor,
        });
    }

    let mut counters: Vec<CounterDef> = Vec::new();
    for c in &raw.counter {
        let entry = format!("counter {:?}", c.name);
        if !valid_name(&c.name) {
            return Err(ctx.err(
                &entry,
                "a counter name is 1..64 letters, digits, '-' or '_'",
            ));
        }
        if counters.iter().any(|d| d.spec.name == c.name) {
            return Err(ctx.err(&entry, "counter defined twice"));
        }
        let ty = parse_type(&c.ty).map_err(|e| ctx.err(&entry, e))?;
        if matches!(ty, ValueType::F32 | ValueType::T7) {
            return Err(ctx.err(
                &entry,
                "counters are exact: use an integer type (u16, i16, u32, i32, u64) or t5/t6",
            ));
        }
        let (unit, unit_pow10) = counter_unit(&c.unit).map_err(|e| ctx.err(&entry, e))?;
        let scale = match &c.scale {
            Some(s) => Decimal::parse(s).map_err(|e| ctx.err(&entry, e))?,
            None => Decimal::ONE,
        };
        let field = ctx.field(
            &entry,
            c.register,
            c.function.as_deref(),
            ty,
            c.word_order.unwrap_or(raw.word_order),
        )?;
        let exponent = match c.exponent_register {
            None => None,
            Some(r) => {
                let (function, address) = ctx.address(&entry, r, c.function.as_deref())?;
                if function != field.function {
                    return Err(ctx.err(
                        &entry,
                        "exponent_register must be in the same register space as register",
                    ));
                }
                Some((function, address))
            }
        };
        let reset = match &c.reset {
            None => None,
            Some(w) => {
                let went = format!("{entry} reset");
                let multiple = write_kind(&ctx, &went, w.write.as_deref())?;
                let address = match ctx.notation {
                    Notation::Wire => u16::try_from(w.register).map_err(|_| {
                        ctx.err(&went, "register is beyond the 16-bit wire address space")
                    })?,
                    Notation::Sg => match w.register {
                        40_000..=49_999 => (w.register - 40_000) as u16,
                        _ => return Err(ctx.err(
                            &went,
                            "writes go to holding registers: 40000 + wire address in SG notation",
                        )),
                    },
                };
                Some(if multiple {
                    Write::Multiple {
                        address,
                        values: vec![w.value],
                    }
                } else {
                    Write::Single {
                        address,
                        value: w.value,
                    }
                })
            }
        };
        let resettable = c.resettable.unwrap_or(reset.is_some());
        if reset.is_some() && !resettable {
            return Err(ctx.err(&entry, "a counter with a reset write must be resettable"));
        }
        counters.push(CounterDef {
            spec: CounterSpec {
                name: c.name.clone(),
                unit,
                resettable,
            },
            field,
            scale,
            unit_pow10,
            exponent,
            reset,
        });
    }

    let relay = match &raw.relay {
        None => None,
        Some(r) => {
            let entry = "relay";
            let state = ctx.field(
                entry,
                r.state_register,
                r.state_function.as_deref(),
                ValueType::U16,
                WordOrder::HighFirst,
            )?;
            let switch_address = match ctx.notation {
                Notation::Wire => u16::try_from(r.switch_register).map_err(|_| {
                    ctx.err(
                        entry,
                        "switch_register is beyond the 16-bit wire address space",
                    )
                })?,
                Notation::Sg => match r.switch_register {
                    40_000..=49_999 => (r.switch_register - 40_000) as u16,
                    _ => {
                        return Err(ctx.err(
                            entry,
                            "switch_register must be a holding register: 40000 + wire address in SG notation",
                        ))
                    }
                },
            };
            let on_value = r.on_value.unwrap_or(1);
            let off_value = r.off_value.unwrap_or(0);
            if on_value == off_value {
                return Err(ctx.err(entry, "on_value and off_value must differ"));
            }
            let switch_on = r.switch_on.unwrap_or(on_value);
            let switch_off = r.switch_off.unwrap_or(off_value);
            if switch_on == switch_off {
                return Err(ctx.err(entry, "switch_on and switch_off must differ"));
            }
            Some(RelayDef {
                state,
                on_value,
                off_value,
                switch_address,
                switch_on,
                switch_off,
                multiple: write_kind(&ctx, entry, r.write.as_deref())?,
            })
        }
    };

    let tariff = match &raw.tariff {
        None => None,
        Some(t) => {
            let ty = match t.ty.as_deref() {
                None | Some("u16") => ValueType::U16,
                Some("i16") => ValueType::I16,
                Some(other) => {
                    return Err(ctx.err("tariff", format!("type {other:?}: a tariff is u16 or i16")))
                }
            };
            Some(TariffDef {
                field: ctx.field(
                    "tariff",
                    t.register,
                    t.function.as_deref(),
                    ty,
                    WordOrder::HighFirst,
                )?,
            })
        }
    };

    let mut info: Vec<InfoDef> = Vec::new();
    for i in &raw.info {
        let entry = format!("info {:?}", i.name);
        if !valid_name(&i.name) || info.iter().any(|d| d.name == i.name) {
            return Err(ctx.err(
                &entry,
                "an info name is 1..64 letters, digits, '-' or '_', used once",
            ));
        }
        if !(1..=64).contains(&i.words) {
            return Err(ctx.err(&entry, "words must be 1..64"));
        }
        info.push(InfoDef {
            name: i.name.clone(),
            field: ctx.field(
                &entry,
                i.register,
                i.function.as_deref(),
                ValueType::Ascii(i.words),
                WordOrder::HighFirst,
            )?,
        });
    }

    let map = RegisterMap {
        model: model.clone(),
        description: raw.description.trim().to_string(),
        notation: raw.notation,
        readable,
        measurements,
        counters,
        relay,
        tariff,
        info,
    };

    // Every register must be inside a declared readable range when its space declares any,
    // otherwise the planner could not read it without risking an exception 02.
    for (entry, function, address, words) in crate::plan::spans_named(&map) {
        let declared: Vec<_> = map
            .readable
            .iter()
            .filter(|(f, _, _)| *f == function)
            .collect();
        if declared.is_empty() {
            continue;
        }
        let last = u32::from(address) + u32::from(words) - 1;
        let inside = declared
            .iter()
            .any(|(_, a, b)| u32::from(*a) <= u32::from(address) && last <= u32::from(*b));
        if !inside {
            return Err(ctx.err(
                entry,
                format!(
                    "wire registers {address}..{last} ({}) are outside every declared readable range",
                    function_name(function)
                ),
            ));
        }
    }
    if map.measurements.is_empty()
        && map.counters.is_empty()
        && map.relay.is_none()
        && map.tariff.is_none()
        && map.info.is_empty()
    {
        return Err(ctx.err("model", "the map reads nothing"));
    }
    Ok(map)
}
