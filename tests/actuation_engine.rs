//! The actuation engine on its own thread, driving the simulated DropBot through a real pty:
//! a sequence in order on its schedule, safety requests that overtake and cancel, a halt
//! that wins over a running sequence, and coalescing of a flood of electrode requests.
//! Every check reads the simulator (its snapshot or trace), not the engine's own account.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::actuation::{
    Actuator, DropBotBoard, EndReason, EngineOptions, Halt, LevelTarget, Notice, Ordered, Phase,
    Program, Response, Streams,
};
use dropbot_plugin::board::{DropBot, LinkOptions};
use dropbot_plugin::sim::{self, SimHandle, SimOptions, Timing, TraceEntry};
use firmware_protocol::TableSet;
use serde_json::json;

const LONG: Option<Duration> = Some(Duration::from_secs(20));

async fn engine(timing: Timing) -> (SimHandle, Actuator, Streams) {
    let sim = sim::spawn_pty(SimOptions {
        timing,
        ..SimOptions::default()
    })
    .await
    .expect("simulator");
    let path = sim.path().display().to_string();
    let bot = DropBot::open(&path, &TableSet::builtin(), LinkOptions::default())
        .await
        .expect("connect");
    let (actuator, streams) = Actuator::spawn(EngineOptions {
        realtime: false,
        ..EngineOptions::default()
    })
    .expect("engine");
    let board = DropBotBoard::new(bot, tokio::runtime::Handle::current(), 0);
    actuator.attach(Box::new(board), 1);
    (sim, actuator, streams)
}

fn set(channels: &[u16]) -> BTreeSet<u16> {
    channels.iter().copied().collect()
}

/// The channel sets the simulated board drove, in order.
fn driven(sim: &SimHandle) -> Vec<Vec<u16>> {
    sim.trace()
        .into_iter()
        .filter_map(|r| match r.entry {
            TraceEntry::Channels { actuated, .. } => Some(actuated),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_runs_its_phases_in_order_on_schedule() {
    let (sim, actuator, mut streams) = engine(Timing::Fast).await;
    let phases = [vec![1, 2], vec![3], vec![4, 5, 6]]
        .iter()
        .map(|c| Phase::timed(set(c), Duration::from_millis(30)))
        .collect();
    let program = Program {
        repeats: 2,
        ..Program::new(phases)
    };
    let response = actuator.submit(Ordered::Run(program)).wait(LONG).await;
    let Ok(Response::Sequence(report)) = response else {
        panic!("{response:?}");
    };
    assert_eq!(report.outcome, EndReason::Duration, "{report:?}");
    assert_eq!(report.phases.len(), 6);
    for (i, phase) in report.phases.iter().enumerate() {
        assert_eq!(phase.index, i);
        assert_eq!(phase.reason, EndReason::Duration);
        // Never early: the frame is made ready before the planned start, written after it.
        assert!(phase.issued >= phase.planned_start, "{phase:?}");
        assert!(phase.started >= phase.issued);
        assert!(phase.confirmed >= phase.planned_start);
    }
    // Progress in the order it happened (the engine holds a phase's end notice until the
    // next frame is written; it must not overtake that phase's start notice).
    let mut progress = Vec::new();
    while let Ok(notice) = streams.notices.try_recv() {
        match notice {
            Notice::PhaseStarted { index, .. } => progress.push(format!("start {index}")),
            Notice::PhaseEnded(p) => progress.push(format!("end {}", p.index)),
            _ => {}
        }
    }
    let want: Vec<String> = (0..6)
        .flat_map(|i| [format!("start {i}"), format!("end {i}")])
        .collect();
    assert_eq!(progress, want);
    // Timed phases are planned back to back: the schedule does not drift with lateness.
    for pair in report.phases.windows(2) {
        assert_eq!(
            pair[1].planned_start - pair[0].planned_start,
            Duration::from_millis(30)
        );
    }
    let once = [vec![1, 2], vec![3], vec![4, 5, 6]];
    let want: Vec<Vec<u16>> = once.iter().chain(once.iter()).cloned().collect();
    let seen = driven(&sim);
    let tail = &seen[seen.len() - want.len()..];
    assert_eq!(tail, want.as_slice(), "{seen:?}");
    // HV went on with the sequence (auto-HV), and the last phase stays on.
    let snap = sim.snapshot();
    assert!(snap.hv_enabled);
    assert_eq!(snap.actuated, vec![4, 5, 6]);
    actuator.shutdown().await.unwrap();
    // Shutting down leaves the board safe.
    let snap = sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hv_on_then_off_then_all_off_sent_without_waiting_end_off() {
    let (sim, actuator, _streams) = engine(Timing::Realistic).await;
    let g = actuator.submit_level(LevelTarget {
        channels: set(&[7, 8]),
        live: true,
    });
    let on = actuator.submit(Ordered::HvOn);
    let off = actuator.hv_off();
    let all_off = actuator.all_off();
    let on = on.wait(LONG).await;
    let off = off.wait(LONG).await;
    let all_off = all_off.wait(LONG).await;
    // The HV-on that was still waiting was cancelled by the later "off".
    assert!(on.is_err() || !sim.snapshot().hv_enabled, "{on:?}");
    assert!(off.is_ok() && all_off.is_ok(), "{off:?} {all_off:?}");
    let _ = actuator.wait_level(g, Duration::from_secs(20)).await;
    let snap = sim.snapshot();
    assert!(!snap.hv_enabled, "{snap:?}");
    assert!(snap.actuated.is_empty(), "{snap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_during_a_sequence_wins_and_nothing_is_energised_after_it() {
    let (sim, actuator, _streams) = engine(Timing::Realistic).await;
    let phases = (0..50u16)
        .map(|c| Phase::timed(set(&[c]), Duration::from_millis(20)))
        .collect();
    let run = actuator.submit(Ordered::Run(Program::new(phases)));
    // Halt once the sequence is under way.
    let mut picture = actuator.picture();
    picture
        .wait_for(|p| matches!(p.sequence, dropbot_plugin::actuation::SequenceState::Running { phase, .. } if phase >= 3))
        .await
        .unwrap();
    let halt = actuator.halt(Halt::new("requested", json!("test")));
    let report = match run.wait(LONG).await {
        Ok(Response::Sequence(r)) => r,
        other => panic!("{other:?}"),
    };
    assert!(halt.wait(LONG).await.is_ok());
    assert_eq!(report.outcome, EndReason::Halted, "{report:?}");
    assert!(report.phases.len() < 50);
    // After the halt, no channel frame and no HV-on reached the board.
    let trace = sim.trace();
    let halt_at = trace
        .iter()
        .rposition(|r| matches!(&r.entry, TraceEntry::Rx { command: Some(c), .. } if c == "halt"))
        .expect("the board got the halt");
    for r in &trace[halt_at..] {
        match &r.entry {
            TraceEntry::Rx {
                command: Some(c), ..
            } => {
                assert_ne!(c, "set_state_of_channels", "{r:?}");
            }
            TraceEntry::Hv { enabled, .. } => assert!(!enabled, "{r:?}"),
            _ => {}
        }
    }
    // Electrodes are refused until HV is switched on again by request.
    let g = actuator.submit_level(LevelTarget {
        channels: set(&[9]),
        live: true,
    });
    let refused = actuator.wait_level(g, Duration::from_secs(20)).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(!sim.snapshot().hv_enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_electrode_requests_ends_at_the_newest_and_coalesces() {
    let (sim, actuator, _streams) = engine(Timing::Realistic).await;
    let frames_before = driven(&sim).len();
    let mut last = 0;
    for i in 0..200u16 {
        last = actuator.submit_level(LevelTarget {
            channels: set(&[i % 120, (i + 1) % 120]),
            live: true,
        });
    }
    let picture = actuator
        .wait_level(last, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(picture.actuated, set(&[199 % 120, 200 % 120]));
    assert_eq!(sim.snapshot().actuated, vec![79, 80]);
    // A realistic board takes ~5 ms per frame: far fewer frames than requests reached it.
    let frames = driven(&sim).len() - frames_before;
    assert!(frames < 200, "{frames} frames for 200 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_hold_lets_electrodes_and_requests_through_while_it_keeps_time() {
    let (sim, actuator, _streams) = engine(Timing::Fast).await;
    // A protocol step: its electrodes held for a long time (MicroDrop's min-duration).
    let hold = Program {
        needs_hv: false,
        ..Program::new(vec![Phase::timed(set(&[1]), Duration::from_secs(30))])
    };
    let run = actuator.submit(Ordered::Run(hold));
    let mut picture = actuator.picture();
    picture.wait_for(|p| p.actuated == set(&[1])).await.unwrap();
    // A route frame during the step replaces its electrodes at once...
    let g = actuator.submit_level(LevelTarget {
        channels: set(&[5, 6]),
        live: true,
    });
    let after = actuator
        .wait_level(g, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(after.actuated, set(&[5, 6]));
    assert_eq!(sim.snapshot().actuated, vec![5, 6]);
    // ...and a voltage put is answered long before the step ends.
    let put = actuator.submit(Ordered::Waveform {
        voltage: Some(90.0),
        frequency: None,
    });
    assert!(put.wait(Some(Duration::from_secs(20))).await.is_ok());
    assert_eq!(sim.snapshot().voltage_target, 90.0);
    // The hold is still on its clock; stop ends it.
    assert!(matches!(
        actuator.picture().borrow().sequence,
        dropbot_plugin::actuation::SequenceState::Running { .. }
    ));
    actuator.stop().wait(LONG).await.unwrap();
    let report = match run.wait(LONG).await {
        Ok(Response::Sequence(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.outcome, EndReason::Stopped);
    assert!(sim.snapshot().actuated.is_empty());
    actuator.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_short_detection_does_not_trip_the_armed_failsafe() {
    // 40 channels tested 150 ms each hold the firmware's loop ~6.4 s: longer than the 5 s
    // failsafe the engine arms, which must be stretched for the call.
    let sim = sim::spawn_pty(SimOptions {
        timing: Timing::Realistic,
        channels: 40,
        ..SimOptions::default()
    })
    .await
    .expect("simulator");
    sim.set_shorted(vec![3]);
    let path = sim.path().display().to_string();
    let bot = DropBot::open(&path, &TableSet::builtin(), LinkOptions::default())
        .await
        .expect("connect");
    let (actuator, _streams) = Actuator::spawn(EngineOptions {
        realtime: false,
        ..EngineOptions::default()
    })
    .expect("engine");
    let board = DropBotBoard::new(bot.clone(), tokio::runtime::Handle::current(), 0);
    actuator.attach(Box::new(board), 1);
    let mut picture = actuator.picture();
    picture.wait_for(|p| p.failsafe_armed).await.unwrap();
    let shorts = actuator
        .submit(Ordered::DetectShorts { delay_ms: 150 })
        .wait(Some(Duration::from_secs(60)))
        .await;
    assert!(
        matches!(&shorts, Ok(Response::Shorts(s, _)) if *s == vec![3]),
        "{shorts:?}"
    );
    assert!(
        bot.is_connected(),
        "the board restarted: its watchdog fired"
    );
    let resets = sim
        .trace()
        .iter()
        .filter(|r| matches!(r.entry, TraceEntry::Reset { .. }))
        .count();
    assert_eq!(resets, 0);
    actuator.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_behind_its_schedule_still_feeds_the_failsafe() {
    // 1 ms phases on a board that takes ~10 ms per frame: a phase is always due. For longer
    // than the 5 s failsafe, the keep-alives must still go out.
    let (sim, actuator, _streams) = engine(Timing::Realistic).await;
    let mut picture = actuator.picture();
    picture.wait_for(|p| p.failsafe_armed).await.unwrap();
    let phases = (0..600u16)
        .map(|i| Phase::timed(set(&[i % 100]), Duration::from_millis(1)))
        .collect();
    let report = match actuator
        .submit(Ordered::Run(Program::new(phases)))
        .wait(Some(Duration::from_secs(120)))
        .await
    {
        Ok(Response::Sequence(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.outcome, EndReason::Duration, "{:?}", report.error);
    let resets = sim
        .trace()
        .iter()
        .filter(|r| matches!(r.entry, TraceEntry::Reset { .. }))
        .count();
    assert_eq!(resets, 0, "the board's watchdog fired");
    let refreshes = sim
        .trace()
        .iter()
        .filter(|r| {
            matches!(&r.entry, TraceEntry::Rx { command: Some(c), .. } if c == "watchdog_refresh")
        })
        .count();
    assert!(refreshes >= 2, "{refreshes} refreshes");
    actuator.shutdown().await.unwrap();
}
