//! A private `mosquitto` broker per test: a child process on a free 127.0.0.1 port (plus a Unix
//! socket), killed on drop.

use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use dropbot_plugin::bus::{BusOptions, BusTransport};

/// How long a starting broker may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERM'd broker may take to exit before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Ports tried before giving up on "Address already in use".
const PORT_TRIES: usize = 20;

/// A temporary directory (removed on drop), world-writable because mosquitto drops root to its
/// own user.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("dropbot-mosquitto-")
            .tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
        Ok(TempDir(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A running private mosquitto with its default settings. Listens on `127.0.0.1:port()` and on
/// `socket_path()`, allows anonymous clients, keeps nothing across restarts (no persistence), no
/// packet size limit.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    tls_port: Option<u16>,
    dir: TempDir,
}

impl Mosquitto {
    /// Starts a broker on a free port and waits until it accepts connections. Installs
    /// nothing: `mosquitto` must be on `PATH` (Debian: `apt-get install mosquitto`).
    pub fn start() -> io::Result<Mosquitto> {
        Self::start_inner(false, None)
    }

    /// Like [`Mosquitto::start`], but only `user` with `password` may connect (anonymous
    /// clients are refused). Needs `mosquitto_passwd` (part of Debian's mosquitto package).
    pub fn start_with_password(user: &str, password: &str) -> io::Result<Mosquitto> {
        Self::start_inner(false, Some((user, password)))
    }

    /// Like [`Mosquitto::start`], with these users (name, password) only (anonymous clients
    /// are refused) and the access rules of `acl` (mosquitto's `acl_file` syntax).
    pub fn start_with_access(users: &[(&str, &str)], acl: &str) -> io::Result<Mosquitto> {
        let dir = TempDir::new()?;
        write_readable(&dir.path().join(ACL_FILE), acl.as_bytes())?;
        Self::start_in(dir, false, users)
    }

    /// Like [`Mosquitto::start`], plus a TLS listener on `tls_port()` whose server certificate
    /// (for `127.0.0.1` and `localhost`) is signed by the CA in `ca_pem()`. Needs the
    /// `openssl` command.
    pub fn start_tls() -> io::Result<Mosquitto> {
        Self::start_inner(true, None)
    }

    fn start_inner(tls: bool, credentials: Option<(&str, &str)>) -> io::Result<Mosquitto> {
        let users: Vec<(&str, &str)> = credentials.into_iter().collect();
        Self::start_in(TempDir::new()?, tls, &users)
    }

    fn start_in(dir: TempDir, tls: bool, users: &[(&str, &str)]) -> io::Result<Mosquitto> {
        if tls {
            make_certificates(dir.path())?;
        }
        make_password_file(dir.path(), users)?;
        let mut last_err = None;
        for _ in 0..PORT_TRIES {
            let port = free_port()?;
            let tls_port = if tls { Some(free_port()?) } else { None };
            match launch(dir.path(), port, tls_port) {
                Ok(child) => {
                    return Ok(Mosquitto {
                        child: Some(child),
                        port,
                        tls_port,
                        dir,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free port found")))
    }

    /// The TLS port on 127.0.0.1 (only after [`Mosquitto::start_tls`]).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// PEM of the CA that signed the TLS listener's certificate (after `start_tls`).
    pub fn ca_pem(&self) -> io::Result<Vec<u8>> {
        fs::read(self.dir.path().join("ca.crt"))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host to connect to: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Path of the broker's Unix socket listener.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(self.dir.path())
    }

    /// Bus options for plugin `name` connecting to this broker over TCP.
    pub fn bus_options(&self, name: &str) -> BusOptions {
        BusOptions::new(name, self.host(), self.port)
    }

    /// Bus options for plugin `name` connecting to this broker over its Unix socket.
    pub fn unix_bus_options(&self, name: &str) -> BusOptions {
        let mut o = BusOptions::new(name, self.host(), self.port);
        o.transport = BusTransport::Unix(self.socket_path());
        o
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Everything the broker logged so far (for failing tests).
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// Crash: SIGKILL, then wait for the process to be gone. Clients see a dead socket.
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Clean stop: SIGTERM, then wait (SIGKILL if it takes longer than a few seconds).
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            sleep(Duration::from_millis(5));
        }
        child.kill()?;
        child.wait().map(drop)
    }

    /// Starts the broker again (stopping it first if running): same port, same config, no
    /// retained messages or sessions (as after a crash without persistence).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match launch(self.dir.path(), self.port, self.tls_port) {
                // The port may be briefly taken by someone else; try the same port again.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    sleep(Duration::from_millis(50));
                }
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("mq.sock")
}

fn read_log(dir: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(dir.join("mosquitto.log")) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// Starts mosquitto with the config for `port` in `dir` and waits until both listeners are up.
/// "Address already in use" comes back as `ErrorKind::AddrInUse`.
fn launch(dir: &Path, port: u16, tls_port: Option<u16>) -> io::Result<Child> {
    let sock = socket_path(dir);
    let config_path = dir.join("mosquitto.conf");
    // Nothing but what the test needs (listeners, access, no persistence, logging): mosquitto's
    // defaults otherwise, Nagle's algorithm included, as users run it (see docs/benchmarks.md).
    let passwords = dir.join(PASSWORD_FILE);
    let mut access = if passwords.exists() {
        format!(
            "allow_anonymous false\npassword_file {}\n",
            passwords.display()
        )
    } else {
        "allow_anonymous true\n".to_owned()
    };
    let acl = dir.join(ACL_FILE);
    if acl.exists() {
        access += &format!("acl_file {}\n", acl.display());
    }
    let mut config = format!(
        "per_listener_settings false\n{access}persistence false\n\
         log_dest stderr\nlistener {port} 127.0.0.1\nlistener 0 {sock}\n",
        sock = sock.display(),
    );
    if let Some(tls_port) = tls_port {
        // TLS options apply to the listener defined just before them.
        config += &format!(
            "listener {tls_port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\n\
             keyfile {d}/server.key\n",
            d = dir.display()
        );
    }
    write_readable(&config_path, config.as_bytes())?;
    // A socket file left by a killed broker would block the new one.
    let _ = fs::remove_file(&sock);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("mosquitto.log"))?;
    let mut child = Command::new("mosquitto")
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run mosquitto: {e}")))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let log = read_log(dir);
            let kind = if log.contains("Address already in use") {
                io::ErrorKind::AddrInUse
            } else {
                io::ErrorKind::Other
            };
            return Err(io::Error::new(
                kind,
                format!("mosquitto exited ({status}): {log}"),
            ));
        }
        let tcp_up = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok();
        // Still alive after the connect: the listener is ours, not someone else's.
        if tcp_up && sock.exists() && child.try_wait()?.is_none() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("mosquitto did not accept connections: {}", read_log(dir)),
            ));
        }
        sleep(Duration::from_millis(5));
    }
}

/// Name of the password file in the broker's directory (its presence turns authentication on).
const PASSWORD_FILE: &str = "passwd";

/// Name of the ACL file in the broker's directory (its presence turns access rules on).
const ACL_FILE: &str = "acl";

/// A password file with `users` (none: no file), readable by the broker after it drops root.
fn make_password_file(dir: &Path, users: &[(&str, &str)]) -> io::Result<()> {
    let path = dir.join(PASSWORD_FILE);
    for (i, (user, password)) in users.iter().enumerate() {
        let create: &[&str] = if i == 0 { &["-b", "-c"] } else { &["-b"] };
        let out = Command::new("mosquitto_passwd")
            .args(create)
            .arg(&path)
            .args([user, password])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run mosquitto_passwd: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(io::Error::other(format!("mosquitto_passwd failed: {err}")));
        }
    }
    if users.is_empty() {
        return Ok(());
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
}

/// A throwaway CA and a server certificate for 127.0.0.1/localhost, made with `openssl`.
fn make_certificates(dir: &Path) -> io::Result<()> {
    let run = |args: &[&str]| -> io::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run openssl: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        Err(io::Error::other(format!("openssl {args:?} failed: {err}")))
    };
    let key = ["-newkey", "rsa:2048", "-nodes", "-days", "2"];
    let ca = [
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=dropbot-test-ca",
    ];
    run(&[&["req", "-x509"][..], &key, &ca].concat())?;
    run(&[
        &["req"][..],
        &key[..3],
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat())?;
    write_readable(
        &dir.join("san.ext"),
        b"subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "san.ext",
    ])?;
    // mosquitto reads these after dropping root.
    for f in ["ca.crt", "server.crt", "server.key"] {
        fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// A port that was free a moment ago (the caller retries if someone takes it meanwhile).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Writes a file mosquitto can read after dropping root.
fn write_readable(path: &Path, contents: &[u8]) -> io::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}
