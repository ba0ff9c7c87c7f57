//! A tree of files as the kernel shows it — kind, mode, owner, mtime, content, hard links,
//! holes, extended attributes — and the differences between two such trees: what an
//! extraction is held to.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// One entry of a tree as the kernel shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `file`, `dir`, `link` or `special`.
    pub kind: &'static str,
    /// Permission bits (without the type).
    pub mode: u32,
    /// Owner and group.
    pub owner: (u32, u32),
    /// Modification time in seconds (directories: 0, as extraction changes them).
    pub mtime: i64,
    /// File content or symlink target.
    pub data: Vec<u8>,
    /// For a file with several names: the first of them (by path) in the tree.
    pub linked_to: Option<String>,
    /// Whether a file has holes (fewer bytes allocated than its length).
    pub sparse: bool,
    /// Extended attributes (ACLs, SELinux labels, capabilities, `user.*`…) by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The extended attributes of `path`, not following a link, as the kernel lists them — but
/// for XFS's second listing of an ACL: to root, XFS lists it both as `system.posix_acl_*` and
/// as the raw `trusted.SGI_ACL_*` it is stored as, which means nothing on another filesystem
/// (extraction restores the ACL as `system.posix_acl_*`).
pub fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
    let mut names = vec![0u8; 65536];
    // SAFETY: c_path is NUL-terminated and names is a live buffer of the length given.
    let n = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {}: {}", path.display(), std::io::Error::last_os_error());
    let mut out = BTreeMap::new();
    let xfs_alias = |n: &[u8]| n == b"trusted.SGI_ACL_FILE" || n == b"trusted.SGI_ACL_DEFAULT";
    for name in names[..n as usize].split(|&b| b == 0).filter(|n| !n.is_empty() && !xfs_alias(n)) {
        let c_name = std::ffi::CString::new(name).expect("a name without NUL");
        let mut value = vec![0u8; 65536];
        // SAFETY: as above; value is a live buffer of the length given.
        let len = unsafe {
            libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_mut_ptr().cast(), value.len())
        };
        assert!(len >= 0, "getxattr {} {name:?}: {}", path.display(), std::io::Error::last_os_error());
        value.truncate(len as usize);
        out.insert(name.to_vec(), value);
    }
    out
}

/// Every entry under `root`, by relative path.
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut names: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a test directory") {
            let path = entry.expect("a directory entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat a test path");
            let rel = path.strip_prefix(root).expect("under the root").to_string_lossy().into_owned();
            let ft = meta.file_type();
            let (kind, data) = if ft.is_symlink() {
                ("link", std::fs::read_link(&path).expect("a link").into_os_string().into_encoded_bytes())
            } else if ft.is_dir() {
                stack.push(path.clone());
                ("dir", vec![])
            } else if ft.is_file() {
                ("file", std::fs::read(&path).expect("read a test file"))
            } else {
                ("special", vec![])
            };
            if kind == "file" && meta.nlink() > 1 {
                names.entry((meta.dev(), meta.ino())).or_default().push(rel.clone());
            }
            let mode = if kind == "link" { 0 } else { meta.permissions().mode() & 0o7777 };
            let mtime = if kind == "dir" { 0 } else { meta.mtime() };
            let sparse = kind == "file" && meta.blocks() * 512 < meta.len();
            let xattrs = xattrs(&path);
            let node = Node {
                kind,
                mode,
                owner: (meta.uid(), meta.gid()),
                mtime,
                data,
                linked_to: None,
                sparse,
                xattrs,
            };
            out.insert(rel, node);
        }
    }
    for mut group in names.into_values().filter(|g| g.len() > 1) {
        group.sort();
        for name in &group {
            if let Some(node) = out.get_mut(name) {
                node.linked_to = Some(group[0].clone());
            }
        }
    }
    out
}

/// The differences between two trees, one line each (empty when equal). A file sparse in
/// `want` must be sparse in `got`; `got` may have holes where `want` had allocated zeros.
pub fn differences(want: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in want {
        let Some(g) = got.get(path) else {
            out.push(format!("{path}: missing"));
            continue;
        };
        let same = (w.kind, w.mode, w.owner, w.mtime, &w.data, &w.linked_to)
            == (g.kind, g.mode, g.owner, g.mtime, &g.data, &g.linked_to)
            && (!w.sparse || g.sparse);
        if w.xattrs != g.xattrs {
            let names = |n: &Node| {
                n.xattrs.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>()
            };
            out.push(format!("{path}: xattrs want {:?}, got {:?}", names(w), names(g)));
        }
        if !same {
            out.push(format!(
                "{path}: want {} {:o} {:?} t={} {} bytes link={:?} sparse={}, got {} {:o} {:?} t={} {} bytes link={:?} sparse={}",
                w.kind, w.mode, w.owner, w.mtime, w.data.len(), w.linked_to, w.sparse,
                g.kind, g.mode, g.owner, g.mtime, g.data.len(), g.linked_to, g.sparse
            ));
        }
    }
    out.extend(got.keys().filter(|k| !want.contains_key(*k)).map(|k| format!("{k}: not in the reference")));
    out
}
