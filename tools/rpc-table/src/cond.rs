//! `#if` expressions: integers, `defined`, `! ~ - +`, `* / %`, `+ -`, comparisons, `&& ||`
//! and parentheses. An identifier that is not a macro is 0, as in C; a macro is its text,
//! evaluated in turn (to a bounded depth).

use crate::preprocess::Macros;

/// Deepest macro-in-macro expansion followed.
const MAX_DEPTH: usize = 16;

/// The value of the `#if` expression `text`.
pub fn evaluate(text: &str, macros: &Macros) -> Result<i64, String> {
    eval_at(text, macros, 0)
}

fn eval_at(text: &str, macros: &Macros, depth: usize) -> Result<i64, String> {
    if depth > MAX_DEPTH {
        return Err(format!("macros nested deeper than {MAX_DEPTH} in `{text}`"));
    }
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        macros,
        depth,
    };
    let value = p.or()?;
    match p.tokens.get(p.pos) {
        None => Ok(value),
        Some(t) => Err(format!("unexpected `{t}` in `#if {text}`")),
    }
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(text[start..i].to_owned());
        } else {
            let two = text.get(i..i + 2).unwrap_or("");
            if ["&&", "||", "==", "!=", "<=", ">="].contains(&two) {
                out.push(two.to_owned());
                i += 2;
            } else if "()!~-+*/%<>".contains(c) {
                out.push(c.to_string());
                i += 1;
            } else {
                return Err(format!("unsupported `{c}` in `#if {text}`"));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<String>,
    pos: usize,
    macros: &'a Macros,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn eat(&mut self, t: &str) -> bool {
        let hit = self.peek() == Some(t);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn binary(
        &mut self,
        ops: &[&str],
        next: fn(&mut Self) -> Result<i64, String>,
        apply: fn(&str, i64, i64) -> Result<i64, String>,
    ) -> Result<i64, String> {
        let mut left = next(self)?;
        while let Some(op) = self.peek().filter(|t| ops.contains(t)).map(str::to_owned) {
            self.pos += 1;
            let right = next(self)?;
            left = apply(&op, left, right)?;
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<i64, String> {
        self.binary(&["||"], Self::and, |_, a, b| {
            Ok(i64::from(a != 0 || b != 0))
        })
    }

    fn and(&mut self) -> Result<i64, String> {
        self.binary(&["&&"], Self::equality, |_, a, b| {
            Ok(i64::from(a != 0 && b != 0))
        })
    }

    fn equality(&mut self) -> Result<i64, String> {
        self.binary(&["==", "!="], Self::relation, |op, a, b| {
            Ok(i64::from((a == b) == (op == "==")))
        })
    }

    fn relation(&mut self) -> Result<i64, String> {
        self.binary(&["<", ">", "<=", ">="], Self::sum, |op, a, b| {
            Ok(i64::from(match op {
                "<" => a < b,
                ">" => a > b,
                "<=" => a <= b,
                _ => a >= b,
            }))
        })
    }

    fn sum(&mut self) -> Result<i64, String> {
        self.binary(&["+", "-"], Self::product, |op, a, b| {
            Ok(if op == "+" {
                a.wrapping_add(b)
            } else {
                a.wrapping_sub(b)
            })
        })
    }

    fn product(&mut self) -> Result<i64, String> {
        self.binary(&["*", "/", "%"], Self::unary, |op, a, b| match op {
            "*" => Ok(a.wrapping_mul(b)),
            _ if b == 0 => Err("division by zero in #if".to_owned()),
            "/" => Ok(a.wrapping_div(b)),
            _ => Ok(a.wrapping_rem(b)),
        })
    }

    fn unary(&mut self) -> Result<i64, String> {
        if self.eat("!") {
            return Ok(i64::from(self.unary()? == 0));
        }
        if self.eat("~") {
            return Ok(!self.unary()?);
        }
        if self.eat("-") {
            return Ok(self.unary()?.wrapping_neg());
        }
        if self.eat("+") {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<i64, String> {
        let token = self
            .peek()
            .map(str::to_owned)
            .ok_or("#if expression ends early")?;
        self.pos += 1;
        if token == "(" {
            let v = self.or()?;
            return if self.eat(")") {
                Ok(v)
            } else {
                Err("missing `)` in #if".to_owned())
            };
        }
        if token == "defined" {
            let paren = self.eat("(");
            let name = self
                .peek()
                .map(str::to_owned)
                .ok_or("`defined` without a name")?;
            self.pos += 1;
            if paren && !self.eat(")") {
                return Err("missing `)` after `defined(`".to_owned());
            }
            return Ok(i64::from(self.macros.contains_key(&name)));
        }
        if token.starts_with(|c: char| c.is_ascii_digit()) {
            return number(&token);
        }
        match self.macros.get(&token) {
            Some(text) => eval_at(text, self.macros, self.depth + 1),
            None => Ok(0),
        }
    }
}

/// A C integer literal (decimal, hex, octal; suffixes ignored).
fn number(token: &str) -> Result<i64, String> {
    let digits = token.trim_end_matches(['u', 'U', 'l', 'L']);
    let parsed = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16)
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8)
    } else {
        digits.parse()
    };
    parsed.map_err(|_| format!("`{token}` is not an integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_like_the_c_preprocessor() {
        let mut m = Macros::new();
        m.insert("F_CPU".into(), "48000000".into());
        m.insert("KINETISL".into(), "1".into());
        m.insert("ALIAS".into(), "F_CPU".into());
        let e = |s: &str| evaluate(s, &m).unwrap();
        assert_eq!(e("defined(KINETISL) && F_CPU == 48000000"), 1);
        assert_eq!(e("defined KINETISL && F_CPU == 24000000"), 0);
        assert_eq!(e("UNDEFINED == 0 && !defined(UNDEFINED)"), 1);
        assert_eq!(e("ALIAS / 1000000 == 48 || 0"), 1);
        assert_eq!(e("(1 + 2) * 3 % 5 - -1 > 4"), 1);
        assert_eq!(e("0x10 == 16 && 010 == 8 && 3UL >= 3"), 1);
        assert!(evaluate("1 / 0", &m).is_err());
        assert!(evaluate("(1", &m).is_err());
        assert!(evaluate("1 @ 2", &m).is_err());
        let mut looped = Macros::new();
        looped.insert("A".into(), "A".into());
        assert!(evaluate("A", &looped).is_err());
    }
}
