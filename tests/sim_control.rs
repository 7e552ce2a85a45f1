//! The `simulate` subcommand's live fault control, through the real binary: commands on stdin
//! and `--at MS:COMMAND`, observed by a host that opens the link path like a serial port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dropbot_plugin::board::{DropBot, LinkOptions};
use firmware_protocol::TableSet;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

fn simulate(link: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dropbot-plugin"))
        .args(["simulate", "--timing", "fast", "--link"])
        .arg(link)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run dropbot-plugin simulate")
}

/// A `simulate` child whose answers to stdin commands are read back.
struct Controlled {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    err: Lines<BufReader<ChildStderr>>,
}

impl Controlled {
    fn new(mut child: Child) -> Self {
        let out = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let err = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        Self { child, out, err }
    }

    /// Send a command; its answer (stdout) or complaint (stderr), once it was carried out.
    async fn send(&mut self, line: &str) -> String {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
        let answer = async {
            loop {
                tokio::select! {
                    Ok(Some(l)) = self.out.next_line() => {
                        // Skip the banner printed at start.
                        if !l.starts_with("simulated DropBot") && !l.starts_with("commands:") {
                            return l;
                        }
                    }
                    Ok(Some(l)) = self.err.next_line() => return l,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .unwrap_or_else(|_| panic!("no answer to `{line}` within 10 s"))
    }
}

/// Wait until the link path does (or does not) lead to a device.
async fn wait_link(link: &Path, present: bool) {
    for _ in 0..200 {
        if link.exists() == present {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("link {} never became present={present}", link.display());
}

async fn handshake(link: &Path) -> Result<String, String> {
    let options = LinkOptions {
        handshake_timeout: Duration::from_millis(300),
        ..LinkOptions::default()
    };
    let path = link.display().to_string();
    match DropBot::open(&path, &TableSet::builtin(), options).await {
        Ok(bot) => {
            let id = bot.info().identity.clone();
            bot.disconnect().await;
            Ok(id)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn link_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("dropbot-sim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_commands_stall_unplug_and_replug_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(&dir);
    let mut sim = Controlled::new(simulate(&link, &[]));
    wait_link(&link, true).await;
    assert_eq!(handshake(&link).await.unwrap(), "dropbot::1.73.6");

    let answer = sim.send("firmware-id teensy::2.0").await;
    assert!(answer.contains("teensy::2.0"), "{answer}");
    let err = handshake(&link).await.unwrap_err();
    assert!(err.contains("teensy"), "{err}");
    sim.send("firmware-id dropbot::1.73.6").await;

    assert_eq!(sim.send("stall").await, "stalled");
    let err = handshake(&link).await.unwrap_err();
    assert!(err.contains("no reply"), "{err}");
    sim.send("resume").await;
    assert!(handshake(&link).await.is_ok());

    assert_eq!(sim.send("unplug").await, "unplugged");
    assert!(!link.exists());
    assert!(sim.send("replug").await.starts_with("replugged at"));
    assert!(handshake(&link).await.is_ok());
    let answer = sim.send("reboot").await;
    assert!(answer.starts_with("rebooted; re-enumerated at"), "{answer}");
    assert!(handshake(&link).await.is_ok());

    // A bad command is reported, and the simulator keeps running.
    let complaint = sim.send("fly away").await;
    assert!(complaint.contains("unknown command"), "{complaint}");
    assert!(
        sim.child.try_wait().unwrap().is_none(),
        "simulate exited on a bad command"
    );
    assert!(handshake(&link).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_commands_run_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(&dir);
    let _child = simulate(&link, &["--at", "300:unplug", "--at", "900:replug"]);
    wait_link(&link, true).await;
    wait_link(&link, false).await;
    wait_link(&link, true).await;
    assert!(handshake(&link).await.is_ok());
}

#[test]
fn a_bad_schedule_is_refused_with_the_command_list() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropbot-plugin"))
        .args(["simulate", "--at", "100:explode"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unplug"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_can_open_and_close_the_link_again_and_again() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(&dir);
    let _child = simulate(&link, &[]);
    wait_link(&link, true).await;
    for round in 0..8 {
        if let Err(e) = handshake(&link).await {
            panic!("round {round}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_probe_names_the_board_behind_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(&dir);
    let _child = simulate(&link, &[]);
    wait_link(&link, true).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dropbot-plugin"))
        .args(["ports", "--probe", "--path"])
        .arg(&link)
        .args(["--path", "/dev/null"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("dropbot::1.73.6 (120 channels, uuid "),
        "{stdout}"
    );
    assert!(stdout.contains("/dev/null: not a DropBot"), "{stdout}");
}

/// SIGTERM and SIGINT stop `simulate` promptly, HV off and link removed, even while its
/// standard input stays open and silent (a terminal nobody types in, a pipe nobody writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_stop_simulate_while_its_stdin_stays_open() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let link = link_in(&dir);
        let mut child = simulate(&link, &[]);
        // Held (open, silent) until the child has exited: `Child::wait` would close it.
        let stdin = child.stdin.take().expect("piped stdin");
        wait_link(&link, true).await;
        let pid = i32::try_from(child.id().expect("running")).unwrap();
        // SAFETY: kill(2) with the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap_or_else(|_| panic!("signal {signal}: still running after 10 s"))
            .unwrap();
        assert!(status.success(), "signal {signal}: {status:?}");
        assert!(link.symlink_metadata().is_err(), "the link is removed");
        drop(stdin);
    }
}
