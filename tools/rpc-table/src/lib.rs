//! Derives a DropBot firmware build's command codes from its C++ headers, applying the rules of
//! the firmware's code generator (sci-bots/clang-helpers, arduino-rpc, base-node-rpc): which
//! methods count ([`classes`]), in which order the classes go ([`DROPBOT_CLASSES`]) and how
//! codes are numbered ([`numbering`]). No clang is needed: a header is preprocessed for its
//! conditionals ([`preprocess`]), tokenized ([`lex`]) and read for class bodies.
//!
//! The result is a command table for the `firmware-protocol` crate ([`table`]).

use std::collections::BTreeMap;

use thiserror::Error;

pub mod classes;
pub mod cond;
pub mod lex;
pub mod numbering;
pub mod preprocess;
pub mod table;

pub use numbering::{ClassMethods, Overloads};

/// The classes of a DropBot build, in build order, with the header each is declared in:
/// `['BaseNode'] + base_classes + rpc_classes` (base-node-rpc `pavement_base.py`,
/// `get_base_classes_and_headers`) with dropbot.py's `base_classes` and `rpc_classes`
/// (`pavement.py`; the fork's `file_handler.py` lists the same).
pub const DROPBOT_CLASSES: [(&str, &str); 8] = [
    ("BaseNode", "BaseNode.h"),
    ("BaseNodeSerialHandler", "BaseNodeSerialHandler.h"),
    ("BaseNodeEeprom", "BaseNodeEeprom.h"),
    ("BaseNodeI2c", "BaseNodeI2c.h"),
    ("BaseNodeI2cHandler<Handler>", "BaseNodeI2cHandler.h"),
    ("BaseNodeConfig<ConfigMessage, Address>", "BaseNodeConfig.h"),
    ("BaseNodeState<StateMessage>", "BaseNodeState.h"),
    ("dropbot::Node", "Node.h"),
];

/// A header that cannot be read as the generator reads it.
#[derive(Debug, Error)]
pub enum DeriveError {
    /// A conditional that does not evaluate or does not balance.
    #[error("preprocessor, line {line}: {detail}")]
    Preprocessor {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The class is not declared in its header.
    #[error("class `{class}` is not declared in {header} (classes there: {found})")]
    ClassNotFound {
        /// The class as the build names it.
        class: String,
        /// The header's name.
        header: String,
        /// The classes that are.
        found: String,
    },
    /// A header in error, with its name.
    #[error("{header}: {source}")]
    InHeader {
        /// The header's name.
        header: String,
        /// The error.
        #[source]
        source: Box<DeriveError>,
    },
    /// A header that cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One class of a build: its name as the build lists it (`BaseNodeConfig<ConfigMessage,
/// Address>`, `dropbot::Node`) and the text of the header that declares it.
#[derive(Debug, Clone)]
pub struct ClassSource {
    /// The class.
    pub class: String,
    /// The header's file name, for messages.
    pub header_name: String,
    /// The header's text.
    pub header_text: String,
}

/// The methods of one class, as clang-helpers lists them.
pub fn class_methods(source: &ClassSource) -> Result<ClassMethods, DeriveError> {
    let in_header = |e: DeriveError| DeriveError::InHeader {
        header: source.header_name.clone(),
        source: Box::new(e),
    };
    // Each header is parsed on its own, as the generator's clang run did.
    let mut macros = preprocess::generator_macros();
    let text = preprocess::active_text(&source.header_text, &mut macros).map_err(in_header)?;
    let found = classes::classes(&lex::tokens(&text));
    // A class template is named with its parameters (`BaseNodeState<StateMessage>`).
    let bare = source.class.split('<').next().unwrap_or("").trim();
    let methods = found
        .get(bare)
        .ok_or_else(|| DeriveError::ClassNotFound {
            class: source.class.clone(),
            header: source.header_name.clone(),
            found: found.keys().cloned().collect::<Vec<_>>().join(", "),
        })?
        .clone();
    Ok(ClassMethods {
        class: source.class.clone(),
        methods,
    })
}

/// The command code of every method of a build whose classes, in build order, are `sources`.
pub fn derive(
    sources: &[ClassSource],
    overloads: Overloads,
) -> Result<BTreeMap<String, u16>, DeriveError> {
    let classes = sources
        .iter()
        .map(class_methods)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(numbering::number(&classes, overloads))
}
