//! LVM2's text metadata format: `name = value` settings and `name { … }` sections, values
//! being numbers, quoted strings or `[ … ]` lists, `#` comments to the end of the line. The
//! text comes from a guest disk: sizes and nesting are bounded, and nothing here panics.

use crate::error::{GuestError, Result};

/// Metadata larger than this is refused (LVM's own default area is 1 MiB).
const MAX_TEXT: usize = 16 << 20;
/// Deepest nesting of sections and lists accepted.
const MAX_DEPTH: usize = 32;

/// One value of the metadata.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A string (quotes removed, escapes resolved).
    Str(String),
    /// A `[ … ]` list.
    List(Vec<Value>),
    /// A `{ … }` section: its settings and subsections in order.
    Section(Vec<(String, Value)>),
}

impl Value {
    /// The setting or subsection `key` of a section.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entries of a section.
    pub fn entries(&self) -> &[(String, Value)] {
        match self {
            Value::Section(items) => items,
            _ => &[],
        }
    }

    /// An integer setting.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    /// A string setting.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A list setting.
    pub fn list(&self, key: &str) -> Option<&[Value]> {
        match self.get(key) {
            Some(Value::List(items)) => Some(items),
            _ => None,
        }
    }
}

/// Parse metadata text into its top-level section.
pub fn parse(text: &[u8]) -> Result<Value> {
    if text.len() > MAX_TEXT {
        return Err(GuestError::corrupt("LVM metadata", "larger than 16 MiB"));
    }
    let mut parser = Parser { text, at: 0 };
    let items = parser.section_body(0, false)?;
    Ok(Value::Section(items))
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

fn bad(reason: impl std::fmt::Display) -> GuestError {
    GuestError::corrupt("LVM metadata", reason)
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<u8> {
        loop {
            match self.text.get(self.at)? {
                b' ' | b'\t' | b'\r' | b'\n' | 0 => self.at += 1,
                b'#' => {
                    while self.text.get(self.at).is_some_and(|&c| c != b'\n') {
                        self.at += 1;
                    }
                }
                &c => return Some(c),
            }
        }
    }

    fn expect(&mut self, want: u8) -> Result<()> {
        match self.peek() {
            Some(c) if c == want => {
                self.at += 1;
                Ok(())
            }
            other => Err(bad(format!(
                "expected {:?} at byte {}, found {:?}",
                want as char,
                self.at,
                other.map(|c| c as char)
            ))),
        }
    }

    fn word(&mut self) -> Result<String> {
        let start = self.at;
        while self.text.get(self.at).is_some_and(|c| c.is_ascii_alphanumeric() || b"_.+-".contains(c)) {
            self.at += 1;
        }
        if start == self.at {
            return Err(bad(format!("expected a name at byte {start}")));
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    /// Settings and sections up to `}` (nested) or the end of the text (top level).
    fn section_body(&mut self, depth: usize, nested: bool) -> Result<Vec<(String, Value)>> {
        if depth > MAX_DEPTH {
            return Err(bad("nested too deeply"));
        }
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None if !nested => return Ok(items),
                None => return Err(bad("a section is not closed")),
                Some(b'}') if nested => {
                    self.at += 1;
                    return Ok(items);
                }
                Some(_) => {}
            }
            let key = self.word()?;
            match self.peek() {
                Some(b'{') => {
                    self.at += 1;
                    items.push((key, Value::Section(self.section_body(depth + 1, true)?)));
                }
                Some(b'=') => {
                    self.at += 1;
                    items.push((key, self.value(depth + 1)?));
                }
                other => {
                    return Err(bad(format!(
                        "expected `=` or `{{` after {key:?}, found {:?}",
                        other.map(|c| c as char)
                    )));
                }
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(bad("nested too deeply"));
        }
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {}
                        other => {
                            return Err(bad(format!(
                                "expected `,` or `]`, found {:?}",
                                other.map(|c| c as char)
                            )));
                        }
                    }
                }
            }
            Some(_) => {
                let word = self.word()?;
                Ok(word.parse().map(Value::Int).unwrap_or(Value::Str(word)))
            }
            None => Err(bad("a value is missing at the end")),
        }
    }

    fn string(&mut self) -> Result<Value> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.text.get(self.at) {
                None => return Err(bad("a string is not closed")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') => {
                    if let Some(&c) = self.text.get(self.at + 1) {
                        out.push(c);
                    }
                    self.at += 2;
                }
                Some(&c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_as_lvm_writes_it_parses() {
        let text = br#"
vg0 {
id = "abc-def"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 8192 # 4 Megabytes
physical_volumes {
pv0 {
id = "x\"y"
pe_start = 2048
}
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
"#;
        let top = parse(text).unwrap();
        let vg = top.get("vg0").unwrap();
        assert_eq!(vg.int("seqno"), Some(3));
        assert_eq!(vg.list("status").map(|l| l.len()), Some(3));
        assert_eq!(vg.get("physical_volumes").unwrap().get("pv0").unwrap().str("id"), Some("x\"y"));
        assert_eq!(top.str("contents"), Some("Text Format Volume Group"));
    }

    #[test]
    fn unclosed_and_deep_metadata_is_refused() {
        assert!(parse(b"vg { a = 1").is_err());
        assert!(parse(b"a = [1, 2").is_err());
        let deep = "a = ".to_string() + &"[".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
