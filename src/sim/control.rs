//! Live control of a running `simulate`: fault injection and chip handling as one-line
//! commands, typed on standard input or scheduled with `--at MS:COMMAND`.
//!
//! ```text
//! unplug | replug | reboot | stall | resume | chip-out | chip-in
//! corrupt FRACTION | drop FRACTION | delay MS | firmware-id TEXT | status | help
//! ```

use std::str::FromStr;
use std::time::Duration;

use super::{SimError, SimHandle};

/// The commands, for `help` and error messages.
pub const HELP: &str = "commands: unplug, replug, reboot, stall, resume, chip-out, chip-in, \
corrupt FRACTION, drop FRACTION, delay MS, firmware-id TEXT, status, help";

/// One control command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Close the pty: the host sees the device vanish.
    Unplug,
    /// A new pty at the same link path, fresh firmware.
    Replug,
    /// Restart the MCU (state lost, saved config kept; the USB device re-enumerates).
    Reboot,
    /// Stop answering (`true`) or answer again (`false`).
    Stall(bool),
    /// Insert (`true`) or remove (`false`) the chip.
    Chip(bool),
    /// Fraction of written bytes to corrupt.
    Corrupt(f64),
    /// Fraction of written bytes to drop.
    Drop(f64),
    /// Delay before every reply and event.
    Delay(Duration),
    /// Answer the ID handshake with this text.
    FirmwareId(String),
    /// Print the board's state.
    Status,
    /// Print the commands.
    Help,
}

impl FromStr for Command {
    type Err = SimError;

    fn from_str(line: &str) -> Result<Self, SimError> {
        let line = line.trim();
        let (word, arg) = line.split_once(' ').unwrap_or((line, ""));
        let arg = arg.trim();
        let bad = |why: &str| SimError::Control(format!("`{line}`: {why}; {HELP}"));
        let fraction = || {
            arg.parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or_else(|| bad("expected a fraction from 0 to 1"))
        };
        Ok(match word {
            "unplug" => Command::Unplug,
            "replug" => Command::Replug,
            "reboot" => Command::Reboot,
            "stall" => Command::Stall(true),
            "resume" => Command::Stall(false),
            "chip-out" => Command::Chip(false),
            "chip-in" => Command::Chip(true),
            "corrupt" => Command::Corrupt(fraction()?),
            "drop" => Command::Drop(fraction()?),
            "delay" => Command::Delay(Duration::from_millis(
                arg.parse().map_err(|_| bad("expected milliseconds"))?,
            )),
            "firmware-id" if !arg.is_empty() => Command::FirmwareId(arg.to_owned()),
            "status" => Command::Status,
            "help" | "?" => Command::Help,
            _ => return Err(bad("unknown command")),
        })
    }
}

/// A command scheduled by `--at MS:COMMAND`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// When, after the start.
    pub after: Duration,
    /// What.
    pub command: Command,
}

impl FromStr for Scheduled {
    type Err = SimError;

    fn from_str(spec: &str) -> Result<Self, SimError> {
        let (ms, command) = spec.split_once(':').ok_or_else(|| {
            SimError::Control(format!(
                "--at `{spec}`: expected MS:COMMAND, e.g. 2000:unplug"
            ))
        })?;
        let ms: u64 = ms
            .trim()
            .parse()
            .map_err(|_| SimError::Control(format!("--at `{spec}`: `{ms}` is not milliseconds")))?;
        Ok(Scheduled {
            after: Duration::from_millis(ms),
            command: command.parse()?,
        })
    }
}

/// Carry out `command`; returns a line for the user.
pub async fn apply(sim: &SimHandle, command: &Command) -> Result<String, SimError> {
    let mut faults = sim.faults();
    let reply = match command {
        Command::Unplug => {
            sim.unplug().await;
            return Ok("unplugged".into());
        }
        Command::Replug => return Ok(format!("replugged at {}", sim.replug().await?.display())),
        Command::Reboot => {
            let path = sim.reboot().await?;
            return Ok(format!("rebooted; re-enumerated at {}", path.display()));
        }
        Command::Chip(inserted) => {
            sim.insert_chip(*inserted);
            return Ok(if *inserted {
                "chip inserted"
            } else {
                "chip removed"
            }
            .into());
        }
        Command::Status => return Ok(format!("{:?}", sim.snapshot())),
        Command::Help => return Ok(HELP.into()),
        Command::Stall(on) => {
            faults.stall = *on;
            if *on { "stalled" } else { "answering again" }.to_owned()
        }
        Command::Corrupt(f) => {
            faults.corrupt_fraction = *f;
            format!("corrupting {f} of written bytes")
        }
        Command::Drop(f) => {
            faults.drop_fraction = *f;
            format!("dropping {f} of written bytes")
        }
        Command::Delay(d) => {
            faults.reply_delay = *d;
            format!("delaying replies by {d:?}")
        }
        Command::FirmwareId(id) => {
            faults.firmware_id = Some(id.clone());
            format!("answering the handshake with `{id}`")
        }
    };
    sim.set_faults(faults);
    Ok(reply)
}

/// Run the `--at` schedule.
pub async fn run_schedule(sim: SimHandle, mut schedule: Vec<Scheduled>) {
    schedule.sort_by_key(|s| s.after);
    let start = tokio::time::Instant::now();
    for item in schedule {
        tokio::time::sleep_until(start + item.after).await;
        report(apply(&sim, &item.command).await);
    }
}

/// Read commands from standard input until it closes.
///
/// Lines are read on a thread of their own, not with tokio's stdin: tokio reads stdin on a
/// blocking-pool thread that the runtime waits for at shutdown, so a process whose stdin stays
/// open (a terminal, a pipe) would not exit on SIGINT or SIGTERM until the next line came. A
/// plain thread blocked in `read` does not hold the process back.
pub async fn serve_stdin(sim: SimHandle) {
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    let reader = std::thread::Builder::new()
        .name("simulate-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = reader {
        eprintln!("simulate: cannot read commands from standard input: {e}");
        return;
    }
    while let Some(line) = lines.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        match line.parse::<Command>() {
            Ok(command) => report(apply(&sim, &command).await),
            Err(e) => report(Err(e)),
        }
    }
}

fn report(outcome: Result<String, SimError>) {
    match outcome {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_schedules() {
        assert_eq!("unplug".parse::<Command>().unwrap(), Command::Unplug);
        assert_eq!(" stall ".parse::<Command>().unwrap(), Command::Stall(true));
        assert_eq!(
            "corrupt 0.25".parse::<Command>().unwrap(),
            Command::Corrupt(0.25)
        );
        assert_eq!(
            "delay 20".parse::<Command>().unwrap(),
            Command::Delay(Duration::from_millis(20))
        );
        assert!("corrupt 2".parse::<Command>().is_err());
        assert!("fly"
            .parse::<Command>()
            .unwrap_err()
            .to_string()
            .contains("unplug"));
        assert_eq!(
            "1500:replug".parse::<Scheduled>().unwrap(),
            Scheduled {
                after: Duration::from_millis(1500),
                command: Command::Replug
            }
        );
        assert!("replug".parse::<Scheduled>().is_err());
        assert!("x:replug".parse::<Scheduled>().is_err());
    }
}
