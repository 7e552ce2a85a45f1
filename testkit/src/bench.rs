//! Shared pieces of the benchmarks: latency histograms in microseconds, their table rows, and
//! the bare pty echo every round trip is compared with.

use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

/// A histogram of 1 µs to 10 s with 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 10_000_000, 3)
}

/// A duration in whole microseconds, at least 1 (the histogram's lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A Markdown table row: `| name | n | p50 | p99 | max |`.
pub fn row(name: &str, h: &Histogram<u64>) -> String {
    format!(
        "| {name} | {} | {} | {} | {} |",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    )
}

/// A pty whose master echoes every byte back; the returned port end is opened by path, as a
/// tokio serial stream: the bare cost of a round trip through a pty.
pub fn echo_pty() -> io::Result<SerialStream> {
    let (master, slave, path) = echo_master()?;
    let port = tokio_serial::new(&path, 115_200).open_native_async()?;
    drop(slave);
    spawn_echo(master);
    Ok(port)
}

/// An [`echo_pty`] whose port end is blocking, for a thread of its own that writes and reads
/// the port itself (as the actuation engine's thread does).
pub fn echo_pty_blocking() -> io::Result<Box<dyn SerialPort>> {
    let (master, slave, path) = echo_master()?;
    let mut port = tokio_serial::new(&path, 115_200).open()?;
    drop(slave);
    port.set_timeout(Duration::from_secs(5))?;
    spawn_echo(master);
    Ok(port)
}

/// A pty's master end, its port end (held until the port is opened by path) and that path.
fn echo_master() -> io::Result<(SerialStream, SerialStream, String)> {
    let (master, slave) = SerialStream::pair()?;
    let path = slave
        .name()
        .ok_or_else(|| io::Error::other("the pty has no name"))?;
    Ok((master, slave, path))
}

/// Echo every byte the master end reads, on a task of the current runtime.
fn spawn_echo(master: SerialStream) {
    tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(master);
        let mut buf = [0u8; 4096];
        while let Ok(n) = rd.read(&mut buf).await {
            let echoed = match buf.get(..n) {
                Some(bytes) if n > 0 => wr.write_all(bytes).await.is_ok(),
                _ => false,
            };
            if !echoed {
                return;
            }
        }
    });
}

/// One echo of `msg` over an [`echo_pty`] port; `back` must be as long as `msg`.
pub async fn echo_once(
    port: &mut SerialStream,
    msg: &[u8],
    back: &mut [u8],
) -> io::Result<Duration> {
    let t = Instant::now();
    port.write_all(msg).await?;
    port.read_exact(back).await?;
    Ok(t.elapsed())
}
