//! The shape of the code, checked: no import circle between the files of one crate, no source
//! file over 600 lines, and object-key prefixes spelled only in `vault::layout`.
//!
//! A module depends on another when its code names a path into it (`crate::a::b`, `super::x`,
//! a child `c::…`). The crate root (`lib.rs`, `main.rs`) is the facade of re-exports and is
//! left out, as are a module's re-exports of its own children (`pub use child::Item;`). Code after a file's first `#[cfg(test)]` (its unit tests) is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

/// A module path inside one crate, `""` for the root.
type Module = String;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A crate's name, its `src` folder and every Rust file in it.
struct CrateSources {
    name: String,
    src: PathBuf,
    files: Vec<PathBuf>,
}

fn crate_sources() -> Vec<CrateSources> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("src").is_dir() {
            let mut files = Vec::new();
            rust_files(&dir.join("src"), &mut files);
            files.sort();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            out.push(CrateSources { name, src: dir.join("src"), files });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` → `a::b`, `a/mod.rs` → `a`, `lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments, string contents and its unit tests.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
        } else if text[i..].starts_with("/*") {
            i = text[i..].find("*/").map_or(bytes.len(), |n| i + n + 2);
        } else if bytes[i] == b'"' {
            // Skip a string literal (escapes respected); raw strings here hold no paths.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `at` (just after `crate::`, `super::`, or a child's `name::`),
/// expanded through `{…}` groups, as lists of segments.
fn paths_at(code: &str, at: usize) -> Vec<Vec<String>> {
    let rest = &code[at..];
    let mut segments = Vec::new();
    let mut pos = 0;
    loop {
        let ident: String = rest[pos..].chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            break;
        }
        pos += ident.len();
        segments.push(ident);
        if rest[pos..].starts_with("::") {
            pos += 2;
        } else {
            return vec![segments];
        }
    }
    if !rest[pos..].starts_with('{') {
        return vec![segments];
    }
    // A group: split at top-level commas, recurse into each item.
    let mut depth = 0;
    let mut start = pos + 1;
    let mut out = Vec::new();
    for (i, c) in rest[pos..].char_indices() {
        let i = pos + i;
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let item = rest[start..i].trim();
                if !item.is_empty() {
                    let offset = at + start + (rest[start..i].len() - rest[start..i].trim_start().len());
                    for tail in paths_at(code, offset) {
                        out.push(segments.iter().cloned().chain(tail).collect());
                    }
                }
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    out
}

/// The deepest module of `modules` that `path` (absolute segments) names.
fn resolve(modules: &BTreeSet<Module>, path: &[String]) -> Module {
    (0..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains(m)).unwrap_or_default()
}

fn dependencies(module: &str, code: &str, modules: &BTreeSet<Module>) -> BTreeSet<Module> {
    let own: Vec<String> =
        if module.is_empty() { vec![] } else { module.split("::").map(String::from).collect() };
    let children: Vec<String> = modules
        .iter()
        .filter_map(|m| m.strip_prefix(&format!("{module}::")))
        .filter(|r| !r.contains("::"))
        .map(String::from)
        .collect();
    let mut deps = BTreeSet::new();
    let mut add = |base: &[String], at: usize| {
        for tail in paths_at(code, at) {
            let full: Vec<String> = base.iter().cloned().chain(tail).collect();
            deps.insert(resolve(modules, &full));
        }
    };
    for (i, _) in code.match_indices("crate::") {
        if i == 0 || !is_ident(code[..i].chars().last().unwrap_or(' ')) {
            add(&[], i + "crate::".len());
        }
    }
    for (i, _) in code.match_indices("super::") {
        if i > 0 && is_ident(code[..i].chars().last().unwrap_or(' ')) || code[..i].ends_with("super::") {
            continue;
        }
        let mut at = i;
        let mut base = own.clone();
        while code[at..].starts_with("super::") {
            base.pop();
            at += "super::".len();
        }
        add(&base, at);
    }
    for child in &children {
        let pattern = format!("{child}::");
        for (i, _) in code.match_indices(&pattern) {
            let before = code[..i].chars().last().unwrap_or(' ');
            let line = code[..i].rsplit('\n').next().unwrap_or_default().trim_start();
            // `pub use child::Item;` re-exports, like `pub mod child;`: the facade, not a use.
            if !is_ident(before) && before != ':' && line != "pub use " {
                let base: Vec<String> = own.iter().cloned().chain([child.clone()]).collect();
                add(&base, i + pattern.len());
            }
        }
    }
    deps.retain(|d| !d.is_empty() && d != module);
    deps
}

/// Strongly connected components of more than one module (Tarjan).
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.index[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.out
}

#[test]
fn no_file_imports_a_module_that_imports_it_back() {
    let mut found = Vec::new();
    for CrateSources { name, src, files } in crate_sources() {
        let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut graph = BTreeMap::new();
        for file in &files {
            let module = module_of(&src, file);
            if module.is_empty() {
                continue;
            }
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            graph.insert(module.clone(), dependencies(&module, &code, &modules));
        }
        for circle in circles(&graph) {
            let edges: Vec<String> = circle
                .iter()
                .map(|m| {
                    let inside: Vec<&str> =
                        graph[m].iter().filter(|d| circle.contains(d)).map(String::as_str).collect();
                    format!("{m} → {}", inside.join(", "))
                })
                .collect();
            found.push(format!("crate {name}: {}", edges.join("; ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    let modules: BTreeSet<Module> = ["", "a", "b", "c", "c::d"].into_iter().map(String::from).collect();
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), dependencies("a", &code_of("use crate::{b::X, c};"), &modules));
    graph.insert("b".to_string(), dependencies("b", &code_of("fn f() { crate::a::g() }"), &modules));
    graph.insert("c".to_string(), dependencies("c", &code_of("use d::Y; // crate::a"), &modules));
    graph.insert("c::d".to_string(), dependencies("c::d", &code_of("use super::Z;"), &modules));
    assert_eq!(graph["a"], ["b", "c"].into_iter().map(String::from).collect());
    let mut found = circles(&graph);
    found.sort();
    assert_eq!(found, vec![vec!["a".to_string(), "b".to_string()], vec!["c".into(), "c::d".into()]]);
    // A parent that only re-exports its child is no circle.
    let reexport = dependencies("c", &code_of("pub use d::Y;\nfn f() {}"), &modules);
    assert!(reexport.is_empty(), "{reexport:?}");
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut long = Vec::new();
    for file in crate_sources().into_iter().flat_map(|c| c.files) {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        if lines > MAX_LINES {
            long.push(format!(
                "{} ({lines} lines)",
                file.strip_prefix(workspace()).unwrap_or(&file).display()
            ));
        }
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn object_key_prefixes_are_spelled_only_in_the_layout_module() {
    let prefixes = ["catalog/", "points/", "chunks/", "jobs/", "sessions/", "gc/"];
    let layout = Path::new("vault/src/layout.rs");
    let mut found = Vec::new();
    for file in crate_sources().into_iter().flat_map(|c| c.files).filter(|f| !f.ends_with(layout)) {
        for (n, line) in std::fs::read_to_string(&file).unwrap().lines().enumerate() {
            if prefixes.iter().any(|p| line.contains(&format!("\"{p}"))) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "object keys spelled outside vault::layout:\n{}", found.join("\n"));
}
