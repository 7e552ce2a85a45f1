//! Classes of a header and their methods, as clang-helpers sees them (`extract_class_declarations`
//! and `get_clang_methods_frame` in sci-bots/clang-helpers): classes and class templates at the
//! top level or inside namespaces (not nested in other classes), named `ns::Name`; their
//! `CXX_METHOD` children in declaration order, whatever their access (public or not), static or
//! not, overloads included. Not methods: constructors, destructors, conversion operators,
//! member templates (clang's `FUNCTION_TEMPLATE`), fields, `using` and `friend` declarations.

use std::collections::BTreeMap;

use crate::lex::Token;

/// The methods of each class found, by qualified name (`dropbot::Node`, `BaseNodeConfig`).
/// As in clang-helpers, a later declaration of the same name (even a forward one) wins.
pub fn classes(tokens: &[Token]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    scope(tokens, &mut Vec::new(), &mut out);
    out
}

/// Index of the token just after the group opened at `open` (`(`, `[`, `{` or `<`).
pub(crate) fn skip_group(t: &[Token], open: usize) -> usize {
    let (o, c) = match &t[open] {
        Token::Punct("(") => ("(", ")"),
        Token::Punct("[") => ("[", "]"),
        Token::Punct("<") => ("<", ">"),
        _ => ("{", "}"),
    };
    let mut depth = 0i64;
    let mut i = open;
    while i < t.len() {
        if t[i].is(o) {
            depth += 1;
        } else if t[i].is(c) {
            depth -= 1;
        } else if o == "<" && t[i].is(">>") {
            depth -= 2;
        }
        i += 1;
        if depth <= 0 {
            break;
        }
    }
    i
}

/// Walk a namespace-level token list.
fn scope(t: &[Token], namespaces: &mut Vec<String>, out: &mut BTreeMap<String, Vec<String>>) {
    let mut i = 0;
    while i < t.len() {
        let tok = &t[i];
        if tok.is_ident("namespace") {
            // `namespace a::b {`, `namespace {` or `namespace x = y;`
            let mut j = i + 1;
            let mut names = Vec::new();
            while let Some(name) = t.get(j).and_then(Token::ident) {
                names.push(name.to_owned());
                j += if t.get(j + 1).is_some_and(|t| t.is("::")) {
                    2
                } else {
                    1
                };
            }
            if t.get(j).is_some_and(|t| t.is("{")) {
                let end = skip_group(t, j);
                let depth = namespaces.len();
                namespaces.extend(names);
                scope(&t[j + 1..end.saturating_sub(1)], namespaces, out);
                namespaces.truncate(depth);
                i = end;
            } else {
                i = j + 1;
            }
        } else if tok.is_ident("extern") && matches!(t.get(i + 1), Some(Token::Literal)) {
            // `extern "C" { ... }`: its contents are at this level.
            if t.get(i + 2).is_some_and(|t| t.is("{")) {
                let end = skip_group(t, i + 2);
                scope(&t[i + 3..end.saturating_sub(1)], namespaces, out);
                i = end;
            } else {
                i += 2;
            }
        } else if tok.is_ident("template") && t.get(i + 1).is_some_and(|t| t.is("<")) {
            i = skip_group(t, i + 1);
        } else if (tok.is_ident("class") || tok.is_ident("struct"))
            && !(i > 0 && t[i - 1].is_ident("enum"))
        {
            i = class_head(t, i, namespaces, out);
        } else if tok.is("{") {
            // A function body or an initializer: nothing of interest inside.
            i = skip_group(t, i);
        } else {
            i += 1;
        }
    }
}

/// At `class`/`struct`: record a definition or forward declaration; returns where to go on.
fn class_head(
    t: &[Token],
    at: usize,
    namespaces: &[String],
    out: &mut BTreeMap<String, Vec<String>>,
) -> usize {
    let Some(name) = t.get(at + 1).and_then(Token::ident) else {
        return at + 1;
    };
    let qualified = namespaces
        .iter()
        .map(String::as_str)
        .chain([name])
        .collect::<Vec<_>>()
        .join("::");
    // Skip `final`, the base clause and anything else up to `{` or `;`.
    let mut j = at + 2;
    while j < t.len() && !t[j].is("{") && !t[j].is(";") {
        // An elaborated type in a declaration (`struct tm *when(...)`): not ours.
        if t[j].is("(") || t[j].is("=") {
            return j;
        }
        j += if t[j].is("<") {
            skip_group(t, j) - j
        } else {
            1
        };
    }
    match t.get(j) {
        Some(Token::Punct("{")) => {
            let end = skip_group(t, j);
            let body = &t[j + 1..end.saturating_sub(1)];
            out.insert(qualified, methods(body, name));
            end
        }
        Some(Token::Punct(";")) if j == at + 2 => {
            out.insert(qualified, Vec::new());
            j + 1
        }
        _ => j,
    }
}

/// What a member declaration turned out to be.
enum Member {
    Method(String),
    Other,
}

/// The method names of a class body, in declaration order (overloads repeated).
fn methods(body: &[Token], class: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let tok = &body[i];
        if ["public", "private", "protected"]
            .iter()
            .any(|a| tok.is_ident(a))
            && body.get(i + 1).is_some_and(|t| t.is(":"))
        {
            i += 2;
        } else if tok.is(";") {
            i += 1;
        } else if tok.is_ident("template") && body.get(i + 1).is_some_and(|t| t.is("<")) {
            // A member template: not a CXX_METHOD.
            let after = skip_group(body, i + 1);
            i = declaration(body, after, class).0;
        } else if [
            "typedef",
            "using",
            "friend",
            "static_assert",
            "enum",
            "class",
            "struct",
            "union",
        ]
        .iter()
        .any(|w| tok.is_ident(w))
        {
            i = skip_to_semicolon(body, i);
        } else {
            let (next, member) = declaration(body, i, class);
            if let Member::Method(name) = member {
                out.push(name);
            }
            i = next.max(i + 1);
        }
    }
    out
}

/// Past the `;` that ends the declaration at `i` (braces and parentheses skipped whole).
fn skip_to_semicolon(t: &[Token], mut i: usize) -> usize {
    while i < t.len() {
        if t[i].is("{") || t[i].is("(") || t[i].is("[") {
            i = skip_group(t, i);
        } else if t[i].is(";") {
            return i + 1;
        } else {
            i += 1;
        }
    }
    i
}

/// Read one member declaration from `start`; returns the index after it and what it was.
fn declaration(t: &[Token], start: usize, class: &str) -> (usize, Member) {
    let mut i = start;
    let mut angle = 0i64;
    let mut member: Option<Member> = None;
    // Set once a function's parameter list has been read.
    let mut params_end: Option<usize> = None;
    let mut in_init_list = false;
    while i < t.len() {
        let tok = &t[i];
        if params_end.is_none() && member.is_none() {
            if tok.is_ident("__attribute__") || tok.is_ident("alignas") || tok.is_ident("decltype")
            {
                i = match t.get(i + 1) {
                    Some(p) if p.is("(") => skip_group(t, i + 1),
                    _ => i + 1,
                };
                continue;
            }
            if tok.is("[") && t.get(i + 1).is_some_and(|t| t.is("[")) {
                i = skip_group(t, i);
                continue;
            }
            if tok.is_ident("operator") {
                // `operator bool()` is a conversion function, not a CXX_METHOD.
                let conversion = t.get(i + 1).is_some_and(|t| t.ident().is_some());
                member = Some(if conversion {
                    Member::Other
                } else {
                    Member::Method(operator_name(t, i))
                });
                let open = (i + 1..t.len()).find(|&k| t[k].is("(") && !t[k - 1].is("operator"));
                if let Some(open) = open {
                    params_end = Some(skip_group(t, open));
                    i = skip_group(t, open);
                    continue;
                }
            }
            if tok.is("<") {
                angle += 1;
            } else if tok.is(">") {
                angle -= 1;
            } else if tok.is(">>") {
                angle -= 2;
            } else if tok.is("=") && angle <= 0 {
                member = Some(Member::Other);
            } else if tok.is("(") && angle <= 0 {
                let prev = i.checked_sub(1).map(|p| &t[p]);
                let pointer = t
                    .get(i + 1)
                    .is_some_and(|n| n.is("*") || n.is("&") || n.is("^"));
                member = Some(match prev.and_then(Token::ident) {
                    Some(name) if !pointer => {
                        let destructor = i >= 2 && t[i - 2].is("~");
                        if destructor || name == class {
                            Member::Other
                        } else {
                            Member::Method(name.to_owned())
                        }
                    }
                    _ => Member::Other,
                });
                let end = skip_group(t, i);
                params_end = Some(end);
                i = end;
                continue;
            }
        }
        if tok.is(";") && !in_init_list {
            return (i + 1, member.unwrap_or(Member::Other));
        }
        if tok.is(":") && params_end.is_some() {
            in_init_list = true;
        }
        if tok.is("(") || tok.is("[") {
            i = skip_group(t, i);
            continue;
        }
        if tok.is("{") {
            let initializer =
                in_init_list && i > 0 && (t[i - 1].ident().is_some() || t[i - 1].is(">"));
            let end = skip_group(t, i);
            if params_end.is_some() && !initializer {
                // A function body ends the declaration.
                return (end, member.unwrap_or(Member::Other));
            }
            i = end;
            continue;
        }
        i += 1;
    }
    (i, member.unwrap_or(Member::Other))
}

/// `operator==`, `operator()`, `operator[]`: the name clang-helpers would cut from the
/// cursor's display name (everything before the first `(`).
fn operator_name(t: &[Token], at: usize) -> String {
    let mut name = "operator".to_owned();
    for tok in &t[at + 1..] {
        match tok {
            Token::Punct("(") => break,
            Token::Punct(p) => name.push_str(p),
            _ => break,
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lex::tokens;

    #[test]
    fn finds_methods_as_clang_helpers_counts_them() {
        let src = r#"
            class Fwd;
            enum class Mode { A, B };
            namespace dropbot {
            struct Helper { int x; };
            class Node : public Base<Foo, Bar>, public Other {
            public:
              typedef Parser<FixedPacket> parser_t;
              static const uint32_t BUFFER_SIZE = 8192;
              uint8_t buffer_[BUFFER_SIZE];
              Signal<void(float)> exceeded_;
              void (*callback_)(int);
              Node() : Base<Foo, Bar>(fields), a_{1}, b_(2) { begin(); }
              ~Node() {}
              UInt8Array get_buffer() { return UInt8Array_init(sizeof(buffer_), buffer_); }
              void begin();
              uint16_t number_of_channels() const { return x; }
              template <typename T> T get_type_buffer() { T t; return t; }
              bool set(UInt8Array a) { if (a.length) { return true; } return false; }
              bool set(uint8_t b);
              operator bool() const { return true; }
              bool operator==(const Node &o) const;
              static float helper(float v) { return v; }
              using Base::reset;
              friend class Other;
            private:
              void hidden() {}
              struct Inner { void not_ours(); } inner_;
              std::array<float, 3> xs_ = {1, 2, 3};
              float y_{0.5};
            };
            }  // namespace dropbot
            template <typename Handler>
            class BaseNodeI2cHandler {
            public:
              UInt8Array i2c_request(uint8_t address, UInt8Array data) { return h.request(address, data); }
              void i2c_packet_reset() { h.packet_reset(); }
            };
            inline UInt8Array prog_string(const char* str, UInt8Array array) { return array; }
        "#;
        let found = classes(&tokens(src));
        assert_eq!(
            found["dropbot::Node"],
            [
                "get_buffer",
                "begin",
                "number_of_channels",
                "set",
                "set",
                "operator==",
                "helper",
                "hidden"
            ]
        );
        assert_eq!(
            found["BaseNodeI2cHandler"],
            ["i2c_request", "i2c_packet_reset"]
        );
        assert!(found["Fwd"].is_empty());
        assert_eq!(found["dropbot::Helper"], Vec::<String>::new());
        assert!(!found.contains_key("Mode"));
        assert!(!found.contains_key("Inner"));
    }
}
