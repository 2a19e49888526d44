//! The simulator: exact energy, determinism, physics.

mod common;

use chrono::{Duration, NaiveDateTime};
use common::{monday, Harness, SERIAL};
use proptest::prelude::*;
use sg_gateway_core::config::GatewayConfig;
use sg_gateway_core::rng::SplitMix64;
use sg_gateway_core::sim::{tariff_at, Energy, Profile, SimMeter, SimRelay, SimSource};
use sg_gateway_core::{Link, MeterSource, Slot};

const ALL_TARIFFS: &[u8] = &[1, 2, 3, 4];

fn register(meter: &SimMeter, energy: Energy) -> i64 {
    meter.register_mwh(energy, ALL_TARIFFS, false)
}

/// Advances `meter` in random steps (ms resolution) over `span`, switching its load now and
/// then, and checks every counter difference against the recomputed integral.
fn check_conservation(seed: u64, phases: u8, profile: Profile, steps: usize) {
    let mut rng = SplitMix64::new(seed);
    let start = monday(5, 0, 0) + Duration::milliseconds(rng.below(86_400_000) as i64);
    let mut meter = SimMeter::new(seed, phases, profile);
    meter.advance_to(start);
    let mut marks: Vec<(NaiveDateTime, [i64; 4])> = Vec::new();
    let mut t = start;
    for _ in 0..steps {
        t += Duration::milliseconds(rng.below(20 * 60_000) as i64 + 1);
        meter.advance_to(t);
        if rng.below(4) == 0 {
            meter.set_connected(!meter.is_connected());
        }
        marks.push((t, Energy::ALL.map(|e| register(&meter, e))));
    }
    for _ in 0..8 {
        let a = rng.below(marks.len() as u64) as usize;
        let b = rng.below(marks.len() as u64) as usize;
        let ((t1, r1), (t2, r2)) = (marks[a.min(b)], marks[a.max(b)]);
        for (n, energy) in Energy::ALL.into_iter().enumerate() {
            assert_eq!(
                r2[n] - r1[n],
                meter.energy_truth_mwh(energy, t1, t2),
                "seed {seed}, {energy:?}, {t1} .. {t2}"
            );
        }
    }
}

#[test]
fn counters_are_the_exact_integral_of_power() {
    for seed in 0..12 {
        let profile = [Profile::Household, Profile::Office, Profile::Industrial][seed as usize % 3];
        let phases = if seed % 2 == 0 { 3 } else { 1 };
        check_conservation(seed, phases, profile, 40);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn conservation_for_any_seed(seed: u64, three_phase: bool, profile in 0_usize..3) {
        let profile = [Profile::Household, Profile::Office, Profile::Industrial][profile];
        check_conservation(seed, if three_phase { 3 } else { 1 }, profile, 12);
    }
}

#[test]
fn the_integral_does_not_depend_on_the_step_size() {
    let start = monday(17, 59, 0);
    let end = monday(20, 0, 0);
    let mut coarse = SimMeter::new(9, 3, Profile::Household);
    let mut fine = coarse.clone();
    coarse.advance_to(start);
    coarse.advance_to(end);
    fine.advance_to(start);
    let mut t = start;
    while t < end {
        t = (t + Duration::milliseconds(337)).min(end);
        fine.advance_to(t);
    }
    assert_eq!(coarse, fine);
    // About what a household draws over two evening hours.
    let kwh = (register(&fine, Energy::ActiveImport)
        - register(
            &SimMeter::new(9, 3, Profile::Household),
            Energy::ActiveImport,
        )) as f64
        / 1e6;
    assert!((0.5..20.0).contains(&kwh), "{kwh} kWh");
}

#[test]
fn tariff_registers_split_the_total() {
    let mut meter = SimMeter::new(3, 3, Profile::Industrial);
    meter.advance_to(monday(4, 0, 0));
    meter.advance_to(monday(23, 30, 0));
    let t1 = meter.register_mwh(Energy::ActiveImport, &[1], true);
    let t2 = meter.register_mwh(Energy::ActiveImport, &[2], true);
    let all = meter.register_mwh(Energy::ActiveImport, ALL_TARIFFS, true);
    assert!(t1 > 0 && t2 > 0);
    assert!((t1 + t2 - all).abs() <= 1, "floors differ by at most 1 mWh");
    assert_eq!(tariff_at(monday(5, 59, 59)), 2);
    assert_eq!(tariff_at(monday(6, 0, 0)), 1);
    assert_eq!(tariff_at(monday(21, 59, 59)), 1);
    assert_eq!(tariff_at(monday(22, 0, 0)), 2);
    assert_eq!(tariff_at(common::at(2026, 3, 7, 12, 0, 0)), 2, "Saturday");
}

#[test]
fn same_seed_same_documents() {
    let run = |seed| {
        let mut h = Harness::new(GatewayConfig::example(SERIAL), seed, monday(6, 0, 0));
        h.gw.on_connected(Link::One);
        h.run_until(monday(9, 0, 0), 7);
        h.drain(Link::One)
            .into_iter()
            .map(|m| (m.topic, m.payload))
            .collect::<Vec<_>>()
    };
    let a = run(11);
    assert_eq!(a.len(), 1 + 12 * 8);
    assert!(a == run(11), "deterministic");
    assert!(a != run(12), "the seed matters");
}

#[test]
fn a_relay_off_cuts_the_load_and_stops_the_counters() {
    let mut source = SimSource::new();
    source.add_meter(Slot::Rs485(1), SimMeter::new(4, 3, Profile::Office));
    source.add_relay(
        Slot::Rs485(2),
        SimRelay {
            on: true,
            faulty: false,
        },
    );
    assert!(source.cut_by(Slot::Rs485(1), Slot::Rs485(2)));
    source.advance_to(monday(10, 0, 0));
    source.advance_to(monday(10, 30, 0));
    let on = source.read_measurements(Slot::Rs485(1)).unwrap();
    assert!(on.total.p_w > 500.0);

    assert!(source.switch_relay(Slot::Rs485(2), false));
    source.advance_to(monday(10, 30, 1));
    let before = source.read_counters(Slot::Rs485(1)).unwrap();
    source.advance_to(monday(11, 30, 0));
    let off = source.read_measurements(Slot::Rs485(1)).unwrap();
    assert_eq!(off.total.p_w, 0.0);
    assert!(off.phases.iter().all(|p| p.i_a == 0.0 && p.q_var == 0.0));
    assert!(
        off.phases.iter().all(|p| p.u_v > 220.0),
        "the voltage is still there"
    );
    assert_eq!(source.read_counters(Slot::Rs485(1)).unwrap(), before);

    source.set_faulty(Slot::Rs485(2), true);
    assert!(!source.switch_relay(Slot::Rs485(2), true));
    assert_eq!(source.relay_state(Slot::Rs485(2)), Some(false));
}

#[test]
fn power_triangle_and_power_factor_sign() {
    for seed in 0..6 {
        let meter = SimMeter::new(seed, 3, Profile::Office);
        for minute in (0..7 * 24 * 60).step_by(97) {
            let t = monday(0, 0, 0) + Duration::minutes(minute);
            let v = meter.measurements_at(t);
            let totals = [(
                v.total.p_w,
                v.total.q_var,
                v.total.s_va,
                v.total.pf,
                v.total.angle_deg,
            )];
            let phases = v
                .phases
                .iter()
                .map(|p| (p.p_w, p.q_var, p.s_va, p.pf, p.angle_deg));
            for (p, q, s, pf, angle) in phases.chain(totals) {
                assert!((s * s - (p * p + q * q)).abs() <= 1e-6 * s * s + 1e-9);
                assert!((pf.abs() - p / s).abs() < 1e-9);
                assert_eq!(pf < 0.0, q < 0.0, "capacitive iff Q < 0: pf {pf}, q {q}");
                assert!((angle.to_radians().tan() - q / p).abs() < 1e-6);
            }
            for p in &v.phases {
                assert!((p.i_a - p.s_va / p.u_v).abs() < 1e-9);
                assert!((215.0..245.0).contains(&p.u_v));
            }
            assert!((49.9..50.1).contains(&v.frequency_hz));
            assert_eq!(v.tariff, Some(tariff_at(t)));
        }
    }
}

#[test]
fn offices_follow_working_hours() {
    let meter = SimMeter::new(2, 3, Profile::Office);
    let mean = |h0: u32, day: u32| {
        let samples: Vec<f64> = (0..60)
            .map(|m| {
                let t = common::at(2026, 3, day, h0, m, 0);
                meter.measurements_at(t).total.p_w
            })
            .collect();
        samples.iter().sum::<f64>() / samples.len() as f64
    };
    let (monday_noon, monday_night, sunday_noon) = (mean(10, 2), mean(2, 2), mean(10, 8));
    assert!(
        monday_noon > 3.0 * monday_night,
        "{monday_noon} vs {monday_night}"
    );
    assert!(monday_noon > 3.0 * sunday_noon);
}
