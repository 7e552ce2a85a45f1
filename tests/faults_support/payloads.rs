//! Generated bad MQTT payloads (proptest strategies drawn from a seeded runner): malformed
//! JSON, random bytes, wrong types, huge numbers, deep nesting, long strings, unknown ids and
//! keys, abused `__head__`s, and now and then a payload over the plugin's 1 MiB request limit.
//! Most carry `__head__.plugin_name` = [`ASKER`], so the plugin's answers can be counted.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Number, Value};

/// The sender named in generated payloads: answers come on `notify/<ASKER>/...`.
pub const ASKER: &str = "fuzz";

/// Every how many payloads one is over the plugin's request limit (1 MiB).
pub const OVERSIZED_EVERY: usize = 5000;

/// Numbers as JSON text, several out of any range (serde_json refuses some, like `1e999`).
const NUMBER_TEXTS: [&str; 18] = [
    "1e308",
    "-1e308",
    "1e999",
    "-1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "1e-400",
    "123456789012345678901234567890",
    "0.000000000000000000000000000001",
    "-0",
    "1E+2",
    "NaN",
    "Infinity",
    "-Infinity",
    "0x10",
    "01",
    "4.9e-324",
    "150.00000000000001",
];

const KEYS: [&str; 24] = [
    "voltage",
    "frequency",
    "channels",
    "electrodes",
    "phases",
    "duration_ms",
    "repeats",
    "until",
    "timeout_ms",
    "delay_ms",
    "data",
    "state",
    "hv-output-enabled",
    "capacitance-update-interval-ms",
    "disabled-channels",
    "wait-for-board",
    "routes",
    "start",
    "path",
    "capacitance_f",
    "coverage",
    "__head__",
    "plugin_name",
    "label",
];

const WORDS: [&str; 12] = [
    "electrode030",
    "electrode999",
    "nope",
    "100 V",
    "1000 Hz",
    "900 V",
    "true",
    "",
    "\u{0}",
    "électrode",
    "🔥",
    "a/b/#",
];

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-5i64..200).prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![1e308, -1e308, 5e-324, -0.0, 0.5, 1.5, 150.0001, 99.99])
            .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        2 => prop::sample::select(WORDS.to_vec()).prop_map(str::to_owned),
        1 => (1000usize..=5000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        1 => "[a-z_-]{1,12}",
    ]
}

/// Any JSON value, at most 4 levels deep, with leaves near what the plugin expects.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn head() -> Value {
    json!({"plugin_name": ASKER, "plugin_version": "0.0.0"})
}

/// `value` as MicroDrop sends it to `topic`'s last level `key`: an object keeps its keys,
/// anything else goes under `key`; then `__head__`.
fn wrapped(key: &str, value: Value) -> Vec<u8> {
    let mut map = match value {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert(key.to_owned(), other);
            m
        }
    };
    map.insert("__head__".into(), head());
    serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
}

/// What a generated payload is made of (kept apart from the topic so any kind goes anywhere).
#[derive(Debug, Clone)]
enum Kind {
    Wrapped(Value),
    Bare(Value),
    Broken {
        value: Value,
        cut: prop::sample::Index,
        flip: Option<(prop::sample::Index, u8)>,
    },
    Bytes(Vec<u8>),
    NumberText(&'static str),
    Nested {
        depth: usize,
        object: bool,
    },
    LongString(usize),
    UnknownIds(Vec<i64>, Vec<String>),
    BadHead(Value, Value),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        30 => json_value().prop_map(Kind::Wrapped),
        10 => json_value().prop_map(Kind::Bare),
        15 => (json_value(), any::<prop::sample::Index>(),
               prop::option::of((any::<prop::sample::Index>(), 1..=255u8)))
            .prop_map(|(value, cut, flip)| Kind::Broken { value, cut, flip }),
        5 => vec(any::<u8>(), 0..256).prop_map(Kind::Bytes),
        8 => prop::sample::select(NUMBER_TEXTS.to_vec()).prop_map(Kind::NumberText),
        8 => (1usize..=400, any::<bool>()).prop_map(|(depth, object)| Kind::Nested { depth, object }),
        1 => Just(Kind::Nested { depth: 100_000, object: false }),
        5 => (1000usize..=5000).prop_map(Kind::LongString),
        1 => Just(Kind::LongString(100_000)),
        10 => (vec(prop_oneof![-1000i64..0, 120i64..100_000, Just(i64::MAX)], 0..12),
               vec(prop_oneof!["electrode[0-9]{3,6}", ".{0,12}"], 0..12))
            .prop_map(|(c, e)| Kind::UnknownIds(c, e)),
        5 => (json_value(), prop_oneof![
                json_value(),
                prop::sample::select(vec!["a/b", "+", "#", "x\u{0}y", "", "put", "trigger"])
                    .prop_map(|n| json!({"plugin_name": n})),
                Just(json!({"plugin_name": "n".repeat(70_000)})),
            ]).prop_map(|(v, h)| Kind::BadHead(v, h)),
    ]
}

fn render(kind: Kind, key: &str) -> Vec<u8> {
    match kind {
        Kind::Wrapped(v) => wrapped(key, v),
        Kind::Bare(v) => serde_json::to_vec(&v).unwrap_or_default(),
        Kind::Broken { value, cut, flip } => {
            let mut bytes = wrapped(key, value);
            if let Some((at, x)) = flip {
                let at = at.index(bytes.len().max(1));
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= x;
                }
            }
            // Cut before the end: the closing brace is always lost.
            bytes.truncate(cut.index(bytes.len().max(1)));
            bytes
        }
        Kind::Bytes(b) => b,
        Kind::NumberText(n) => format!(r#"{{"{key}": {n}, "__head__": {}}}"#, head()).into_bytes(),
        Kind::Nested {
            depth,
            object: false,
        } if depth >= 100_000 => "[".repeat(depth).into_bytes(),
        Kind::Nested { depth, object } => {
            let (open, close) = if object {
                (r#"{"a":"#, "}")
            } else {
                ("[", "]")
            };
            let inner = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            format!(r#"{{"{key}": {inner}, "__head__": {}}}"#, head()).into_bytes()
        }
        Kind::LongString(n) => wrapped(key, Value::from("7".repeat(n))),
        Kind::UnknownIds(channels, electrodes) => {
            wrapped(key, json!({"channels": channels, "electrodes": electrodes}))
        }
        Kind::BadHead(v, h) => {
            let mut map = match v {
                Value::Object(m) => m,
                other => Map::from_iter([(key.to_owned(), other)]),
            };
            map.insert("__head__".into(), h);
            serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
        }
    }
}

/// A payload over the plugin's request limit (1 MiB): 1.2 MiB.
pub fn oversized(key: &str) -> Vec<u8> {
    wrapped(key, Value::from("9".repeat(1_200_000)))
}

/// Draws payloads from a runner seeded with `seed` (the same seed, the same payloads).
pub struct Payloads {
    runner: TestRunner,
    kinds: proptest::strategy::BoxedStrategy<Kind>,
}

impl Payloads {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Payloads {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        Payloads {
            runner: TestRunner::new_with_rng(Config::default(), rng),
            kinds: kind().boxed(),
        }
    }

    /// The next payload for a topic whose last level is `key`.
    pub fn next(&mut self, key: &str) -> Vec<u8> {
        let kind = self
            .kinds
            .new_tree(&mut self.runner)
            .expect("the strategy always generates")
            .current();
        render(kind, key)
    }
}
