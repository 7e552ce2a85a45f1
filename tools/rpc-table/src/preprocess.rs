//! The part of the C preprocessor that decides which lines of a header exist: comments and
//! line continuations removed, `#if`/`#ifdef`/`#ifndef`/`#elif`/`#else`/`#endif` evaluated
//! against the macros defined so far (`#define`/`#undef` are followed), every other directive
//! dropped. Includes are not followed and macros are not expanded in the code: the firmware
//! generator's clang run found no method through either.

use std::collections::HashMap;

use crate::DeriveError;

/// Macros known to the preprocessor: name to replacement text (`1` for a bare `#define X`).
pub type Macros = HashMap<String, String>;

/// The macros the firmware generator's clang run defined: `-DSTDINT_STUB` (base-node-rpc
/// `pavement_base.py`) and C++ itself. No target macros (`__MK20DX256__`, `F_CPU`, ...): clang
/// parsed the headers for the host.
pub fn generator_macros() -> Macros {
    [("STDINT_STUB", "1"), ("__cplusplus", "201103L")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `text` with comments removed (newlines kept, so line numbers hold) and continuations joined.
fn strip_comments(text: &str) -> String {
    let text = text.replace("\\\r\n", "").replace("\\\n", "");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == c || d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                out.push(' ');
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && d == '/' {
                        break;
                    }
                    last = d;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// One level of `#if` nesting.
struct Branch {
    /// The enclosing level is active.
    outer: bool,
    /// This branch is active.
    active: bool,
    /// Some branch of this `#if` was taken already.
    taken: bool,
}

/// The lines of `text` that exist under `macros` (others blanked), with comments removed.
/// `macros` is updated by the header's own `#define`s and `#undef`s.
pub fn active_text(text: &str, macros: &mut Macros) -> Result<String, DeriveError> {
    let text = strip_comments(text);
    let mut stack: Vec<Branch> = Vec::new();
    let mut out = String::with_capacity(text.len());
    for (number, line) in text.lines().enumerate() {
        let active = stack.last().is_none_or(|b| b.active);
        let trimmed = line.trim_start();
        let Some(directive) = trimmed.strip_prefix('#') else {
            if active {
                out.push_str(line);
            }
            out.push('\n');
            continue;
        };
        out.push('\n');
        let directive = directive.trim_start();
        let (name, rest) = directive
            .split_once(|c: char| c.is_whitespace() || c == '(' || c == '!')
            .map(|(n, _)| (n, directive[n.len()..].trim()))
            .unwrap_or((directive, ""));
        let bad = |what: &str| DeriveError::Preprocessor {
            line: number + 1,
            detail: what.to_owned(),
        };
        match name {
            "if" | "ifdef" | "ifndef" => {
                let value = active
                    && match name {
                        "ifdef" => macros.contains_key(first_word(rest)),
                        "ifndef" => !macros.contains_key(first_word(rest)),
                        _ => crate::cond::evaluate(rest, macros).map_err(|e| bad(&e))? != 0,
                    };
                stack.push(Branch {
                    outer: active,
                    active: value,
                    taken: value,
                });
            }
            "elif" => {
                let b = stack.last_mut().ok_or_else(|| bad("#elif without #if"))?;
                let value = b.outer
                    && !b.taken
                    && crate::cond::evaluate(rest, macros).map_err(|e| bad(&e))? != 0;
                b.active = value;
                b.taken |= value;
            }
            "else" => {
                let b = stack.last_mut().ok_or_else(|| bad("#else without #if"))?;
                b.active = b.outer && !b.taken;
                b.taken = true;
            }
            "endif" => {
                stack.pop().ok_or_else(|| bad("#endif without #if"))?;
            }
            "define" if active => {
                let name = first_word(rest);
                let body = rest[name.len()..].trim();
                // A function-like macro (`P(str)`) only counts as defined.
                let value = if body.is_empty() || body.starts_with('(') {
                    "1"
                } else {
                    body
                };
                macros.insert(name.to_owned(), value.to_owned());
            }
            "undef" if active => {
                macros.remove(first_word(rest));
            }
            _ => {}
        }
    }
    if stack.is_empty() {
        Ok(out)
    } else {
        Err(DeriveError::Preprocessor {
            line: text.lines().count(),
            detail: format!("{} #if without #endif", stack.len()),
        })
    }
}

fn first_word(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_strings() {
        let text = "a /* x\ny */ b // c\n\"// not\" '/'";
        assert_eq!(strip_comments(text), "a  \n b \n\"// not\" '/'");
    }

    #[test]
    fn conditionals_follow_defines() {
        let text = "#ifndef G\n#define G\nkeep1\n#if 0\ndrop\n#elif defined(G) && X == 0\nkeep2\n#else\ndrop\n#endif\n#ifdef NOPE\ndrop\n#endif\n#endif\n";
        let out = active_text(text, &mut Macros::new()).unwrap();
        let kept: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(kept, ["keep1", "keep2"]);
        assert!(active_text("#if 1\n", &mut Macros::new()).is_err());
        assert!(active_text("#endif\n", &mut Macros::new()).is_err());
    }
}
