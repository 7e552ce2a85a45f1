//! The `simulate` subcommand's live fault control, through the real binary: commands on stdin
//! and `--at MS:COMMAND`, observed by a host that opens the link path like a serial port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dropbot_plugin::board::{DropBot, LinkOptions};
use firmware_protocol::TableSet;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

fn simulate(link: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dropbot-plugin"))
        .args(["simulate", "--timing", "fast", "--link"])
        .arg(link)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run dropbot-plugin simulate")
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

async fn send(child: &mut Child, line: &str) {
    let stdin = child.stdin.as_mut().expect("piped stdin");
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    // The command is applied asynchronously by the simulator's stdin task.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn link_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("dropbot-sim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_commands_stall_unplug_and_replug_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(&dir);
    let mut child = simulate(&link, &[]);
    wait_link(&link, true).await;
    assert_eq!(handshake(&link).await.unwrap(), "dropbot::1.0.0-sim");

    send(&mut child, "firmware-id teensy::2.0").await;
    let err = handshake(&link).await.unwrap_err();
    assert!(err.contains("teensy"), "{err}");
    send(&mut child, "firmware-id dropbot::1.0.0-sim").await;

    send(&mut child, "stall").await;
    let err = handshake(&link).await.unwrap_err();
    assert!(err.contains("no reply"), "{err}");
    send(&mut child, "resume").await;
    assert!(handshake(&link).await.is_ok());

    send(&mut child, "unplug").await;
    wait_link(&link, false).await;
    send(&mut child, "replug").await;
    wait_link(&link, true).await;
    assert!(handshake(&link).await.is_ok());

    // A bad command is reported, and the simulator keeps running.
    send(&mut child, "fly away").await;
    assert!(
        child.try_wait().unwrap().is_none(),
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
        stdout.contains("dropbot::1.0.0-sim (120 channels, uuid "),
        "{stdout}"
    );
    assert!(stdout.contains("/dev/null: not a DropBot"), "{stdout}");
}
