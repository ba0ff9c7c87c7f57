//! ext4-view's errors as guestfs errors about a path, features named as `mkfs.ext4` names them.

use ext4_view::Ext4Error;

use crate::error::GuestError;

/// `e`, met while reading `what`.
pub fn error(what: &str, e: Ext4Error) -> GuestError {
    match e {
        Ext4Error::NotFound => GuestError::NotFound { path: what.to_string() },
        Ext4Error::NotADirectory => GuestError::NotADirectory { path: what.to_string() },
        Ext4Error::IsADirectory | Ext4Error::IsASpecialFile => {
            GuestError::NotAFile { path: what.to_string() }
        }
        Ext4Error::Incompatible(i) => GuestError::Unsupported {
            what: what.to_string(),
            reason: format!("uses ext4 features vmvault cannot read yet: {}", feature_names(&i.to_string())),
        },
        Ext4Error::Encrypted => GuestError::Unsupported {
            what: what.to_string(),
            reason: "encrypted by the guest (fscrypt)".into(),
        },
        other => GuestError::corrupt(what, other),
    }
}

/// ext4-view's feature flags by the names `mkfs.ext4 -O` and `tune2fs` use.
fn feature_names(text: &str) -> String {
    [
        ("ENCRYPTED_INODES", "encrypt"),
        ("DATA_IN_DIR_ENTRY", "dirdata"),
        ("MULTIPLE_MOUNT_PROTECTION", "mmp"),
        ("SEPARATE_JOURNAL_DEVICE", "journal_dev"),
        ("COMPRESSION", "compression"),
    ]
    .iter()
    .fold(text.to_string(), |t, (flag, name)| t.replace(flag, name))
}
