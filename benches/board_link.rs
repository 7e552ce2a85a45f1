//! Round trips over the board link against the simulator on a real pty, beside a bare pty echo
//! of the same packet sizes measured in the same run, plus how long an unplug takes to be
//! noticed. Prints hdrhistogram p50/p99/max in microseconds and a markdown table.
//!
//! `cargo bench --bench board_link` (N round trips each: `BOARD_BENCH_N`, default 5000; the
//! simulator's timing: `BOARD_BENCH_TIMING=fast|realistic`, default fast).

use std::collections::BTreeSet;
use std::error::Error;
use std::time::Instant;

use dropbot_plugin::board::{DropBot, LinkOptions};
use dropbot_plugin::sim::{self, SimOptions, Timing};
use dropbot_testkit::bench::{echo_once, echo_pty, histogram, micros, row};
use firmware_protocol::commands::{Microseconds, SetStateOfChannels};
use firmware_protocol::{Command, Packet, TableSet};
use hdrhistogram::Histogram;
use tokio_serial::SerialStream;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const WARMUP: usize = 200;
const UNPLUGS: usize = 30;

fn timing() -> Timing {
    std::env::var("BOARD_BENCH_TIMING")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(Timing::Fast)
}

async fn board() -> Result<(sim::SimHandle, DropBot)> {
    let sim = sim::spawn_pty(SimOptions {
        timing: timing(),
        ..SimOptions::default()
    })
    .await?;
    let path = sim.path().display().to_string();
    let bot = DropBot::open(&path, &TableSet::builtin(), LinkOptions::default()).await?;
    Ok((sim, bot))
}

/// Histograms of a call and of a bare echo of its request's size, measured alternately so
/// that both see the same machine conditions.
struct Pair {
    echo: Histogram<u64>,
    call: Histogram<u64>,
}

async fn trivial_calls(
    bot: &DropBot,
    echo: &mut SerialStream,
    size: usize,
    n: usize,
) -> Result<Pair> {
    let (msg, mut back) = (vec![0x55u8; size], vec![0u8; size]);
    let mut pair = Pair {
        echo: histogram()?,
        call: histogram()?,
    };
    for i in 0..WARMUP + n {
        let e = echo_once(echo, &msg, &mut back).await?;
        let t = Instant::now();
        bot.sync_time().await?; // one `microseconds()` call
        let c = t.elapsed();
        if i >= WARMUP {
            pair.echo.record(micros(e))?;
            pair.call.record(micros(c))?;
        }
    }
    Ok(pair)
}

async fn channel_updates(
    bot: &DropBot,
    echo: &mut SerialStream,
    size: usize,
    n: usize,
) -> Result<Pair> {
    let (msg, mut back) = (vec![0x55u8; size], vec![0u8; size]);
    let count = bot.info().channel_count;
    let even: BTreeSet<u16> = (0..count).step_by(2).collect();
    let odd: BTreeSet<u16> = (1..count).step_by(2).collect();
    let mut pair = Pair {
        echo: histogram()?,
        call: histogram()?,
    };
    for i in 0..WARMUP + n {
        let set = if i % 2 == 0 { &even } else { &odd };
        let e = echo_once(echo, &msg, &mut back).await?;
        let t = Instant::now();
        bot.set_channels(set).await?;
        let c = t.elapsed();
        if i >= WARMUP {
            pair.echo.record(micros(e))?;
            pair.call.record(micros(c))?;
        }
    }
    bot.all_off().await?;
    Ok(pair)
}

/// From pulling the cable to the link reporting it closed.
async fn unplug_detection() -> Result<Histogram<u64>> {
    let mut h = histogram()?;
    for _ in 0..UNPLUGS {
        let (sim, bot) = board().await?;
        let closed = tokio::spawn({
            let bot = bot.clone();
            async move { bot.closed().await }
        });
        let t = Instant::now();
        sim.unplug().await;
        closed.await?;
        h.record(micros(t.elapsed()))?;
    }
    Ok(h)
}

fn packet_len(payload: Vec<u8>) -> Result<usize> {
    Ok(Packet::Data { id: 1, payload }.to_bytes()?.len())
}

async fn run() -> Result<()> {
    let n: usize = std::env::var("BOARD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let (_sim, bot) = board().await?;
    let table = bot.table().clone();
    let trivial_len = packet_len(Microseconds {}.encode(&table)?)?;
    let all: Vec<u8> = vec![0xFF; usize::from(bot.info().channel_count / 8)];
    let update_len = packet_len(
        SetStateOfChannels {
            channel_states: all,
        }
        .encode(&table)?,
    )?;

    let mut echo = echo_pty()?;
    let Pair {
        echo: echo_small,
        call,
    } = trivial_calls(&bot, &mut echo, trivial_len, n).await?;
    let Pair {
        echo: echo_big,
        call: update,
    } = channel_updates(&bot, &mut echo, update_len, n).await?;
    let unplug = unplug_detection().await?;
    let stats = bot.stats();

    let rows = [
        row(&format!("bare pty echo, {trivial_len} B"), &echo_small),
        row("`microseconds()` call", &call),
        row(&format!("bare pty echo, {update_len} B"), &echo_big),
        row("`set_state_of_channels`, 120 channels", &update),
        row("unplug -> link closed", &unplug),
    ];
    println!("simulator timing: {:?}", timing());
    println!("| round trip | n | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    let ratio = |a: &Histogram<u64>, b: &Histogram<u64>| {
        a.value_at_quantile(0.99) as f64 / b.value_at_quantile(0.99).max(1) as f64
    };
    println!();
    println!(
        "p99 ratio call / echo: trivial {:.2}, channel update {:.2} (bar: <= 2.00)",
        ratio(&call, &echo_small),
        ratio(&update, &echo_big)
    );
    println!(
        "link: {} requests, {} timeouts, {} crc errors",
        stats.requests, stats.timeouts, stats.crc_errors
    );
    Ok(())
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}
