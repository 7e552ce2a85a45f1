//! The timed actuation loop against the simulator over a real pty, beside a naive loop
//! measured in the same run:
//!
//! - phase-start lateness over N phases at a 10 ms period, and the drift at the end, for the
//!   engine and for the naive loop MicroDrop 2 uses (write, await the acknowledgement, sleep
//!   one period). Two instants per frame: the write issued (the host's own timing) and the
//!   write returned (adds the kernel's cost of a pty write), beside a bare baseline measured in
//!   the same run: a real-time thread that spins to each deadline and writes the same frame to
//!   a pty with nothing else to do;
//! - feedback reaction (the capacitance sample that reaches the target arrives -> the next
//!   phase's frame written);
//! - sustained electrode updates per second through the coalescing slot, frames that reached
//!   the board, and the process's resident memory.
//!
//! - the machine's own stalls: how long a thread that never sleeps goes without its CPU (the
//!   floor under any loop's worst case on this machine).
//!
//! `cargo bench --bench actuation_loop` (`ACT_BENCH_PHASES`, default 10000; `ACT_BENCH_FEEDBACK`,
//! default 1000; `ACT_BENCH_FLOOD_S`, default 3; `ACT_BENCH_STALL_S`, default 30).

use std::collections::BTreeSet;
use std::error::Error;
use std::time::{Duration, Instant};

use dropbot_plugin::actuation::{
    Actuator, DropBotBoard, EngineOptions, LevelTarget, Ordered, Phase, Program, Response,
    SequenceReport,
};
use dropbot_plugin::board::{DropBot, LinkOptions};
use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{self, SimHandle, SimOptions, Timing};
use dropbot_testkit::bench::{histogram, micros, row};
use firmware_protocol::TableSet;
use hdrhistogram::Histogram;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The phase period for the fast simulator (the 10 ms).
const PERIOD: Duration = Duration::from_millis(10);
/// The realistic simulator answers a channel update in ~10.6 ms (5 ms of I2C, then the
/// Teensy's USB flush timer): a 10 ms period cannot be kept by any host there.
const REALISTIC_PERIOD: Duration = Duration::from_millis(20);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn board(timing: Timing) -> Result<(SimHandle, DropBot, Device)> {
    let device = Device::microdrop3_default()?;
    let sim = sim::spawn_pty(SimOptions {
        timing,
        device: Some(device.clone()),
        ..SimOptions::default()
    })
    .await?;
    let path = sim.path().display().to_string();
    let bot = DropBot::open(&path, &TableSet::builtin(), LinkOptions::default()).await?;
    Ok((sim, bot, device))
}

fn engine(bot: DropBot) -> Result<Actuator> {
    let (actuator, streams) = Actuator::spawn(EngineOptions::default())?;
    // Read, as the plugin reads them: handing them up wakes a task, which costs the engine.
    let (mut notices, mut samples) = (streams.notices, streams.samples);
    tokio::spawn(async move { while notices.recv().await.is_some() {} });
    tokio::spawn(async move { while samples.recv().await.is_some() {} });
    actuator.attach(
        Box::new(DropBotBoard::new(bot, tokio::runtime::Handle::current(), 0)),
        1,
    );
    Ok(actuator)
}

fn alternating(n: usize, duration: Duration) -> Vec<Phase> {
    (0..n)
        .map(|i| {
            let channels: BTreeSet<u16> = BTreeSet::from([(i % 2) as u16 * 2, 1 + (i % 3) as u16]);
            Phase::timed(channels, duration)
        })
        .collect()
}

async fn run(actuator: &Actuator, program: Program) -> Result<SequenceReport> {
    match actuator
        .submit(Ordered::Run(program))
        .wait(Some(Duration::from_secs(3600)))
        .await?
    {
        Response::Sequence(report) => Ok(report),
        other => Err(format!("unexpected answer {other:?}").into()),
    }
}

/// Lateness of each phase's write (issued, returned), and the drift of the last start from
/// the ideal schedule.
fn lateness(
    report: &SequenceReport,
    period: Duration,
) -> Result<([Histogram<u64>; 2], Duration, usize)> {
    let mut h = histogram()?;
    let mut issued = histogram()?;
    let debug = std::env::var_os("ACT_BENCH_DEBUG").is_some_and(|v| !v.is_empty());
    let mut before: Option<&dropbot_plugin::actuation::PhaseResult> = None;
    for p in &report.phases {
        issued.saturating_record(micros(p.issued.saturating_duration_since(p.planned_start)));
        let late = p.started.saturating_duration_since(p.planned_start);
        if late > Duration::from_millis(1) && debug {
            // Where a late phase's time went: the previous frame's reply (the engine waits for
            // it), or the engine itself after that reply.
            let since = |a: Instant, b: Instant| b.saturating_duration_since(a);
            eprintln!(
                "phase {}: written {late:?} late (issued {:?} late); previous frame confirmed \
                 {:?} after its write, this one issued {:?} after that confirmation",
                p.index,
                since(p.planned_start, p.issued),
                before.map(|b| since(b.started, b.confirmed)),
                before.map(|b| since(b.confirmed, p.issued)),
            );
        }
        h.saturating_record(micros(late));
        before = Some(p);
    }
    let first = report.phases.first().ok_or("no phases")?;
    let last = report.phases.last().ok_or("no phases")?;
    let ideal = first.started + period * u32::try_from(report.phases.len() - 1)?;
    // Phases that started more than half a period late kept half their time and moved the
    // rest of the schedule (the engine's rule after a stall).
    let shifted = report
        .phases
        .iter()
        .filter(|p| p.started.saturating_duration_since(p.planned_start) > period / 2)
        .count();
    Ok((
        [issued, h],
        last.started.saturating_duration_since(ideal),
        shifted,
    ))
}

/// The floor under any host's phase writes: a real-time thread (where allowed) with nothing
/// else to do spins to each deadline and writes a 35-byte frame to a pty whose other end a
/// tokio task reads (as the simulator does). Lateness of the write's return, µs.
async fn bare_writes(n: usize, period: Duration) -> Result<Histogram<u64>> {
    let port = dropbot_testkit::bench::echo_pty()?;
    let path = serialport::SerialPort::name(&port).ok_or("the pty has no name")?;
    let thread = std::thread::spawn(move || -> std::result::Result<Histogram<u64>, String> {
        use std::io::{Read, Write};
        // The engine thread's priority, where allowed.
        let _ = dropbot_plugin::actuation::set_fifo();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| e.to_string())?;
        let mut h = histogram().map_err(|e| e.to_string())?;
        let frame = [0x7cu8; 35];
        let mut back = [0u8; 35];
        let start = Instant::now() + period;
        for i in 0..n {
            let deadline = start + period * u32::try_from(i).map_err(|e| e.to_string())?;
            spin_sleep::SpinSleeper::new(300_000).sleep_until(deadline);
            file.write_all(&frame).map_err(|e| e.to_string())?;
            h.saturating_record(micros(deadline.elapsed()));
            file.read_exact(&mut back).map_err(|e| e.to_string())?;
        }
        Ok(h)
    });
    let h = tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| "the bare writer panicked")??;
    drop(port);
    Ok(h)
}

/// The machine's own stalls: a thread at the engine's priority (where allowed) that never
/// sleeps reads the clock back to back for `seconds`, in windows of 900 ms with 100 ms of
/// sleep between them (the kernel throttles a real-time thread that never sleeps). A gap
/// between two reads is time the thread did not have its CPU: on a virtual machine, the
/// hypervisor running something else. No host loop can be on time through such a gap.
fn stalls(seconds: usize) -> Result<()> {
    const WINDOW: Duration = Duration::from_millis(900);
    let steal_before = steal_ticks();
    let thread = std::thread::spawn(move || -> std::result::Result<_, String> {
        let rt = dropbot_plugin::actuation::set_fifo().is_ok();
        let mut gaps = histogram().map_err(|e| e.to_string())?;
        let mut longest: Vec<u64> = Vec::new();
        for _ in 0..seconds {
            let end = Instant::now() + WINDOW;
            let mut last = Instant::now();
            while last < end {
                let now = Instant::now();
                let gap = micros(now - last);
                if gap >= 50 {
                    gaps.saturating_record(gap);
                }
                if gap >= 1000 {
                    longest.push(gap);
                }
                last = now;
            }
            std::thread::sleep(Duration::from_secs(1) - WINDOW);
        }
        Ok((rt, gaps, longest))
    });
    let (rt, gaps, longest) = thread.join().map_err(|_| "the stall probe panicked")??;
    let steal = steal_ticks().zip(steal_before).map(|(a, b)| a - b);
    println!(
        "
the machine's stalls: a thread that never sleeps ({}), {seconds} windows of 900 ms:",
        if rt {
            "real-time priority"
        } else {
            "normal priority: no real-time allowed"
        }
    );
    println!(
        "gaps >= 50 µs: {}; >= 1 ms: {} (µs: {longest:?}); longest {} µs; steal time {} ticks",
        gaps.len(),
        longest.len(),
        gaps.max(),
        steal.map_or("unknown".into(), |t| t.to_string())
    );
    Ok(())
}

/// The time the hypervisor ran something else on this machine's CPUs (`/proc/stat`), ticks.
fn steal_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().next()?.split_whitespace().nth(8)?.parse().ok()
}

/// MicroDrop 2's loop: write, await the acknowledgement, sleep one period.
async fn naive(bot: &DropBot, n: usize, period: Duration) -> Result<(Histogram<u64>, Duration)> {
    let mut h = histogram()?;
    let start = Instant::now();
    let mut last = start;
    for (i, phase) in alternating(n, period).iter().enumerate() {
        let planned = start + period * u32::try_from(i)?;
        let timing = bot.set_channels(&phase.channels).await?;
        h.saturating_record(micros(timing.written.saturating_duration_since(planned)));
        last = timing.written;
        tokio::time::sleep(period).await;
    }
    let ideal = start + period * u32::try_from(n - 1)?;
    Ok((h, last.saturating_duration_since(ideal)))
}

async fn phases(n: usize, timing: Timing, period: Duration) -> Result<()> {
    let (_sim, bot, _) = board(timing).await?;
    let actuator = engine(bot.clone())?;
    let report = run(&actuator, Program::new(alternating(n, period))).await?;
    let ([issued_h, engine_h], engine_drift, shifted) = lateness(&report, period)?;
    actuator.shutdown().await?;
    let bare_h = bare_writes(n, period).await?;
    let (naive_h, naive_drift) = naive(&bot, n, period).await?;
    let ms = period.as_millis();
    println!("\nphase-start lateness, {n} phases at {ms} ms ({timing:?} simulator), µs:");
    println!("| loop | n | p50 | p99 | max |\n|---|---|---|---|---|");
    println!("{}", row("engine: write issued", &issued_h));
    println!(
        "{}",
        row("engine: write returned (frame written)", &engine_h)
    );
    println!(
        "{}",
        row("bare: spin to the deadline, write(2) returned", &bare_h)
    );
    println!("{}", row("naive (write, await ack, sleep 10 ms)", &naive_h));
    println!(
        "drift at the end: engine {} µs ({shifted} phases moved the schedule after a stall), \
         naive {} µs",
        engine_drift.as_micros(),
        naive_drift.as_micros()
    );
    Ok(())
}

/// A droplet shuttles between two neighbouring electrodes with HV on; each phase actuates
/// the electrode it is not on and waits until the capacitance says it arrived (the simulator
/// moves it at its physical speed, ~0.1 s per electrode).
async fn feedback(n: usize) -> Result<()> {
    let (sim, bot, device) = board(Timing::Fast).await?;
    let from = device.index_of("electrode030").ok_or("no electrode030")?;
    let to = *device.neighbours(from).first().ok_or("no neighbour")?;
    let channel = |i: usize| -> Result<u16> {
        let e = device.electrodes().get(i).ok_or("no electrode")?;
        Ok(*e.channels.first().ok_or("an electrode without a channel")?)
    };
    let (a, b) = (channel(from)?, channel(to)?);
    sim.add_droplet(
        "electrode030".to_owned(),
        sim.unit_volume("electrode030".to_owned())?,
    )?;
    let actuator = engine(bot)?;
    let mut phases = Vec::new();
    for i in 0..n {
        let target = if i % 2 == 0 { b } else { a };
        phases.push(Phase {
            until_farads: Some(2e-12),
            ..Phase::timed(BTreeSet::from([target]), Duration::from_secs(2))
        });
    }
    for request in [Ordered::Stream(1), Ordered::HvOn] {
        actuator
            .submit(request)
            .wait(Some(Duration::from_secs(10)))
            .await?;
    }
    let report = run(&actuator, Program::new(phases)).await?;
    let mut h = histogram()?;
    let mut issued = histogram()?;
    let mut reached = 0;
    for pair in report.phases.windows(2) {
        if pair[0].reason == dropbot_plugin::actuation::EndReason::Reached {
            reached += 1;
            let since = |t: Instant| micros(t.saturating_duration_since(pair[0].ended));
            h.record(since(pair[1].started))?;
            issued.record(since(pair[1].issued))?;
        }
    }
    actuator.shutdown().await?;
    println!("\nfeedback reaction (target-reaching sample arrived -> next frame written), µs:");
    println!("| reaction | n | p50 | p99 | max |\n|---|---|---|---|---|");
    println!("{}", row("engine: write issued", &issued));
    println!("{}", row("engine: write returned (frame written)", &h));
    println!("{reached} of {n} feedback phases ended on the target");
    Ok(())
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn flood(seconds: usize) -> Result<()> {
    let (sim, bot, _) = board(Timing::Realistic).await?;
    let actuator = engine(bot)?;
    let rss_before = rss_kib("VmRSS:");
    let end = Instant::now() + Duration::from_secs(seconds as u64);
    let mut submitted = 0u64;
    let mut last = 0;
    let started = Instant::now();
    while Instant::now() < end {
        let i = (submitted % 119) as u16;
        last = actuator.submit_level(LevelTarget {
            channels: BTreeSet::from([i, i + 1]),
            live: false,
        });
        submitted += 1;
        if submitted % 64 == 0 {
            // Let the runtime breathe, as a bus client would between messages.
            tokio::task::yield_now().await;
        }
    }
    let elapsed = started.elapsed();
    let picture = actuator.wait_level(last, Duration::from_secs(30)).await?;
    let frames = sim
        .trace()
        .iter()
        .filter(|r| matches!(&r.entry, dropbot_plugin::sim::TraceEntry::Channels { .. }))
        .count();
    actuator.shutdown().await?;
    println!("\nelectrode updates through the coalescing slot for {seconds} s:");
    println!(
        "| submitted | per second | board frames (in the trace window) | final state newest | RSS before / after / peak KiB |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {submitted} | {:.0} | {frames} | {} | {rss_before} / {} / {} |",
        submitted as f64 / elapsed.as_secs_f64(),
        picture.actuated.len() == 2,
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:"),
    );
    Ok(())
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        stalls(env("ACT_BENCH_STALL_S", 30))?;
        flood(env("ACT_BENCH_FLOOD_S", 3)).await?;
        feedback(env("ACT_BENCH_FEEDBACK", 1000)).await?;
        // Fast: the board answers at once, so this is the engine's own timing. Realistic:
        // the simulated board takes ~5 ms per channel update, as a DropBot does, and on a
        // loaded machine its (tokio-timed) replies can come later than the 10 ms period.
        let n = env("ACT_BENCH_PHASES", 10_000);
        phases(n, Timing::Fast, PERIOD).await?;
        phases(n / 5, Timing::Realistic, REALISTIC_PERIOD).await?;
        Ok(())
    })
}
