//! A syntax check for CEL expressions (Common Expression Language), as used by
//! Telemetry access-log filters such as `response.code >= 400`.
//!
//! Only the grammar is checked (tokens, nesting, operator placement); names and
//! types are resolved by the proxy at run time. The goal is to refuse what the
//! proxy would refuse to parse, with a message that points into the expression.

/// Deepest nesting accepted, far beyond any real filter.
const MAX_DEPTH: usize = 100;

/// Words CEL reserves; they may not be used as identifiers.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Literal,
    /// `in`, which is an operator rather than an identifier.
    In,
    Punct(&'static str),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Literal => "a literal".into(),
            Tok::In => "`in`".into(),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::End => "the end of the expression".into(),
        }
    }
}

/// Checks that `expr` is a syntactically valid CEL expression.
pub fn check_syntax(expr: &str) -> Result<(), String> {
    let tokens = tokenize(expr)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    p.expr()?;
    match p.peek() {
        (Tok::End, _) => Ok(()),
        (tok, at) => Err(format!(
            "unexpected {} at column {}",
            tok.describe(),
            at + 1
        )),
    }
}

const PUNCTS: &[&str] = &[
    "&&", "||", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ".", ",", ":", "?", "!", "-",
    "+", "*", "/", "%", "<", ">",
];

/// Splits the expression into tokens, with the character offset of each.
fn tokenize(expr: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        // String and bytes literals, with optional r/b prefixes in either order.
        let mut j = i;
        let mut raw = false;
        while j < chars.len() && j - i < 2 && matches!(chars[j], 'r' | 'R' | 'b' | 'B') {
            raw |= matches!(chars[j], 'r' | 'R');
            j += 1;
        }
        if j < chars.len() && matches!(chars[j], '"' | '\'') {
            i = string_literal(&chars, j, raw)?;
            out.push((Tok::Literal, start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let tok = match word.as_str() {
                "true" | "false" | "null" => Tok::Literal,
                "in" => Tok::In,
                w if RESERVED.contains(&w) => {
                    return Err(format!(
                        "`{w}` at column {} is a reserved word and cannot be used as a name",
                        start + 1
                    ));
                }
                _ => Tok::Ident(word),
            };
            out.push((tok, start));
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            i = number_literal(&chars, i)?;
            out.push((Tok::Literal, start));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match PUNCTS.iter().find(|p| rest.starts_with(**p)) {
            Some(p) => {
                out.push((Tok::Punct(p), start));
                i += p.chars().count();
            }
            None => {
                return Err(format!(
                    "unexpected character {c:?} at column {}",
                    start + 1
                ));
            }
        }
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

/// Scans a quoted literal starting at the quote `chars[at]`; returns the index after it.
fn string_literal(chars: &[char], at: usize, raw: bool) -> Result<usize, String> {
    let quote = chars[at];
    let triple = chars.get(at + 1) == Some(&quote) && chars.get(at + 2) == Some(&quote);
    let mut i = if triple { at + 3 } else { at + 1 };
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(format!("unterminated string starting at column {}", at + 1));
        };
        if triple {
            if c == quote && chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote) {
                return Ok(i + 3);
            }
        } else if c == quote {
            return Ok(i + 1);
        } else if c == '\n' || c == '\r' {
            return Err(format!(
                "string starting at column {} runs past the end of the line",
                at + 1
            ));
        }
        if c == '\\' && !raw {
            i += escape_len(chars, i)?;
        } else {
            i += 1;
        }
    }
}

/// The length of the escape sequence starting with the backslash at `chars[at]`.
fn escape_len(chars: &[char], at: usize) -> Result<usize, String> {
    let bad = || format!("invalid escape sequence at column {}", at + 1);
    let hex = |n: usize| -> Result<usize, String> {
        let ok = (1..=n).all(|k| chars.get(at + 1 + k).is_some_and(char::is_ascii_hexdigit));
        if ok { Ok(n + 2) } else { Err(bad()) }
    };
    match chars.get(at + 1) {
        Some('\\' | '\'' | '"' | '`' | '?' | 'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v') => Ok(2),
        Some('x' | 'X') => hex(2),
        Some('u') => hex(4),
        Some('U') => hex(8),
        Some('0'..='3') => {
            let ok = (2..=3).all(|k| chars.get(at + k).is_some_and(|d| ('0'..='7').contains(d)));
            if ok { Ok(4) } else { Err(bad()) }
        }
        _ => Err(bad()),
    }
}

/// Scans an int, uint or double literal starting at `chars[at]`; returns the index after it.
fn number_literal(chars: &[char], at: usize) -> Result<usize, String> {
    let mut i = at;
    let digits = |i: &mut usize, hex: bool| {
        let start = *i;
        while *i < chars.len()
            && (chars[*i].is_ascii_digit() || (hex && chars[*i].is_ascii_hexdigit()))
        {
            *i += 1;
        }
        *i > start
    };
    if chars[i] == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
        i += 2;
        if !digits(&mut i, true) {
            return Err(format!("incomplete hex number at column {}", at + 1));
        }
        if matches!(chars.get(i), Some('u' | 'U')) {
            i += 1;
        }
    } else {
        digits(&mut i, false);
        let mut float = false;
        if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
            i += 1;
            digits(&mut i, false);
            float = true;
        }
        if matches!(chars.get(i), Some('e' | 'E')) {
            let mut j = i + 1;
            if matches!(chars.get(j), Some('+' | '-')) {
                j += 1;
            }
            if !digits(&mut j, false) {
                return Err(format!("incomplete exponent at column {}", i + 1));
            }
            i = j;
            float = true;
        }
        if !float && matches!(chars.get(i), Some('u' | 'U')) {
            i += 1;
        }
    }
    if chars
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
    {
        return Err(format!("malformed number at column {}", at + 1));
    }
    Ok(i)
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

type Step = Result<(), String>;

impl Parser {
    fn peek(&self) -> (&Tok, usize) {
        let (t, at) = &self.tokens[self.pos.min(self.tokens.len() - 1)];
        (t, *at)
    }

    fn is(&self, punct: &str) -> bool {
        matches!(self.peek().0, Tok::Punct(p) if *p == punct)
    }

    fn eat(&mut self, punct: &str) -> bool {
        if self.is(punct) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, punct: &str) -> Step {
        if self.eat(punct) {
            Ok(())
        } else {
            let (tok, at) = self.peek();
            Err(format!(
                "expected `{punct}` at column {} but found {}",
                at + 1,
                tok.describe()
            ))
        }
    }

    fn ident(&mut self) -> Step {
        match self.peek() {
            (Tok::Ident(_), _) => {
                self.pos += 1;
                Ok(())
            }
            (tok, at) => Err(format!(
                "expected a name at column {} but found {}",
                at + 1,
                tok.describe()
            )),
        }
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Step) -> Step {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("expression nests deeper than {MAX_DEPTH} levels"));
        }
        let out = f(self);
        self.depth -= 1;
        out
    }

    /// `or ["?" or ":" expr]`
    fn expr(&mut self) -> Step {
        self.nested(|p| {
            p.binary(0)?;
            if p.eat("?") {
                p.binary(0)?;
                p.expect(":")?;
                p.expr()?;
            }
            Ok(())
        })
    }

    /// Binary operators by precedence level: `||`, `&&`, relations, `+ -`, `* / %`.
    fn binary(&mut self, level: usize) -> Step {
        const LEVELS: &[&[&str]] = &[
            &["||"],
            &["&&"],
            &["<", "<=", ">", ">=", "==", "!="],
            &["+", "-"],
            &["*", "/", "%"],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        self.binary(level + 1)?;
        loop {
            let is_op = LEVELS[level].iter().any(|op| self.is(op))
                || (level == 2 && matches!(self.peek().0, Tok::In));
            if !is_op {
                return Ok(());
            }
            self.pos += 1;
            self.binary(level + 1)?;
        }
    }

    /// `{"!"} member | {"-"} member`
    fn unary(&mut self) -> Step {
        if self.eat("!") {
            while self.eat("!") {}
        } else if self.eat("-") {
            while self.eat("-") {}
        }
        self.member()
    }

    /// `primary {"." name ["(" args ")"] | "[" expr "]"}`, plus message construction
    /// `Qualified.Name{field: value}` after a plain dotted name.
    fn member(&mut self) -> Step {
        let mut qualified = self.primary()?;
        loop {
            if self.eat(".") {
                self.ident()?;
                if self.eat("(") {
                    self.list(")", Self::expr)?;
                    qualified = false;
                }
            } else if self.eat("[") {
                self.expr()?;
                self.expect("]")?;
                qualified = false;
            } else if qualified && self.eat("{") {
                self.list("}", |p| {
                    p.ident()?;
                    p.expect(":")?;
                    p.expr()
                })?;
                qualified = false;
            } else {
                return Ok(());
            }
        }
    }

    /// A primary expression; returns true when it is a plain (possibly dotted) name.
    fn primary(&mut self) -> Result<bool, String> {
        let leading_dot = self.eat(".");
        match self.peek() {
            (Tok::Ident(_), _) => {
                self.pos += 1;
                if self.eat("(") {
                    self.list(")", Self::expr)?;
                    return Ok(false);
                }
                Ok(true)
            }
            _ if leading_dot => {
                let (tok, at) = self.peek();
                Err(format!(
                    "expected a name after `.` at column {} but found {}",
                    at + 1,
                    tok.describe()
                ))
            }
            (Tok::Literal, _) => {
                self.pos += 1;
                Ok(false)
            }
            (Tok::Punct("("), _) => {
                self.pos += 1;
                self.expr()?;
                self.expect(")")?;
                Ok(false)
            }
            (Tok::Punct("["), _) => {
                self.pos += 1;
                self.list("]", Self::expr)?;
                Ok(false)
            }
            (Tok::Punct("{"), _) => {
                self.pos += 1;
                self.list("}", |p| {
                    p.expr()?;
                    p.expect(":")?;
                    p.expr()
                })?;
                Ok(false)
            }
            (tok, at) => Err(format!(
                "expected a value at column {} but found {}",
                at + 1,
                tok.describe()
            )),
        }
    }

    /// Comma-separated items up to `close` (already past the opener); a trailing
    /// comma is allowed.
    fn list(&mut self, close: &str, mut item: impl FnMut(&mut Self) -> Step) -> Step {
        self.nested(|p| {
            if p.eat(close) {
                return Ok(());
            }
            loop {
                item(p)?;
                if p.eat(close) {
                    return Ok(());
                }
                p.expect(",")?;
                if p.eat(close) {
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_syntax;

    #[test]
    fn accepts_real_filters() {
        for ok in [
            "true",
            "response.code >= 400",
            "response.code >= 400 || request.headers['x-debug'] == 'on'",
            "!(request.url_path.startsWith('/health'))",
            "connection.mtls && source.principal in ['a', 'b']",
            "xds.cluster_name.contains(\"outbound|80\") ? true : false",
            "size(request.headers) > 0u && 1.5e3 > -2.0",
            "{'a': 1, 'b': [1, 2,],}.a == 1",
            "google.protobuf.Duration{seconds: 5} > duration('1s')",
            "r'raw\\string' + b\"bytes\\x00\" + '''multi\nline'''",
            "a.b.c // trailing comment",
            "0xFF == 255 && .top.level",
        ] {
            assert!(check_syntax(ok).is_ok(), "{ok}: {:?}", check_syntax(ok));
        }
    }

    #[test]
    fn refuses_malformed_filters() {
        for bad in [
            "",
            "response.code >=",
            "(a == b",
            "a == b)",
            "a ==== b",
            "a.",
            "'unterminated",
            "a ? b",
            "if == 1",
            "a $ b",
            "1abc",
            "'\\q'",
            "f(a,,b)",
            "response.code = 400",
        ] {
            assert!(check_syntax(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = "(".repeat(10_000) + "1" + &")".repeat(10_000);
        assert!(check_syntax(&deep).is_err());
    }
}
