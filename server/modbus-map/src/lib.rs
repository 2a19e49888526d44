//! Modbus register maps as data (issue 7): one TOML file per device model names each quantity,
//! its register, function code, type, word order, scale and unit, and the Headend measurement
//! column or energy counter it feeds. This crate has no I/O besides reading map files:
//!
//! - [`RegisterMap::from_toml`] validates a map (errors name the model and the entry);
//! - [`RegisterMap::plan`] merges its registers into as few block reads as the device allows;
//! - [`RegisterMap::decode`] turns the words of those reads into SI measurements and exact
//!   counters (milli-units, integer arithmetic only), never panicking on hostile words;
//! - [`RegisterMap::relay_write`] / [`RegisterMap::counter_reset`] give the writes a poller sends;
//! - [`MapLibrary`] holds the shipped maps plus any dropped into a maps directory;
//! - [`bus`] computes RS485 RTU frame times, so a poll cycle has a known lower bound;
//! - [`iskra`] decodes Iskra's T5/T6/T7 words (for the maps, and for the gateway runner).
//!
//! The format is documented in `docs/modbus-maps.md`.
#![forbid(unsafe_code)]

pub mod bus;
mod decimal;
mod decode;
mod encode;
pub mod iskra;
mod map;
mod plan;

use std::collections::BTreeMap;
use std::path::Path;

pub use decimal::Decimal;
pub use encode::Registers;
pub use map::{Notation, ValueType, WordOrder, COLUMNS};

use map::{CounterDef, InfoDef, MeasurementDef, RelayDef, TariffDef};

/// Modbus read functions used by the maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    /// Function 3.
    ReadHolding,
    /// Function 4.
    ReadInput,
}

impl Function {
    /// The Modbus function code.
    pub fn code(self) -> u8 {
        match self {
            Function::ReadHolding => 3,
            Function::ReadInput => 4,
        }
    }
}

/// One read request of the plan: `count` registers from `start` (wire address, 0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRead {
    pub function: Function,
    pub start: u16,
    pub count: u16,
}

/// A write request (wire addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Function 6, write single register.
    Single { address: u16, value: u16 },
    /// Function 16, write multiple registers.
    Multiple { address: u16, values: Vec<u16> },
}

impl Write {
    /// The first register written.
    pub fn address(&self) -> u16 {
        match self {
            Write::Single { address, .. } | Write::Multiple { address, .. } => *address,
        }
    }

    /// The Modbus function code (6 or 16).
    pub fn function_code(&self) -> u8 {
        match self {
            Write::Single { .. } => 6,
            Write::Multiple { .. } => 16,
        }
    }
}

/// Largest number of registers one read may ask for (Modbus application protocol, 6.3/6.4).
pub const MAX_READ_WORDS: u16 = 125;

/// Everything decoded from one poll of a device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    /// Headend measurement columns ([`COLUMNS`], the wire contract's) in SI units:
    /// V, A, W, var, VA, Hz, degC, %, degrees for angles; power factors in -1..1, negative
    /// when capacitive (as the SG path's "Cap").
    pub measurements: Vec<(&'static str, f32)>,
    /// Energy counters, exact.
    pub counters: Vec<CounterValue>,
    pub relay_state: Option<bool>,
    pub tariff: Option<i16>,
    /// Text entries (model, serial number), trimmed of NULs and spaces.
    pub info: Vec<(String, String)>,
    /// Quantities that could not be decoded (not read, NaN, out of range...).
    pub issues: Vec<DecodeIssue>,
}

/// One counter reading in milli-units of its canonical unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterValue {
    pub name: String,
    /// "Wh", "varh" or "VAh".
    pub unit: &'static str,
    pub resettable: bool,
    pub value_milli: i64,
}

/// A counter a map declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSpec {
    pub name: String,
    /// "Wh", "varh" or "VAh".
    pub unit: &'static str,
    pub resettable: bool,
}

/// Why one quantity of a map could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeIssue {
    /// The measurement column, counter name, "relay", "tariff" or info name.
    pub quantity: String,
    /// Wire address of its first register.
    pub register: u16,
    pub message: String,
}

/// Invalid map file or directory.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("map {file}: not valid TOML for a register map: {message}")]
    Syntax { file: String, message: String },
    #[error("map {model:?}: {entry}: {message}")]
    Invalid {
        model: String,
        entry: String,
        message: String,
    },
    #[error("cannot read map {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("maps {first} and {second} both define model {model:?}")]
    Duplicate {
        model: String,
        first: String,
        second: String,
    },
}

/// A validated register map of one device model.
#[derive(Clone, Debug)]
pub struct RegisterMap {
    pub model: String,
    pub description: String,
    /// Address notation the file was written in (addresses stored here are wire addresses).
    pub notation: Notation,
    readable: Vec<(Function, u16, u16)>,
    measurements: Vec<MeasurementDef>,
    counters: Vec<CounterDef>,
    relay: Option<RelayDef>,
    tariff: Option<TariffDef>,
    info: Vec<InfoDef>,
}

impl RegisterMap {
    /// Parses and validates a map.
    ///
    /// # Errors
    /// [`MapError::Syntax`] or [`MapError::Invalid`] naming the model and the entry.
    pub fn from_toml(text: &str) -> Result<Self, MapError> {
        map::parse(text, "<text>")
    }

    fn from_toml_named(text: &str, file: &str) -> Result<Self, MapError> {
        map::parse(text, file)
    }

    /// Block reads covering every register of the map: as few as possible, each at most
    /// [`MAX_READ_WORDS`] words, never spanning a register the map does not declare readable.
    pub fn plan(&self) -> Vec<BlockRead> {
        plan::plan(self)
    }

    /// Decodes the words read for `blocks` (normally the blocks of [`Self::plan`], each
    /// with the registers it returned). Quantities whose registers are missing or
    /// undecodable are listed in [`Decoded::issues`].
    pub fn decode(&self, blocks: &[(BlockRead, Vec<u16>)]) -> Decoded {
        decode::decode(self, blocks)
    }

    /// The register words a device following this map holds for `values` (measurements,
    /// counters, relay state, tariff and info of a [`Decoded`]): the inverse of
    /// [`Self::decode`], for simulated devices. Counters are encoded exactly (choosing the
    /// exponent register's value when the map has one).
    ///
    /// # Errors
    /// A value the map does not read, or one its register type cannot hold.
    pub fn encode(&self, values: &Decoded) -> Result<Registers, String> {
        encode::encode(self, values)
    }

    /// The write that switches the relay, `None` when the model has none.
    pub fn relay_write(&self, on: bool) -> Option<Write> {
        self.relay.as_ref().map(|r| r.write(on))
    }

    /// The relay state register as a one-block read, to confirm a switch.
    pub fn relay_state_read(&self) -> Option<BlockRead> {
        self.relay.as_ref().map(|r| BlockRead {
            function: r.state.function,
            start: r.state.address,
            count: r.state.ty.words(),
        })
    }

    /// The registers holding `counter`'s value (not its exponent register).
    pub fn counter_registers(&self, counter: &str) -> Option<BlockRead> {
        self.counters
            .iter()
            .find(|c| c.spec.name == counter)
            .map(|c| BlockRead {
                function: c.field.function,
                start: c.field.address,
                count: c.field.ty.words(),
            })
    }

    /// The write that resets `counter`, `None` when it cannot be reset.
    pub fn counter_reset(&self, counter: &str) -> Option<Write> {
        self.counters
            .iter()
            .find(|c| c.spec.name == counter)
            .and_then(|c| c.reset.clone())
    }

    pub fn has_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// The counters the map reads.
    pub fn counters(&self) -> impl Iterator<Item = &CounterSpec> {
        self.counters.iter().map(|c| &c.spec)
    }

    /// The measurement columns the map feeds.
    pub fn measurement_columns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.measurements.iter().map(|m| m.column)
    }

    /// Whether the map reads a tariff register.
    pub fn has_tariff(&self) -> bool {
        self.tariff.is_some()
    }

    /// Declared readable ranges: (function, first, last) wire addresses, inclusive.
    pub fn readable(&self) -> &[(Function, u16, u16)] {
        &self.readable
    }
}

/// Shipped maps, embedded at build time.
const BUILTIN: [(&str, &str); 4] = [
    (
        "legrand-emdx3.toml",
        include_str!("../maps/legrand-emdx3.toml"),
    ),
    (
        "legrand-046-77.toml",
        include_str!("../maps/legrand-046-77.toml"),
    ),
    ("iskra-meter.toml", include_str!("../maps/iskra-meter.toml")),
    ("iskra-bicom.toml", include_str!("../maps/iskra-bicom.toml")),
];

/// Register maps by model name.
#[derive(Clone, Debug, Default)]
pub struct MapLibrary {
    maps: BTreeMap<String, RegisterMap>,
}

impl MapLibrary {
    /// An empty library.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shipped maps.
    ///
    /// # Panics
    /// Never in a released build: every shipped map is validated by the unit tests.
    pub fn builtin() -> Self {
        let mut library = Self::new();
        for (file, text) in BUILTIN {
            let map = RegisterMap::from_toml_named(text, file)
                .unwrap_or_else(|e| panic!("shipped map {file} is invalid: {e}"));
            library.maps.insert(map.model.clone(), map);
        }
        library
    }

    /// Adds every `*.toml` map of `dir`, replacing shipped models of the same name; returns
    /// how many maps were loaded. Nothing is added when any file is invalid.
    ///
    /// # Errors
    /// The first unreadable or invalid file, or two files defining the same model.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, MapError> {
        let io = |path: &Path, source| MapError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| io(dir, e))?;
        files.retain(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file());
        files.sort();
        let mut loaded: BTreeMap<String, (String, RegisterMap)> = BTreeMap::new();
        for path in files {
            let meta = std::fs::metadata(&path).map_err(|e| io(&path, e))?;
            // A register map is a few kilobytes; refuse to slurp anything unreasonable.
            if meta.len() > 1 << 20 {
                return Err(MapError::Syntax {
                    file: path.display().to_string(),
                    message: format!("file of {} bytes is larger than 1 MiB", meta.len()),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let name = path.display().to_string();
            let map = RegisterMap::from_toml_named(&text, &name)?;
            if let Some((first, _)) = loaded.get(&map.model) {
                return Err(MapError::Duplicate {
                    model: map.model.clone(),
                    first: first.clone(),
                    second: name,
                });
            }
            loaded.insert(map.model.clone(), (name, map));
        }
        let count = loaded.len();
        for (model, (_, map)) in loaded {
            self.maps.insert(model, map);
        }
        Ok(count)
    }

    /// Adds or replaces one map.
    pub fn insert(&mut self, map: RegisterMap) {
        self.maps.insert(map.model.clone(), map);
    }

    pub fn get(&self, model: &str) -> Option<&RegisterMap> {
        self.maps.get(model)
    }

    /// Model names, sorted.
    pub fn models(&self) -> Vec<&str> {
        self.maps.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests;
