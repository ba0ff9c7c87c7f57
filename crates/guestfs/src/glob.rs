//! Shell-style globs over guest names (which are bytes, not always UTF-8).

/// Shell-style glob over bytes: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let (mut star_p, mut star_n) = (None, 0);
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star_p = Some(p);
                star_n = n;
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                n += 1;
                continue;
            }
            Some(b'[') => {
                if let Some((matched, len)) = class(&pattern[p..], name[n])
                    && matched
                {
                    p += len;
                    n += 1;
                    continue;
                }
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star_p {
            Some(sp) => {
                p = sp + 1;
                star_n += 1;
                n = star_n;
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Match one byte against a `[...]` class at the start of `pattern`: (matched, class length).
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let end = pattern.iter().skip(2).position(|&b| b == b']')? + 2;
    let body = &pattern[1..end];
    let (negate, body) = match body.first() {
        Some(b'!') | Some(b'^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut matched = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == b'-' {
            matched |= (body[i]..=body[i + 2]).contains(&c);
            i += 3;
        } else {
            matched |= body[i] == c;
            i += 1;
        }
    }
    Some((matched != negate, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        for (p, n, want) in [
            ("*.conf", "resolv.conf", true),
            ("*.conf", "resolv.conf.bak", false),
            ("host?", "hosts", true),
            ("[a-c]*", "bash", true),
            ("[!a-c]*", "bash", false),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ] {
            assert_eq!(glob(p.as_bytes(), n.as_bytes()), want, "{p} vs {n}");
        }
    }
}
