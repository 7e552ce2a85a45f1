//! Physics of the simulated DropBot seen through a real pty and its trace: a droplet moved
//! along a row by switching neighbours, a MicroDrop 3 device, and determinism.

use std::time::Duration;

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{DropletView, SimOptions, Timing, TraceEntry, TraceRecord};
use dropbot_testkit::sim_host::{connect, SimHostError};
use firmware_protocol::commands::{Capacitance, MeasureTemperature};
use firmware_protocol::State;

type R = Result<(), SimHostError>;

const MS: Duration = Duration::from_millis(1);
/// Capacitance of one fully covered 2.4 mm grid electrode.
const COVERED_F: f64 = 5.76e-12;

fn hv_on() -> State {
    State {
        hv_output_enabled: Some(true),
        ..State::default()
    }
}

#[tokio::test]
async fn droplet_follows_switched_neighbours_along_a_row() -> R {
    let dir = tempfile::tempdir()?;
    let trace_path = dir.path().join("trace.jsonl");
    let opts = SimOptions {
        virtual_clock: true,
        trace: Some(trace_path.clone()),
        ..SimOptions::default()
    };
    let (sim, mut host) = connect(opts).await?;
    sim.add_droplet("electrode040", sim.unit_volume("electrode040")?)?;
    assert!(host.update_state(hv_on()).await?);
    sim.advance(300 * MS);
    let mut readings = Vec::new();
    for col in 1..=5u16 {
        assert!(host.set_channels(&[40 + col]).await?);
        sim.advance(400 * MS);
        let c = host.call(Capacitance { n_samples: 50 }).await?;
        assert!(
            (f64::from(c) - COVERED_F).abs() < 0.1e-12,
            "column {col}: {c}"
        );
        readings.push(c);
        let at = &sim.snapshot().droplets[0];
        assert_eq!(at.electrode, format!("electrode{:03}", 40 + col));
    }
    // Half-way through the next step only part of the droplet covers the actuated electrode.
    assert!(host.set_channels(&[46]).await?);
    sim.advance(60 * MS);
    let partial = f64::from(host.call(Capacitance { n_samples: 50 }).await?);
    assert!(partial > 1e-12 && partial < 5e-12, "{partial}");
    let moving = sim.snapshot().droplets[0].clone();
    assert_eq!(moving.to.as_deref(), Some("electrode046"));
    sim.shutdown().await;

    // The trace file tells the same story.
    let text = std::fs::read_to_string(&trace_path)?;
    let records: Vec<TraceRecord> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| SimHostError::Io(e.into()))?;
    let at_rest: Vec<DropletView> = records
        .iter()
        .filter_map(|r| match &r.entry {
            TraceEntry::Droplets { droplets } => droplets.first().cloned(),
            _ => None,
        })
        .filter(|d| d.to.is_none())
        .collect();
    let visited: Vec<&str> = at_rest.iter().map(|d| d.electrode.as_str()).collect();
    assert_eq!(
        visited,
        [
            "electrode040",
            "electrode041",
            "electrode042",
            "electrode043",
            "electrode044",
            "electrode045"
        ]
    );
    assert!(at_rest
        .windows(2)
        .all(|w| (w[1].x - w[0].x - 2.5).abs() < 1e-9 && w[1].y == w[0].y));
    // Arrivals take about 2.5 mm / 20 mm/s = 125 ms after each switch.
    let arrivals: Vec<u64> = records
        .iter()
        .filter(|r| matches!(&r.entry, TraceEntry::Droplets { droplets } if droplets.first().is_some_and(|d| d.to.is_none())))
        .map(|r| r.t_us)
        .collect();
    // From the moment the first channel update reached the boards.
    let switched = records
        .iter()
        .find(|r| matches!(&r.entry, TraceEntry::Channels { actuated, .. } if actuated == &[41]))
        .map_or(0, |r| r.t_us);
    let first_move = arrivals[1] - switched;
    assert!((110_000..140_000).contains(&first_move), "{first_move}");
    let traced: Vec<f32> = records
        .iter()
        .filter_map(|r| match &r.entry {
            TraceEntry::Capacitance { value, .. } => Some(*value as f32),
            _ => None,
        })
        .collect();
    // The host's readings are among the traced ones (with the firmware's own 25 ms samples).
    assert!(
        readings.iter().all(|r| traced.contains(r)),
        "{readings:?} in {traced:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_microdrop3_device_file_drives_its_electrodes() -> R {
    let device = Device::microdrop3_default().map_err(|e| SimHostError::Sim(e.into()))?;
    let next = device
        .by_id("electrode001")
        .map(|e| e.channels.clone())
        .unwrap_or_default();
    assert_eq!(next.len(), 1);
    let opts = SimOptions {
        device: Some(device),
        virtual_clock: true,
        timing: Timing::Fast,
        ..SimOptions::default()
    };
    let (sim, mut host) = connect(opts).await?;
    sim.add_droplet("electrode000", sim.unit_volume("electrode000")?)?;
    assert!(host.update_state(hv_on()).await?);
    assert!(host.set_channels(&next).await?);
    sim.advance(1000 * MS);
    assert_eq!(sim.snapshot().droplets[0].electrode, "electrode001");
    let c = f64::from(host.call(Capacitance { n_samples: 50 }).await?);
    assert!(c > 20e-12, "a 6 mm electrode covered: {c}");
    sim.shutdown().await;
    Ok(())
}

/// A scenario touching noise, events, physics and time; the trace it leaves.
async fn scenario(seed: u64) -> Result<Vec<TraceRecord>, SimHostError> {
    let opts = SimOptions {
        seed,
        virtual_clock: true,
        shorted: vec![90],
        ..SimOptions::default()
    };
    let (sim, mut host) = connect(opts).await?;
    sim.add_droplet("electrode055", 2.0 * sim.unit_volume("electrode055")?)?;
    let update = State {
        capacitance_update_interval_ms: Some(50),
        event_mask: Some(u32::MAX),
        ..hv_on()
    };
    assert!(host.update_state(update).await?);
    sim.advance(250 * MS);
    assert!(host.set_channels(&[54, 56]).await?); // split
    sim.advance(500 * MS);
    host.call(Capacitance { n_samples: 10 }).await?;
    host.call(MeasureTemperature {}).await?;
    assert!(host.set_channels(&[55, 90]).await?); // merge back, and a short
    sim.advance(1500 * MS);
    let _ = host.take_events();
    let records = sim.trace();
    sim.shutdown().await;
    Ok(records)
}

#[tokio::test]
async fn same_seed_and_inputs_give_the_same_trace() -> R {
    let a = scenario(5).await?;
    let b = scenario(5).await?;
    let c = scenario(6).await?;
    assert!(a.len() > 50, "{}", a.len());
    assert_eq!(a, b);
    assert_ne!(a, c, "the seed drives the noise");
    let halted = a
        .iter()
        .any(|r| matches!(&r.entry, TraceEntry::Event { name, .. } if name == "halted"));
    assert!(halted, "the short halts the board");
    let split = a
        .iter()
        .any(|r| matches!(&r.entry, TraceEntry::Droplets { droplets } if droplets.len() == 2));
    assert!(split);
    Ok(())
}
