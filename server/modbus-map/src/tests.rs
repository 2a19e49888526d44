use proptest::prelude::*;

use super::*;

fn lib() -> MapLibrary {
    MapLibrary::builtin()
}

/// Fills every planned block with words from `f(function, address)`.
fn read(map: &RegisterMap, f: impl Fn(Function, u16) -> u16) -> Vec<(BlockRead, Vec<u16>)> {
    map.plan()
        .into_iter()
        .map(|b| {
            (
                b,
                (0..b.count).map(|n| f(b.function, b.start + n)).collect(),
            )
        })
        .collect()
}

fn measurement(d: &Decoded, column: &str) -> f32 {
    d.measurements
        .iter()
        .find(|(c, _)| *c == column)
        .unwrap_or_else(|| panic!("{column} missing: {d:?}"))
        .1
}

fn counter(d: &Decoded, name: &str) -> i64 {
    d.counters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} missing: {d:?}"))
        .value_milli
}

#[test]
fn every_shipped_map_loads_and_plans_within_limits() {
    let lib = lib();
    assert_eq!(
        lib.models(),
        [
            "iskra-bicom",
            "iskra-meter",
            "legrand-046-77",
            "legrand-emdx3"
        ]
    );
    for model in lib.models() {
        let map = lib.get(model).unwrap();
        assert!(!map.description.is_empty());
        let plan = map.plan();
        assert!(!plan.is_empty());
        for b in &plan {
            assert!(b.count >= 1 && b.count <= MAX_READ_WORDS, "{model}: {b:?}");
            // Inside a declared readable range.
            assert!(
                map.readable().iter().any(|(f, a, z)| *f == b.function
                    && *a <= b.start
                    && u32::from(b.start) + u32::from(b.count) - 1 <= u32::from(*z)),
                "{model}: {b:?} outside readable ranges"
            );
        }
        // With every register present, everything decodes (values of zero are valid).
        let d = map.decode(&read(map, |_, _| 0));
        assert!(d.issues.is_empty(), "{model}: {:?}", d.issues);
    }
}

#[test]
fn plans_use_the_fewest_blocks() {
    let lib = lib();
    let block = |function, start, count| BlockRead {
        function,
        start,
        count,
    };
    use Function::{ReadHolding as H, ReadInput as I};
    assert_eq!(
        lib.get("legrand-emdx3").unwrap().plan(),
        [block(H, 0xC786, 10), block(H, 0xC851, 10)]
    );
    assert_eq!(
        lib.get("legrand-046-77").unwrap().plan(),
        [block(H, 0x2000, 14)]
    );
    assert_eq!(
        lib.get("iskra-meter").unwrap().plan(),
        [block(I, 1, 12), block(I, 105, 77), block(I, 401, 13)]
    );
    assert_eq!(lib.get("iskra-bicom").unwrap().plan(), [block(I, 101, 1)]);
}

#[test]
fn planner_splits_at_125_words_and_at_undeclared_gaps() {
    let map = RegisterMap::from_toml(
        r#"
model = "t"
function = "holding"
[[readable]]
first = 0
last = 199
[[measurement]]
column = "u1"
register = 0
type = "u16"
unit = "V"
[[measurement]]
column = "u2"
register = 124
type = "u32"
unit = "V"
[[measurement]]
column = "u3"
register = 150
type = "u16"
unit = "V"
[[measurement]]
column = "i1"
register = 300
type = "u16"
unit = "A"
[[measurement]]
column = "i2"
register = 302
type = "u16"
unit = "A"
"#,
    )
    .unwrap_err();
    // 300 is outside the declared ranges: refused with the entry named.
    assert!(map.to_string().contains("measurement \"i1\""), "{map}");

    let map = RegisterMap::from_toml(
        r#"
model = "t"
function = "holding"
[[readable]]
first = 0
last = 199
[[measurement]]
column = "u1"
register = 0
type = "u16"
unit = "V"
[[measurement]]
column = "u2"
register = 124
type = "u32"
unit = "V"
[[measurement]]
column = "u3"
register = 150
type = "u16"
unit = "V"
[[measurement]]
column = "i1"
register = 300
function = "input"
type = "u16"
unit = "A"
[[measurement]]
column = "i2"
register = 302
function = "input"
type = "u16"
unit = "A"
[[measurement]]
column = "i3"
register = 303
function = "input"
type = "u16"
unit = "A"
"#,
    )
    .unwrap();
    let plan = map.plan();
    assert_eq!(
        plan,
        [
            // 0..125 would cut the u32 at 124: it starts a new block instead.
            BlockRead {
                function: Function::ReadHolding,
                start: 0,
                count: 1
            },
            BlockRead {
                function: Function::ReadHolding,
                start: 124,
                count: 27
            },
            // No readable declared for input registers: 301 is never read.
            BlockRead {
                function: Function::ReadInput,
                start: 300,
                count: 1
            },
            BlockRead {
                function: Function::ReadInput,
                start: 302,
                count: 2
            },
        ]
    );
}

#[test]
fn emdx3_signed_power_and_block() {
    let map = lib().get("legrand-emdx3").cloned().unwrap();
    let d = map.decode(&read(&map, |_, a| match a {
        0xC786 => 0xFFFF,
        0xC787 => 0xFFED,
        0xC851 => 40_012,
        0xC854 => 23_080,
        0xC857 => 4_998,
        0xC858 => 12_345,
        0xC78E => 0,
        0xC78F => 250,
        _ => 0,
    }));
    assert!(d.issues.is_empty(), "{:?}", d.issues);
    assert_eq!(measurement(&d, "p"), -190.0);
    assert_eq!(measurement(&d, "u12"), 400.12);
    assert_eq!(measurement(&d, "u1"), 230.8);
    assert_eq!(measurement(&d, "frequency"), 49.98);
    assert_eq!(measurement(&d, "i1"), 12.345);
    assert_eq!(measurement(&d, "s"), 2500.0);
    assert!(!map.has_relay());
    assert_eq!(map.relay_write(true), None);
}

#[test]
fn meter_046_77_spec_examples_and_reset() {
    let map = lib().get("legrand-046-77").cloned().unwrap();
    let d = map.decode(&read(&map, |_, a| match a {
        0x2000 => 0x0003,
        0x2001 => 0x9918,
        0x2007 => 0x0052,
        0x2009 => 123_456u32 as u16,
        0x2008 => (123_456u32 >> 16) as u16,
        0x200D => 2,
        _ => 0,
    }));
    assert!(d.issues.is_empty(), "{:?}", d.issues);
    assert_eq!(measurement(&d, "u1"), 235.8);
    assert_eq!(measurement(&d, "pf"), 0.82);
    // 123456 × 0.01 kWh = 1234.56 kWh = 1 234 560 Wh = 1 234 560 000 mWh.
    assert_eq!(counter(&d, "counter1nr"), 1_234_560_000);
    assert_eq!(counter(&d, "counter1"), 20_000);
    let specs: Vec<_> = map.counters().collect();
    assert_eq!(specs.len(), 2);
    assert!(specs
        .iter()
        .any(|c| c.name == "counter1" && c.resettable && c.unit == "Wh"));
    assert_eq!(
        map.counter_reset("counter1"),
        Some(Write::Multiple {
            address: 0x00C8,
            values: vec![1]
        })
    );
    assert_eq!(map.counter_reset("counter1nr"), None);
    assert_eq!(map.counter_reset("nope"), None);
}

fn t(hi: u16, lo: u16) -> [u16; 2] {
    [hi, lo]
}

#[test]
fn iskra_t5_t6_t7_and_exact_counters() {
    let map = lib().get("iskra-meter").cloned().unwrap();
    let mut regs = std::collections::HashMap::new();
    let mut put = |a: u16, w: [u16; 2]| {
        regs.insert(a, w[0]);
        regs.insert(a + 1, w[1]);
    };
    put(105, t(0xFE00, 5000)); // 5000e-2 = 50 Hz
    put(107, t(0xFD03, 0x80C4)); // 229572e-3 V
    put(126, t(0x0200, 0x0007)); // 7e2 = 700 A
    put(140, t(0xFFFF, 0xFFED)); // T6: -19e-1 = -1.9 W
    put(142, t(0x00FF, 0xFFFF)); // T6 mantissa -1, exponent 0
    put(144, t(0x0080, 0x0000)); // T6 most negative mantissa: -8388608
    put(156, t(0xFFFF, 0xFFED)); // T5 unsigned: 16777197e-1
    put(164, t(0x0000, 9000)); // import inductive 0.9
    put(166, t(0x00FF, 8984)); // capacitive: -0.8984
    put(168, t(0xFF00, 10_000)); // export inductive 1.0
    put(170, t(0xFFFF, 0)); // export capacitive 0
                            // Counters: exponent registers and i32 values.
    let mut words: Vec<(u16, u16)> = vec![
        (401, 0),
        (402, (-2i16) as u16),
        (403, 3),
        (404, 0),
        (405, 2),
    ];
    words.extend([(406, 0x0012), (407, 0xD687)]); // 1234567 Wh
    words.extend([(408, 0x0000), (409, 0x3039)]); // 12345 × 10⁻² Wh = 123.45 Wh
    words.extend([(410, 0x0000), (411, 0x0007)]); // 7 × 10³ varh
    words.extend([(412, 0xFFFF), (413, 0xFFFF)]); // -1 varh (hostile but exact)
    for (a, w) in words {
        regs.insert(a, w);
    }
    let text = b"WM3M4C          18230001";
    for (n, pair) in text.chunks(2).enumerate() {
        regs.insert(1 + n as u16, u16::from_be_bytes([pair[0], pair[1]]));
    }
    regs.insert(172, (-1234i16) as u16);
    regs.insert(181, 3150);
    let d = map.decode(&read(&map, |_, a| regs.get(&a).copied().unwrap_or(0)));
    assert!(d.issues.is_empty(), "{:?}", d.issues);
    assert_eq!(measurement(&d, "frequency"), 50.0);
    assert_eq!(measurement(&d, "u1"), 229.572);
    assert_eq!(measurement(&d, "i1"), 700.0);
    assert_eq!(measurement(&d, "p"), -1.9);
    assert_eq!(measurement(&d, "p1"), -1.0);
    assert_eq!(measurement(&d, "p2"), -8_388_608.0);
    assert_eq!(measurement(&d, "s"), 1_677_719.7);
    assert_eq!(measurement(&d, "pf"), 0.9);
    assert_eq!(measurement(&d, "pf1"), -0.8984);
    assert_eq!(measurement(&d, "pf2"), 1.0);
    assert_eq!(measurement(&d, "pf3"), 0.0);
    assert_eq!(measurement(&d, "pa"), -12.34);
    assert_eq!(measurement(&d, "temperature"), 31.5);
    assert_eq!(counter(&d, "counter1nr"), 1_234_567_000);
    assert_eq!(counter(&d, "counter2nr"), 123_450);
    assert_eq!(counter(&d, "counter3nr"), 7_000_000);
    assert_eq!(counter(&d, "counter4nr"), -1_000);
    assert_eq!(d.tariff, Some(2));
    assert_eq!(
        d.info,
        [
            ("model".to_string(), "WM3M4C".to_string()),
            ("serial".to_string(), "18230001".to_string())
        ]
    );
}

#[test]
fn iskra_hostile_words_become_issues() {
    let map = lib().get("iskra-meter").cloned().unwrap();
    let d = map.decode(&read(&map, |_, a| match a {
        164 => 0x1200, // T7 flags neither 00 nor FF
        166 => 0,      // T7 above 1
        167 => 10_001,
        401 => 0x7FFF, // exponent out of range
        _ => 0,
    }));
    let bad: Vec<_> = d.issues.iter().map(|i| i.quantity.as_str()).collect();
    assert_eq!(bad, ["pf", "pf1", "counter1nr"], "{:?}", d.issues);
    assert_eq!(d.issues[2].register, 406);
    assert!(
        d.issues[2].message.contains("exponent"),
        "{:?}",
        d.issues[2]
    );
    // Blocks missing entirely: every quantity of them is reported, nothing panics.
    let partial: Vec<_> = read(&map, |_, _| 0)
        .into_iter()
        .filter(|(b, _)| b.start != 401)
        .collect();
    let d = map.decode(&partial);
    assert_eq!(d.counters.len(), 0);
    assert_eq!(d.tariff, None);
    assert_eq!(d.issues.len(), 5);
    // A short block: only what came is used.
    let mut short = read(&map, |_, _| 0);
    for (b, words) in &mut short {
        if b.start == 105 {
            words.truncate(3);
        }
    }
    let d = map.decode(&short);
    assert!(d.measurements.iter().any(|(c, _)| *c == "frequency"));
    assert!(d.issues.iter().any(|i| i.quantity == "u2"));
}

#[test]
fn bicom_relay_state_and_switch() {
    let map = lib().get("iskra-bicom").cloned().unwrap();
    assert!(map.has_relay());
    assert_eq!(
        map.relay_write(true),
        Some(Write::Single {
            address: 141,
            value: 1
        })
    );
    assert_eq!(
        map.relay_write(false),
        Some(Write::Single {
            address: 141,
            value: 0
        })
    );
    assert_eq!(
        map.relay_state_read(),
        Some(BlockRead {
            function: Function::ReadInput,
            start: 101,
            count: 1
        })
    );
    let on = map.decode(&read(&map, |_, _| 1));
    assert_eq!(on.relay_state, Some(true));
    let off = map.decode(&read(&map, |_, _| 0));
    assert_eq!(off.relay_state, Some(false));
    let odd = map.decode(&read(&map, |_, _| 7));
    assert_eq!(odd.relay_state, None);
    assert_eq!(odd.issues.len(), 1);
}

#[test]
fn word_order_low_first_and_f32_and_u64() {
    let map = RegisterMap::from_toml(
        r#"
model = "custom"
function = "input"
word_order = "low_first"
[[measurement]]
column = "p"
register = 0
type = "i32"
unit = "W"
[[measurement]]
column = "q"
register = 2
type = "f32"
unit = "kvar"
word_order = "high_first"
[[measurement]]
column = "s"
register = 4
type = "f32"
unit = "VA"
[[counter]]
name = "counter1nr"
register = 6
type = "u64"
unit = "Wh"
scale = "0.001"
"#,
    )
    .unwrap();
    let q = 1.5f32.to_bits();
    let words = vec![
        0xFFED,
        0xFFFF,
        (q >> 16) as u16,
        q as u16,
        0x0000,
        0x7FC0, // NaN, low word first
        0x0004,
        0x0003,
        0x0002,
        0x0001,
    ];
    let plan = map.plan();
    assert_eq!(plan.len(), 1);
    let d = map.decode(&[(plan[0], words)]);
    assert_eq!(measurement(&d, "p"), -19.0);
    assert_eq!(measurement(&d, "q"), 1500.0);
    assert_eq!(d.issues.len(), 1);
    assert_eq!(d.issues[0].quantity, "s");
    // 0x0001_0002_0003_0004 mWh exactly.
    assert_eq!(counter(&d, "counter1nr"), 0x0001_0002_0003_0004);
}

#[test]
fn invalid_maps_are_refused_with_the_entry_named() {
    let cases = [
        ("model = \"x\"\n[[measurement]]\ncolumn = \"volts\"\nregister = 1\nfunction = \"holding\"\ntype = \"u16\"\nunit = \"V\"", "measurement \"volts\""),
        ("model = \"x\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 1\ntype = \"u16\"\nunit = \"V\"", "no function"),
        ("model = \"x\"\nfunction = \"holding\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 1\ntype = \"u16\"\nunit = \"A\"", "does not fit column u1"),
        ("model = \"x\"\nfunction = \"holding\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 1\ntype = \"u24\"\nunit = \"V\"", "type \"u24\""),
        ("model = \"x\"\nfunction = \"holding\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 70000\ntype = \"u16\"\nunit = \"V\"", "16-bit"),
        ("model = \"x\"\nfunction = \"holding\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 65535\ntype = \"u32\"\nunit = \"V\"", "past wire address"),
        ("model = \"x\"\nfunction = \"holding\"\n[[counter]]\nname = \"c\"\nregister = 1\ntype = \"f32\"\nunit = \"Wh\"", "exact"),
        ("model = \"x\"\nfunction = \"holding\"\n[[counter]]\nname = \"c\"\nregister = 1\ntype = \"u32\"\nunit = \"J\"", "counter unit"),
        ("model = \"x\"\nfunction = \"holding\"\n[[counter]]\nname = \"c\"\nregister = 1\ntype = \"u32\"\nunit = \"Wh\"\nscale = \"0.0x\"", "decimal"),
        ("model = \"x\"\nnotation = \"sg\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 105\ntype = \"t5\"\nunit = \"V\"", "not in SG notation"),
        ("model = \"x\"\nnotation = \"sg\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 30105\nfunction = \"holding\"\ntype = \"t5\"\nunit = \"V\"", "input register in SG notation"),
        ("model = \"x\"\nfunction = \"holding\"\n[[measurement]]\ncolumn = \"p\"\nregister = 1\ntype = \"t7\"\nunit = \"W\"", "t7"),
        ("model = \"x\"\nfunction = \"holding\"", "reads nothing"),
        ("model = \"a b\"\nfunction = \"holding\"", "model"),
        ("model = \"x\"\nfunction = \"holding\"\ncolour = 1", "unknown field"),
        ("model = \"x\"\nfunction = \"holding\"\n[relay]\nstate_register = 1\nswitch_register = 2\non_value = 1\noff_value = 1", "differ"),
    ];
    for (text, expect) in cases {
        let e = RegisterMap::from_toml(text).unwrap_err().to_string();
        assert!(e.contains(expect), "{text}\n=> {e}\n(expected {expect:?})");
    }
}

#[test]
fn load_dir_adds_and_overrides_models_without_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("my-meter.toml"),
        "model = \"my-meter\"\nfunction = \"input\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 0\ntype = \"u16\"\nunit = \"V\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("emdx3.toml"),
        "model = \"legrand-emdx3\"\ndescription = \"local\"\nfunction = \"holding\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 0\ntype = \"u16\"\nunit = \"V\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let mut lib = MapLibrary::builtin();
    assert_eq!(lib.load_dir(dir.path()).unwrap(), 2);
    assert!(lib.get("my-meter").is_some());
    assert_eq!(lib.get("legrand-emdx3").unwrap().description, "local");
    assert_eq!(lib.models().len(), 5);

    // One bad file: nothing from the directory is taken, and the error names the file.
    std::fs::write(dir.path().join("zz-bad.toml"), "model = ").unwrap();
    let mut fresh = MapLibrary::builtin();
    let e = fresh.load_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("zz-bad.toml"), "{e}");
    assert!(fresh.get("my-meter").is_none());
    std::fs::remove_file(dir.path().join("zz-bad.toml")).unwrap();

    std::fs::write(
        dir.path().join("zz-dup.toml"),
        "model = \"my-meter\"\nfunction = \"input\"\n[[measurement]]\ncolumn = \"u1\"\nregister = 0\ntype = \"u16\"\nunit = \"V\"\n",
    )
    .unwrap();
    assert!(matches!(
        MapLibrary::new().load_dir(dir.path()),
        Err(MapError::Duplicate { .. })
    ));
    assert!(matches!(
        MapLibrary::new().load_dir(&dir.path().join("missing")),
        Err(MapError::Io { .. })
    ));
}

#[test]
fn bus_cycle_of_32_meters_at_19200() {
    let lib = lib();
    let line = bus::LineSettings::rtu_8n1(19_200);
    let emdx3 = lib.get("legrand-emdx3").unwrap().plan();
    let plans: Vec<_> = (0..32).map(|_| emdx3.clone()).collect();
    // EMDX3: blocks of 10 and 10 words → per block 8 + 25 bytes + 7 chars of gaps = 40 chars.
    let per_meter = bus::request_time(&line, &emdx3[0]) + bus::request_time(&line, &emdx3[1]);
    // 80 characters of 10 bits at 19 200 Bd: 41.667 ms per meter, 1.333 s for 32 meters.
    assert_eq!(per_meter, std::time::Duration::from_nanos(2 * 20_833_333));
    let limit = bus::cycle_limit(&line, &plans);
    assert!((limit.as_secs_f64() - 1.3333).abs() < 1e-3, "{limit:?}");
    assert_eq!(limit, per_meter * 32);
}

fn arb_map() -> impl Strategy<Value = RegisterMap> {
    prop::sample::select(
        lib()
            .models()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
    )
    .prop_map(|m| lib().get(&m).cloned().unwrap())
}

#[test]
fn encode_round_trips_the_spec_values() {
    let lib = lib();
    let map = lib.get("iskra-meter").unwrap();
    let want = Decoded {
        measurements: vec![
            ("frequency", 49.98),
            ("u1", 229.572),
            ("p", -1234.5),
            ("pf1", -0.8984),
        ],
        counters: vec![CounterValue {
            name: "counter2nr".into(),
            unit: "Wh",
            resettable: false,
            value_milli: 123_450,
        }],
        tariff: Some(3),
        info: vec![("serial".into(), "18230001".into())],
        ..Decoded::default()
    };
    let regs = map.encode(&want).unwrap();
    let lookup: std::collections::HashMap<_, _> =
        regs.iter().map(|(f, a, w)| ((*f, *a), *w)).collect();
    let got = map.decode(&read(map, |f, a| lookup.get(&(f, a)).copied().unwrap_or(0)));
    for (c, v) in &want.measurements {
        assert_eq!(measurement(&got, c), *v, "{c}");
    }
    assert_eq!(counter(&got, "counter2nr"), 123_450);
    assert_eq!(got.tariff, Some(3));
    assert!(got.info.contains(&("serial".into(), "18230001".into())));
    assert!(map
        .encode(&Decoded {
            measurements: vec![("thd_u1", 1.0)],
            ..Decoded::default()
        })
        .is_err());
}

proptest! {
    #[test]
    fn counters_round_trip_exactly(milli in -2_000_000_000i64..2_000_000_000, model in 0usize..2) {
        let lib = lib();
        let (map, name) = if model == 0 {
            (lib.get("iskra-meter").unwrap(), "counter3nr")
        } else {
            (lib.get("legrand-046-77").unwrap(), "counter1")
        };
        // The 0 046 77 counts in 0.01 kWh steps: only multiples of 10 000 mWh, non-negative.
        let milli = if model == 1 { (milli.abs() / 10_000) * 10_000 } else { milli };
        let want = Decoded {
            counters: vec![CounterValue { name: name.into(), unit: "Wh", resettable: false, value_milli: milli }],
            ..Decoded::default()
        };
        let regs = map.encode(&want).unwrap();
        let lookup: std::collections::HashMap<_, _> = regs.iter().map(|(f, a, w)| ((*f, *a), *w)).collect();
        let got = map.decode(&read(map, |f, a| lookup.get(&(f, a)).copied().unwrap_or(0)));
        prop_assert_eq!(counter(&got, name), milli);
    }

    #[test]
    fn decode_never_panics_on_random_words(
        map in arb_map(),
        seed in prop::collection::vec(any::<u16>(), 0..300),
        truncate in any::<bool>(),
    ) {
        let mut n = 0usize;
        let blocks: Vec<_> = map.plan().into_iter().map(|b| {
            let take = if truncate { usize::from(b.count) / 2 } else { usize::from(b.count) + 3 };
            let words = (0..take).map(|_| { n += 1; seed.get(n % seed.len().max(1)).copied().unwrap_or(0) }).collect();
            (b, words)
        }).collect();
        let d = map.decode(&blocks);
        for (_, v) in &d.measurements {
            prop_assert!(v.is_finite());
        }
    }

    #[test]
    fn exact_counters_match_integer_arithmetic(value in any::<i32>(), exp in -3i16..=3) {
        let map = lib().get("iskra-meter").cloned().unwrap();
        let v = value as u32;
        let d = map.decode(&read(&map, |_, a| match a {
            401 => exp as u16,
            406 => (v >> 16) as u16,
            407 => v as u16,
            _ => 0,
        }));
        let expected = i128::from(value) * 1000;
        let expected = if exp >= 0 {
            expected * 10i128.pow(exp as u32)
        } else {
            let d = 10i128.pow((-exp) as u32);
            // 1000 × value is a multiple of 10^3 ≥ 10^-exp: exact.
            expected / d
        };
        prop_assert_eq!(i128::from(counter(&d, "counter1nr")), expected);
    }
}

/// A random map: `ranges` declared readable (holding), values of 1 or 2 words inside them.
fn random_map(ranges: &[(u16, u16)], values: &[(usize, u16, bool)]) -> Option<RegisterMap> {
    let mut text = String::from("model = \"random\"\nfunction = \"holding\"\n");
    for (first, len) in ranges {
        text += &format!("[[readable]]\nfirst = {first}\nlast = {}\n", first + len);
    }
    let mut used = std::collections::HashSet::new();
    for (column, offset, wide) in values {
        let column = map::COLUMNS[column % 12 + 11]; // p.. s3: W, var, VA families
        if !used.insert(column) {
            continue;
        }
        let unit = match column.as_bytes()[0] {
            b'p' => "W",
            b'q' => "var",
            _ => "VA",
        };
        let ty = if *wide { "i32" } else { "i16" };
        text += &format!(
            "[[measurement]]\ncolumn = \"{column}\"\nregister = {offset}\ntype = \"{ty}\"\nunit = \"{unit}\"\n"
        );
    }
    RegisterMap::from_toml(&text).ok()
}

/// The fewest blocks by dynamic programming over groups of consecutive spans.
fn optimal_blocks(map: &RegisterMap) -> usize {
    let mut spans: Vec<(u32, u32)> = plan::spans_named(map)
        .into_iter()
        .map(|(_, _, a, w)| (u32::from(a), u32::from(a) + u32::from(w)))
        .collect();
    spans.sort_unstable();
    spans.dedup();
    let readable = |a: u32| {
        map.readable()
            .iter()
            .any(|(_, f, l)| u32::from(*f) <= a && a <= u32::from(*l))
            || spans.iter().any(|(s, e)| *s <= a && a < *e)
    };
    let n = spans.len();
    let mut best = vec![usize::MAX; n + 1];
    best[0] = 0;
    for i in 1..=n {
        for j in 0..i {
            let start = spans[j].0;
            let end = spans[j..i].iter().map(|s| s.1).max().unwrap();
            if end - start <= u32::from(MAX_READ_WORDS)
                && (start..end).all(readable)
                && best[j] != usize::MAX
            {
                best[i] = best[i].min(best[j] + 1);
            }
        }
    }
    best[n]
}

proptest! {
    #[test]
    fn plans_cover_everything_within_limits_with_the_fewest_blocks(
        ranges in prop::collection::vec((0u16..2000, 0u16..300), 1..4),
        picks in prop::collection::vec((any::<usize>(), any::<u16>(), any::<bool>()), 1..12),
    ) {
        // Place each value inside one of the declared ranges.
        let values: Vec<_> = picks
            .iter()
            .map(|(c, r, wide)| {
                let (first, len) = ranges[*c % ranges.len()];
                let room = if *wide { len.max(1) - 1 } else { len };
                (*c, first + r % (room + 1), *wide && len >= 1)
            })
            .collect();
        let map = random_map(&ranges, &values);
        prop_assume!(map.is_some());
        let map = map.unwrap();
        let plan = map.plan();
        for (_, _, a, w) in plan::spans_named(&map) {
            let (a, e) = (u32::from(a), u32::from(a) + u32::from(w));
            prop_assert!(plan.iter().any(|b| u32::from(b.start) <= a
                && e <= u32::from(b.start) + u32::from(b.count)));
        }
        for b in &plan {
            prop_assert!(b.count >= 1 && b.count <= MAX_READ_WORDS);
            for a in u32::from(b.start)..u32::from(b.start) + u32::from(b.count) {
                prop_assert!(map.readable().iter().any(|(_, f, l)| u32::from(*f) <= a && a <= u32::from(*l)),
                    "{b:?} reads undeclared register {a}");
            }
        }
        prop_assert_eq!(plan.len(), optimal_blocks(&map));
    }
}
