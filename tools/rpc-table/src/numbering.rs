//! How a base-node-rpc firmware build numbers its commands (sci-bots/arduino-rpc `code_gen.py`,
//! `get_multilevel_method_sig_frame`, on clang-helpers' method lists):
//!
//! 1. Each class's methods get `method_i`: the index of the method's name among the class's
//!    unique method names, in declaration order (overloads share one index).
//! 2. A name declared in several classes is kept only in the **last** class (in the order the
//!    build lists them). In sci-bots' generator a name overloaded within that last class is
//!    dropped altogether (its first declaration is not its last); the later rewrite in
//!    AlexSklav/arduino-rpc keeps it. Either way the other codes do not move.
//! 3. `class_i` is the index of the class among the classes that still have a method.
//! 4. `code = method_i + 0xFF * class_i`.
//! 5. base-node-rpc's `DEFAULT_METHODS_FILTER` then removes `get_config_fields` and
//!    `get_state_fields` (`pavement_base.py`); their codes stay unused.

use std::collections::{BTreeMap, HashMap};

/// Which generator's rule 2 to apply to a name overloaded within its last class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overloads {
    /// sci-bots/arduino-rpc (the builds up to 1.73/1.74 of sci-bots): dropped.
    Drop,
    /// AlexSklav/arduino-rpc (the Blue-Ocean fork's builds): kept.
    Keep,
}

/// Methods that base-node-rpc's default filter removes after numbering.
pub const FILTERED: [&str; 2] = ["get_config_fields", "get_state_fields"];

/// One class in build order: its name as the build lists it and its methods in declaration
/// order (overloads repeated).
#[derive(Debug, Clone)]
pub struct ClassMethods {
    /// E.g. `BaseNodeConfig<ConfigMessage, Address>` or `dropbot::Node`.
    pub class: String,
    /// Method names in declaration order.
    pub methods: Vec<String>,
}

/// The command code of every method a build exposes, by name.
pub fn number(classes: &[ClassMethods], overloads: Overloads) -> BTreeMap<String, u16> {
    // Rule 2: the last class declaring each name, and whether that class overloads it.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (c, class) in classes.iter().enumerate() {
        for m in &class.methods {
            last.insert(m, c);
        }
    }
    let overloaded =
        |c: usize, name: &str| classes[c].methods.iter().filter(|m| *m == name).count() > 1;
    let mut codes = BTreeMap::new();
    let mut class_i: u32 = 0;
    for (c, class) in classes.iter().enumerate() {
        let mut unique: Vec<&str> = Vec::new();
        let mut kept = false;
        for m in &class.methods {
            if unique.contains(&m.as_str()) {
                continue;
            }
            let method_i = unique.len() as u32;
            unique.push(m);
            if last.get(m.as_str()) != Some(&c)
                || (overloads == Overloads::Drop && overloaded(c, m))
            {
                continue;
            }
            kept = true;
            if !FILTERED.contains(&m.as_str()) {
                let code = method_i + 0xFF * class_i;
                codes.insert(m.clone(), u16::try_from(code).unwrap_or(u16::MAX));
            }
        }
        // Rule 3: a class left without methods takes no index.
        if kept {
            class_i += 1;
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, methods: &[&str]) -> ClassMethods {
        ClassMethods {
            class: name.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn numbers_by_class_and_unique_name() {
        let classes = [
            class("BaseNode", &["a", "b", "shadowed", "c"]),
            class("Empty", &[]),
            class("AllShadowed", &["c"]),
            class("Mid", &["d", "d", "e", "get_state_fields", "f"]),
            class("Node", &["shadowed", "g", "over", "over", "h"]),
        ];
        let codes = number(&classes, Overloads::Drop);
        let get = |n: &str| codes.get(n).copied();
        assert_eq!(get("a"), Some(0));
        assert_eq!(get("b"), Some(1));
        // Declared again later: only the last class's counts, but the index stays taken.
        assert_eq!(get("c"), Some(255));
        // "Empty" has nothing; "AllShadowed" keeps `c` so it is class 1, "Mid" class 2.
        assert_eq!(get("d"), None, "overloaded in its last class: dropped");
        assert_eq!(get("e"), Some(2 * 255 + 1));
        assert_eq!(get("get_state_fields"), None, "filtered, code 513 unused");
        assert_eq!(get("f"), Some(2 * 255 + 3));
        assert_eq!(get("shadowed"), Some(3 * 255));
        assert_eq!(get("g"), Some(3 * 255 + 1));
        assert_eq!(get("over"), None);
        assert_eq!(get("h"), Some(3 * 255 + 3));
        let kept = number(&classes, Overloads::Keep);
        assert_eq!(kept.get("over"), Some(&(3 * 255 + 2)));
        assert_eq!(kept.get("d"), Some(&(2 * 255)));
    }

    #[test]
    fn a_class_emptied_by_later_declarations_shifts_the_next() {
        let classes = [
            class("A", &["x"]),
            class("B", &["y"]),
            class("C", &["y", "z"]),
        ];
        let codes = number(&classes, Overloads::Drop);
        assert_eq!(codes["x"], 0);
        assert_eq!(codes["y"], 255, "C is class 1: B kept nothing");
        assert_eq!(codes["z"], 256);
    }
}
