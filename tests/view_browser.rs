//! The live view in a real browser: the `demo` binary (embedded broker on free ports, simulated
//! board with a droplet on electrode030, plugin, view), Debian's Chromium driven headless by
//! `tests/view_browser/drive.mjs` (playwright-core, pinned in its package-lock.json). The page
//! opens, an electrode next to the droplet is clicked; the simulator's trace must show the
//! droplet moving onto it, and the screenshot must show the chip with that electrode lit.
//!
//! Needs `chromium`, `node` and `npm` (`.ci/run` installs them); `npm ci` runs once and its
//! `node_modules` stays.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dropbot_plugin::device::Device;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_dropbot-plugin");
const CHROMIUM: &str = "/usr/bin/chromium";
const DROPLET_AT: &str = "electrode030";

fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/view_browser")
}

/// Fails with what to install when `tool --version` does not run.
fn require(tool: &str, install: &str) {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is needed by the browser test: `{install}` (`.ci/run` does)"
    );
}

/// `npm ci` from the committed lock file, unless an earlier run installed it.
fn install_driver(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return;
    }
    let out = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "npm ci failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The running demo and the page's address.
struct Demo {
    child: Child,
    url: String,
    log: PathBuf,
}

/// Starts `demo` on free ports (again, if another process took one in between) and reads the
/// view's address from its banner.
async fn start_demo(dir: &Path, trace: &Path) -> Demo {
    let log = dir.join("demo.log");
    for _ in 0..5 {
        let mut child = Command::new(BINARY)
            .args(["demo", "--seconds", "300", "--view", "127.0.0.1:0"])
            .args(["--mqtt-port", &free_port().to_string()])
            .args(["--ws-port", &free_port().to_string()])
            .arg("--trace")
            .arg(trace)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.trim().strip_prefix("live view:") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    return Some(url.to_owned()).filter(|u| u.starts_with("http://"));
                }
            }
            None
        })
        .await
        .expect("the demo prints its banner within 30 s");
        if let Some(url) = banner {
            // Keep reading stdout so that the demo never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Demo { child, url, log };
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains("in use"), "the demo failed:\n{text}");
        let _ = child.wait().await;
    }
    panic!("no free ports for the demo after 5 attempts");
}

/// The electrode to click (next to the droplet) and one far from it, for the picture.
fn electrodes() -> (String, String) {
    let device = Device::microdrop3_default().expect("the default chip");
    let at = device
        .index_of(DROPLET_AT)
        .expect("the droplet's electrode");
    let next = device.neighbours(at).first().copied().expect("a neighbour");
    let here = device.electrodes()[at].centroid;
    let far = device
        .electrodes()
        .iter()
        .max_by(|a, b| {
            let (da, db) = ((a.centroid - here).norm(), (b.centroid - here).norm());
            da.total_cmp(&db)
        })
        .expect("electrodes");
    (device.electrodes()[next].id.clone(), far.id.clone())
}

/// The trace's JSON lines.
fn trace_records(trace: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(trace).expect("the trace file");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Pixels of the screenshot inside a CSS-pixel box.
fn pixels_in(png: &Path, boxed: &Value, dpr: f64) -> Vec<[u8; 3]> {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buffer).expect("a frame");
    let channels = info.color_type.samples();
    let at = |k: &str| boxed[k].as_f64().expect("a box") * dpr;
    let (x0, y0) = (at("x").max(0.0) as u32, at("y").max(0.0) as u32);
    let (x1, y1) = (
        (at("x") + at("width")) as u32,
        (at("y") + at("height")) as u32,
    );
    let mut out = Vec::new();
    for y in y0..y1.min(info.height) {
        for x in x0..x1.min(info.width) {
            let i = (y as usize * info.width as usize + x as usize) * channels;
            out.push([buffer[i], buffer[i + 1], buffer[i + 2]]);
        }
    }
    out
}

/// The page's colour for an actuated electrode (#ff8a00), also under a droplet's light tint.
fn lit(p: &[u8; 3]) -> bool {
    p[0] >= 180 && (80..=190).contains(&p[1]) && p[2] <= 120
}

fn share(pixels: &[[u8; 3]], test: impl Fn(&[u8; 3]) -> bool) -> f64 {
    pixels.iter().filter(|p| test(p)).count() as f64 / pixels.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_in_chromium_moves_the_droplet_and_the_page_shows_it() {
    require(CHROMIUM, "apt-get install chromium");
    require("node", "apt-get install nodejs");
    require("npm", "apt-get install npm");
    let driver = driver_dir();
    install_driver(&driver);
    let dir = tempfile::tempdir().expect("a temp dir");
    let trace = dir.path().join("trace.jsonl");
    let shot = dir.path().join("view.png");
    let (click, other) = electrodes();
    let mut demo = start_demo(dir.path(), &trace).await;

    let run = Command::new("node")
        .arg("drive.mjs")
        .args(["--url", &demo.url, "--chromium", CHROMIUM])
        .arg("--profile")
        .arg(dir.path().join("chromium-profile"))
        .args([
            "--click",
            &click,
            "--droplet-from",
            DROPLET_AT,
            "--other",
            &other,
        ])
        .arg("--screenshot")
        .arg(&shot)
        .args(["--deadline-ms", "30000"])
        .current_dir(&driver)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the driver ends within 120 s")
        .expect("node runs drive.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let demo_log = || std::fs::read_to_string(&demo.log).unwrap_or_default();
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary; stdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(
        summary.get("error").is_none(),
        "the page did not do its part: {summary}\nstderr:\n{stderr}\ndemo:\n{}",
        demo_log()
    );
    assert_eq!(summary["actuated"], serde_json::json!([click]), "{summary}");
    assert_eq!(summary["hv"], "HV on", "{summary}");
    assert!(summary["capacitance"]
        .as_str()
        .unwrap_or_default()
        .ends_with("pF"));
    assert_eq!(
        summary["failed_requests"],
        serde_json::json!([]),
        "{summary}"
    );

    // A clean stop flushes the trace.
    let pid = demo.child.id().expect("the demo runs") as i32;
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let exit = tokio::time::timeout(Duration::from_secs(30), demo.child.wait())
        .await
        .expect("the demo stops within 30 s")
        .expect("the demo's exit status");
    assert_eq!(exit.code(), Some(0), "demo:\n{}", demo_log());

    // The simulator saw the droplet move from its electrode onto the clicked one.
    let droplets_on = |r: &Value| -> Vec<String> {
        r["droplets"]
            .as_array()
            .map(|ds| {
                ds.iter()
                    .filter(|d| d["to"].is_null())
                    .filter_map(|d| d["electrode"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let records = trace_records(&trace);
    let rests: Vec<Vec<String>> = records
        .iter()
        .filter(|r| r["kind"] == "droplets")
        .map(droplets_on)
        .collect();
    let started = rests.iter().position(|d| d.iter().any(|e| e == DROPLET_AT));
    let arrived = rests.iter().rposition(|d| d.contains(&click));
    assert!(
        matches!((started, arrived), (Some(s), Some(a)) if s < a),
        "the droplet did not move from {DROPLET_AT} to {click}: {rests:?}"
    );
    assert!(
        records.iter().any(|r| r["kind"] == "hv" && r["on"] == true),
        "HV never came on"
    );

    // The picture: a chip, not a blank page; the clicked electrode lit, the far one not.
    let dpr = summary["device_pixel_ratio"].as_f64().unwrap_or(1.0);
    let page = pixels_in(
        &shot,
        &serde_json::json!({"x": 0, "y": 0, "width": 1100, "height": 900}),
        dpr,
    );
    let mut colours: Vec<[u8; 3]> = page.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 50,
        "only {} colours: a blank page?",
        colours.len()
    );
    let clicked = pixels_in(&shot, &summary["clicked"], dpr);
    let far = pixels_in(&shot, &summary["other"], dpr);
    assert!(!clicked.is_empty() && !far.is_empty(), "{summary}");
    let (lit_clicked, lit_far) = (share(&clicked, lit), share(&far, lit));
    assert!(
        lit_clicked > 0.3,
        "{click} is not lit: {lit_clicked:.2} of its box"
    );
    assert!(lit_far < 0.02, "{other} is lit: {lit_far:.2} of its box");
    // The far electrode is drawn (the pad colour #2a3644, give or take anti-aliasing).
    let pad = |p: &[u8; 3]| {
        p[0].abs_diff(0x2a) < 12 && p[1].abs_diff(0x36) < 12 && p[2].abs_diff(0x44) < 12
    };
    assert!(share(&far, pad) > 0.3, "{other} is not drawn");
}
