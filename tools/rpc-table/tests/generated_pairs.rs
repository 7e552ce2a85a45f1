//! The tool against real outputs of the firmware's code generator: two published packages
//! (dropbot-dx 1.1.post3, teensy-minimal-rpc 0.2.post1) ship the generated `node.py` with
//! every `_CMD_*` code beside the `Node.h` it came from; with base-node-rpc's headers of their
//! time (0.16.post1, 0.12.post13) the tool must give every code, no more and no less.
//!
//! The archives come from the package index pip uses (`fetch_validation_sdists.py`), cached
//! under the target folder. This test fails, never skips, when they cannot be had.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use rpc_table::{derive, ClassSource, Overloads};

const BASE_NODE_DIR: &str = "base_node_rpc/Arduino/library/BaseNodeRpc/src/BaseNodeRpc";

/// The extracted archives, fetched on first use (once: the tests share the folder).
fn sdists() -> PathBuf {
    static FETCH: Mutex<()> = Mutex::new(());
    let _once = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rpc-table-sdists");
    if dest.join(".complete").is_file() {
        return dest;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fetch_validation_sdists.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&dest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    assert!(
        out.status.success() && dest.join(".complete").is_file(),
        "the validation archives could not be fetched ({}):\n{}\nThis test needs python3 with \
         pip and the package index pip is configured with (or RPC_TABLE_SDIST_DIR pointing at \
         the archives).",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dest
}

fn source(class: &str, path: &Path) -> ClassSource {
    let header_text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    ClassSource {
        class: class.to_owned(),
        header_name: path.display().to_string(),
        header_text,
    }
}

/// `_CMD_NAME = 0x..` of a generated `node.py`, by upper-case name.
fn generated_codes(node_py: &Path) -> BTreeMap<String, u16> {
    let text = std::fs::read_to_string(node_py)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", node_py.display()));
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().strip_prefix("_CMD_")?.split_once(" = ")?;
            let code = u16::from_str_radix(value.trim().strip_prefix("0x")?, 16).ok()?;
            Some((name.to_owned(), code))
        })
        .collect()
}

fn check(base: &Path, classes: &[(&str, &str)], node_class: &str, package: &Path, module: &str) {
    let mut sources: Vec<ClassSource> = classes
        .iter()
        .map(|(class, header)| source(class, &base.join(BASE_NODE_DIR).join(header)))
        .collect();
    sources.push(source(
        node_class,
        &package
            .join(module)
            .join("Arduino")
            .join(module)
            .join("Node.h"),
    ));
    let derived: BTreeMap<String, u16> = derive(&sources, Overloads::Drop)
        .expect("headers parse")
        .into_iter()
        .map(|(name, code)| (name.to_uppercase(), code))
        .collect();
    let generated = generated_codes(&package.join(module).join("node.py"));
    assert!(generated.len() > 100, "{} codes read", generated.len());
    let wrong: Vec<String> = generated
        .iter()
        .filter(|(name, code)| derived.get(*name) != Some(code))
        .map(|(name, code)| format!("{name}: generated {code}, derived {:?}", derived.get(name)))
        .chain(
            derived
                .keys()
                .filter(|name| !generated.contains_key(*name))
                .map(|name| format!("{name}: derived but not generated")),
        )
        .collect();
    assert!(
        wrong.is_empty(),
        "{module}: {} of {} codes differ:\n{}",
        wrong.len(),
        generated.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_code_of_dropbot_dx_1_1_post3() {
    let dir = sdists();
    check(
        &dir.join("base-node-rpc-0.16.post1"),
        &[
            ("BaseNode", "BaseNode.h"),
            ("BaseNodeSerialHandler", "BaseNodeSerialHandler.h"),
            ("BaseNodeEeprom", "BaseNodeEeprom.h"),
            ("BaseNodeI2c", "BaseNodeI2c.h"),
            ("BaseNodeI2cHandler<Handler>", "BaseNodeI2cHandler.h"),
            ("BaseNodeConfig<ConfigMessage, Address>", "BaseNodeConfig.h"),
            ("BaseNodeState<StateMessage>", "BaseNodeState.h"),
        ],
        "dropbot_dx::Node",
        &dir.join("dropbot-dx-1.1.post3"),
        "dropbot_dx",
    );
}

#[test]
fn every_code_of_teensy_minimal_rpc_0_2_post1() {
    let dir = sdists();
    check(
        &dir.join("base-node-rpc-0.12.post13"),
        &[
            ("BaseNode", "BaseNode.h"),
            ("BaseNodeSerialHandler", "BaseNodeSerialHandler.h"),
        ],
        "teensy_minimal_rpc::Node",
        &dir.join("teensy-minimal-rpc-0.2.post1"),
        "teensy_minimal_rpc",
    );
}
