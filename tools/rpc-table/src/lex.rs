//! C++ tokens of preprocessed text: identifiers, numbers, literals (as one opaque token each)
//! and punctuation (`::`, `->` and `>>` kept whole; every other mark alone).

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An identifier or keyword.
    Ident(String),
    /// A number, string or character literal.
    Literal,
    /// Punctuation.
    Punct(&'static str),
}

impl Token {
    /// Whether this is the identifier or keyword `word`.
    pub fn is_ident(&self, word: &str) -> bool {
        matches!(self, Token::Ident(w) if w == word)
    }

    /// Whether this is the punctuation `mark`.
    pub fn is(&self, mark: &str) -> bool {
        matches!(self, Token::Punct(p) if *p == mark)
    }

    /// The identifier, if it is one.
    pub fn ident(&self) -> Option<&str> {
        match self {
            Token::Ident(w) => Some(w),
            _ => None,
        }
    }
}

const MULTI: [&str; 3] = ["::", "->", ">>"];
const SINGLE: &str = "{}()[]<>;:,=*&~!+-/%^|?.#@$\\";

/// The tokens of `text` (comments already removed).
pub fn tokens(text: &str) -> Vec<Token> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            // A prefixed literal (u8"..", L'x') is one literal.
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                i = skip_quoted(b, i);
                out.push(Token::Literal);
            } else {
                out.push(Token::Ident(text[start..i].to_owned()));
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'.'
                    || b[i] == b'\''
                    || ((b[i] == b'+' || b[i] == b'-') && matches!(b[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
            out.push(Token::Literal);
        } else if c == b'"' || c == b'\'' {
            i = skip_quoted(b, i);
            out.push(Token::Literal);
        } else if let Some(m) = MULTI.iter().find(|m| b[i..].starts_with(m.as_bytes())) {
            out.push(Token::Punct(m));
            i += m.len();
        } else {
            let mark = SINGLE
                .find(c as char)
                .map(|at| &SINGLE[at..at + 1])
                .unwrap_or("?");
            out.push(Token::Punct(mark));
            // Step over a whole UTF-8 character.
            i += 1;
            while i < b.len() && (b[i] & 0xC0) == 0x80 {
                i += 1;
            }
        }
    }
    out
}

/// Index just past the literal quoted by `b[start]`.
fn skip_quoted(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != quote && b[i] != b'\n' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    (i + 1).min(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cpp() {
        let t = tokens("std::vector<int>> x = {\"a;}\", 'b', 1.5e-3f}; p->q");
        let shape: Vec<String> = t
            .iter()
            .map(|t| match t {
                Token::Ident(w) => w.clone(),
                Token::Literal => "L".into(),
                Token::Punct(p) => (*p).into(),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "std", "::", "vector", "<", "int", ">>", "x", "=", "{", "L", ",", "L", ",", "L",
                "}", ";", "p", "->", "q"
            ]
        );
    }
}
