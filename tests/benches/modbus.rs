//! Modbus polling benchmark: Headend (in process, with its database, journal and ingest
//! writers) polls simulated RS485/IP converters (`headend_e2e::converter`) over real TCP.
//!
//! 1. **Bus cycle against its line-time limit.** 32 meters of a shipped map on one converter
//!    that enforces 19 200 Bd 8N1 on its RS485 side (each exchange holds the bus for its RTU
//!    frame times). The limit is `bus::cycle_limit` of the 32 register plans: the line time of
//!    every request and reply with their 3.5-character gaps, no device think time. Every
//!    device is due all the time (100 ms interval), so the bus is saturated; the measured
//!    cycle is the window divided by the number of complete passes (requests / blocks per
//!    pass). Target: at most 1.2 × the limit.
//! 2. **CPU per 1 000 polled devices per second.** Many converters without line-speed
//!    enforcement, every device on a 1 s interval; the CPU time of the process minus the
//!    simulators' threads (their own runtime, threads named `bench-sim`), over a window,
//!    divided by the polls done (counted by the simulators, checked against stored rows).
//!
//! Figures are reported, never asserted.
//!
//! `cargo bench -p headend-e2e --bench modbus`; parameters `HEADEND_BENCH_MODBUS_GAP_MS`
//! (gap between frames, default the configuration's), `HEADEND_BENCH_MODBUS_CYCLES` (20),
//! `HEADEND_BENCH_MODBUS_CONVERTERS` (20), `HEADEND_BENCH_MODBUS_UNITS` (50),
//! `HEADEND_BENCH_MODBUS_WINDOW` (20 s).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use headend_e2e::bench::{env_or, Machine};
use headend_e2e::converter::{
    spec_values, unit_from_map, SimConverter, SimOptions, SPEC_046_77_UNIT,
};
use headend_e2e::{eventually, TestApp};
use headend_modbus_map::bus::{cycle_limit, request_time, LineSettings};
use headend_modbus_map::MapLibrary;
use serde_json::json;
use tokio::runtime::Handle;

const SIM_THREAD: &str = "bench-sim";

fn main() -> anyhow::Result<()> {
    let sims = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SIM_THREAD)
        .enable_all()
        .build()?;
    let server = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = server.block_on(run(sims.handle().clone()))?;
    println!("{report}");
    Ok(())
}

async fn run(sims: Handle) -> anyhow::Result<String> {
    let gap_ms: u64 = env_or(
        "HEADEND_BENCH_MODBUS_GAP_MS",
        headend::modbus::config::ModbusConfig::default().gap_ms,
    )?;
    let cycles: u64 = env_or("HEADEND_BENCH_MODBUS_CYCLES", 20)?;
    let converters: u8 = env_or("HEADEND_BENCH_MODBUS_CONVERTERS", 20)?;
    let units: u8 = env_or("HEADEND_BENCH_MODBUS_UNITS", 50)?;
    let window: u64 = env_or("HEADEND_BENCH_MODBUS_WINDOW", 20)?;
    ensure!((1..=247).contains(&units), "units per converter: 1..247");
    let mut out = String::new();
    out.push_str(&Machine::probe().describe(
        "Headend, its PostgreSQL (the shared test cluster) and the simulators share the machine.",
    ));
    out.push_str("\n\n");
    out.push_str(&bus_cycle(&sims, gap_ms, cycles).await?);
    out.push_str(&cpu_per_poll(&sims, gap_ms, converters, units, window).await?);
    Ok(out)
}

async fn bus_cycle(sims: &Handle, gap_ms: u64, cycles: u64) -> anyhow::Result<String> {
    const METERS: u8 = 32;
    const BAUD: u32 = 19_200;
    let library = MapLibrary::builtin();
    let model = "legrand-emdx3";
    let map = library.get(model).context("shipped map")?.clone();
    let line = LineSettings::rtu_8n1(BAUD);
    let plans: Vec<_> = (0..METERS).map(|_| map.plan()).collect();
    let limit = cycle_limit(&line, &plans);
    let blocks_per_cycle = plans.iter().map(Vec::len).sum::<usize>() as u64;
    let sim = {
        let _enter = sims.enter();
        SimConverter::start(SimOptions {
            baud: Some(BAUD),
            converter_timeout: Duration::from_millis(300),
        })
    };
    for unit in 1..=METERS {
        sim.add_unit(unit, unit_from_map(&map, &spec_values(1)));
    }
    let app = TestApp::spawn_with(|c| {
        c.modbus.gap_ms = gap_ms;
        c.log.filter = "error".into();
    })
    .await;
    let token = app.user_token("bench@example.com", "admin", &[]).await;
    let devices: Vec<_> = (1..=METERS)
        .map(|u| json!({ "unit": u, "model": model, "poll_interval_ms": 100 }))
        .collect();
    let created = app
        .request(
            "POST",
            "/api/v1/converters",
            Some(&token),
            Some(
                json!({ "name": "bench-bus", "host": sim.addr().ip().to_string(),
                "port": sim.addr().port(), "devices": devices }),
            ),
        )
        .await;
    ensure!(created.status == 201, "converter: {}", created.body);
    let total = |sim: &SimConverter| (1..=METERS).map(|u| sim.requests(u)).sum::<u64>();
    // Warm-up: two passes, so every connection and cache is in place.
    eventually(Duration::from_secs(60), || async {
        (1..=METERS).all(|u| sim.requests(u) >= 4).then_some(())
    })
    .await
    .context("warm-up")?;
    let stored0 = app.count("SELECT count(*) FROM measurements").await;
    let (r0, t0) = (total(&sim), Instant::now());
    eventually(Duration::from_secs(600), || async {
        (total(&sim) >= r0 + cycles * blocks_per_cycle).then_some(())
    })
    .await
    .context("cycles")?;
    let (r1, t1) = (total(&sim), Instant::now());
    let elapsed = t1 - t0;
    let passes = (r1 - r0) as f64 / blocks_per_cycle as f64;
    let cycle = elapsed.as_secs_f64() / passes;
    let fairness = {
        let per: Vec<u64> = (1..=METERS).map(|u| sim.requests(u)).collect();
        (
            *per.iter().min().unwrap_or(&0),
            *per.iter().max().unwrap_or(&0),
        )
    };
    // Everything polled reaches the database.
    let expected_rows = stored0 + ((r1 - r0) / plans[0].len() as u64) as i64;
    let stored = eventually(Duration::from_secs(30), || async {
        let n = app.count("SELECT count(*) FROM measurements").await;
        (n >= expected_rows).then_some(n)
    })
    .await
    .unwrap_or(0);
    app.stop().await;
    let per_block: Vec<String> = map
        .plan()
        .iter()
        .map(|b| {
            format!(
                "fn {} {}×{} words: {:.2} ms",
                b.function.code(),
                b.start,
                b.count,
                request_time(&line, b).as_secs_f64() * 1e3
            )
        })
        .collect();
    Ok(format!(
        "### Bus cycle: {METERS} × {model} at {BAUD} Bd 8N1\n\n\
         - Register plan per meter: {} ({} block reads).\n\
         - Line-time limit of one cycle (`bus::cycle_limit`): {:.1} ms.\n\
         - Measured cycle over {passes:.1} passes ({:.1} s): {:.1} ms, **{:.3} × the limit** \
           (gap between frames {gap_ms} ms, timeout 200 ms).\n\
         - Requests per meter (whole run): min {}, max {}; measurement rows stored: {} of {} polls.\n\n",
        per_block.join("; "),
        plans[0].len(),
        limit.as_secs_f64() * 1e3,
        elapsed.as_secs_f64(),
        cycle * 1e3,
        cycle / limit.as_secs_f64(),
        fairness.0,
        fairness.1,
        stored - stored0,
        expected_rows - stored0,
    ))
}

async fn cpu_per_poll(
    sims: &Handle,
    gap_ms: u64,
    converters: u8,
    units: u8,
    window: u64,
) -> anyhow::Result<String> {
    let library = MapLibrary::builtin();
    let model = "legrand-046-77";
    let map = library.get(model).context("shipped map")?.clone();
    let image = unit_from_map(&map, &spec_values(SPEC_046_77_UNIT));
    let app = TestApp::spawn_with(|c| {
        c.modbus.gap_ms = gap_ms;
        c.log.filter = "error".into();
    })
    .await;
    let token = app.user_token("bench@example.com", "admin", &[]).await;
    let mut fleet = Vec::new();
    for n in 0..converters {
        let sim = {
            let _enter = sims.enter();
            SimConverter::start(SimOptions::default())
        };
        for unit in 1..=units {
            sim.add_unit(unit, image.clone());
        }
        let devices: Vec<_> = (1..=units)
            .map(|u| json!({ "unit": u, "model": model, "poll_interval_ms": 1000 }))
            .collect();
        let created = app
            .request(
                "POST",
                "/api/v1/converters",
                Some(&token),
                Some(
                    json!({ "name": format!("bench-cv{n}"), "host": sim.addr().ip().to_string(),
                    "port": sim.addr().port(), "devices": devices }),
                ),
            )
            .await;
        ensure!(created.status == 201, "converter: {}", created.body);
        fleet.push(sim);
    }
    let polls = |fleet: &[SimConverter]| {
        fleet
            .iter()
            .map(|s| (1..=units).map(|u| s.requests(u)).sum::<u64>())
            .sum::<u64>()
    };
    eventually(Duration::from_secs(60), || async {
        fleet
            .iter()
            .all(|s| (1..=units).all(|u| s.requests(u) >= 3))
            .then_some(())
    })
    .await
    .context("warm-up")?;
    let rows0 = app.count("SELECT count(*) FROM counter_readings").await;
    let (p0, c0, t0) = (polls(&fleet), cpu_ticks()?, Instant::now());
    tokio::time::sleep(Duration::from_secs(window)).await;
    let (p1, c1, t1) = (polls(&fleet), cpu_ticks()?, Instant::now());
    let done = p1 - p0;
    // Two counters per poll of this map: every poll's snapshot must be stored.
    let stored = eventually(Duration::from_secs(30), || async {
        let n = app.count("SELECT count(*) FROM counter_readings").await;
        (n - rows0 >= 2 * done as i64).then_some(n - rows0)
    })
    .await
    .unwrap_or(0);
    app.stop().await;
    drop(fleet);
    let seconds = (t1 - t0).as_secs_f64();
    let ticks = clock_ticks();
    let headend_cpu = (c1.0 - c0.0) as f64 / ticks;
    let sim_cpu = (c1.1 - c0.1) as f64 / ticks;
    let rate = done as f64 / seconds;
    let devices = u32::from(converters) * u32::from(units);
    Ok(format!(
        "### CPU: {converters} converters × {units} × {model} ({devices} devices, 1 s interval, no line-speed limit)\n\n\
         - Polls over {seconds:.1} s: {done} ({rate:.0} polls/s; counter rows stored for them: {stored}).\n\
         - Headend CPU (process minus simulator threads): {headend_cpu:.2} s, i.e. **{:.3} cores per 1 000 polled devices per second** \
           ({:.0} µs per poll, journal append and database write included; PostgreSQL's own CPU not counted).\n\
         - Simulators: {sim_cpu:.2} s.\n",
        headend_cpu / seconds / rate * 1000.0,
        headend_cpu / done.max(1) as f64 * 1e6,
    ))
}

fn clock_ticks() -> f64 {
    // USER_HZ: 100 on every Linux architecture Headend targets.
    100.0
}

/// (process minus simulator threads, simulator threads), in clock ticks.
fn cpu_ticks() -> anyhow::Result<(u64, u64)> {
    let process = ticks(Path::new("/proc/self"))?;
    let mut sims = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?.path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.starts_with(SIM_THREAD) {
            sims += ticks(&task).unwrap_or(0);
        }
    }
    Ok((process.saturating_sub(sims), sims))
}

fn ticks(dir: &Path) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field =
        |n: usize| -> anyhow::Result<u64> { Ok(fields.get(n).context("stat field")?.parse()?) };
    Ok(field(11)? + field(12)?)
}
