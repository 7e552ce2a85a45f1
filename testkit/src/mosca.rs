//! MicroDrop 3's own broker for tests: npm `mosca` 2.8.3 started by `tests/interop/mosca/broker.js`
//! as `@micropede/broker` starts it (MQTT over TCP and websockets, LevelUp persistence, presence
//! signals), on ports the OS picks, killed on drop. Mosca delivers every message with the retain
//! flag cleared, retained ones at subscription included.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde::Deserialize;

use super::node::{interop_dir, npm_ci};

/// How long a starting broker may take to print its ports (node loads ~500 modules).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `drop-clients` command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Ports {
    port: u16,
    ws_port: u16,
}

/// A running private mosca broker (a `node` child process).
pub struct Mosca {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Option<mpsc::Receiver<String>>,
    port: u16,
    ws_port: u16,
    log: PathBuf,
}

impl Mosca {
    /// Installs the fixture's npm packages if needed (`npm ci`), starts the broker on free
    /// ports and waits until it accepts connections.
    pub fn start() -> io::Result<Mosca> {
        let dir = interop_dir("mosca");
        npm_ci(&dir)?;
        let log = std::env::temp_dir().join(format!("dropbot-mosca-{}.log", uuid::Uuid::new_v4()));
        let mut mosca = Mosca {
            child: None,
            stdin: None,
            lines: None,
            port: 0,
            ws_port: 0,
            log,
        };
        mosca.launch(0, 0)?;
        Ok(mosca)
    }

    fn launch(&mut self, port: u16, ws_port: u16) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new("node")
            .arg("broker.js")
            .args([
                "--port",
                &port.to_string(),
                "--ws-port",
                &ws_port.to_string(),
            ])
            .current_dir(interop_dir("mosca"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run node: {e}")))?;
        let lines = child.stdout.take().map(read_lines);
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.lines = lines;
        let first = self.next_line(READY_TIMEOUT, "mosca to start")?;
        let ports: Ports = serde_json::from_str(&first)
            .map_err(|e| io::Error::other(format!("mosca said {first:?}: {e}")))?;
        self.port = ports.port;
        self.ws_port = ports.ws_port;
        Ok(())
    }

    fn next_line(&mut self, timeout: Duration, what: &str) -> io::Result<String> {
        let line = self
            .lines
            .as_ref()
            .map(|l| l.recv_timeout(timeout))
            .ok_or_else(|| io::Error::other("mosca is not running"))?;
        line.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out waiting for {what}: {}", self.log()),
            )
        })
    }

    /// The MQTT TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The MQTT-over-websockets port on 127.0.0.1 (MicroDrop's UI in the browser uses it).
    pub fn ws_port(&self) -> u16 {
        self.ws_port
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// What the broker wrote on stderr so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Cuts every client's connection without a word (as a network failure does); retained
    /// messages stay. Returns how many clients were connected.
    pub fn drop_clients(&mut self) -> io::Result<u64> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("mosca is not running"))?;
        stdin.write_all(b"drop-clients\n")?;
        stdin.flush()?;
        let answer = self.next_line(COMMAND_TIMEOUT, "mosca to drop its clients")?;
        let value: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|e| io::Error::other(format!("mosca said {answer:?}: {e}")))?;
        value["dropped"]
            .as_u64()
            .ok_or_else(|| io::Error::other(format!("mosca said {answer:?}")))
    }

    /// Crash: SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) -> io::Result<()> {
        self.stdin = None;
        self.lines = None;
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the broker again on the same ports (killing it first if running); its retained
    /// messages are gone, as after a crash of a broker without persistence.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch(self.port, self.ws_port) {
                Ok(()) => return Ok(()),
                // The old sockets may still be closing.
                Err(_) if std::time::Instant::now() < deadline => {
                    self.kill()?;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Mosca {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = fs::remove_file(&self.log);
    }
}

/// Forwards the child's stdout line by line (a thread, so waits can time out).
fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}
