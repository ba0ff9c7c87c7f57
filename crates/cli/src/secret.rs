//! Where passphrases and recovery keys come from: a file, an environment variable, or a
//! hidden prompt on a terminal — never a command-line argument, which other users can read.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use vault::Passphrase;
use zeroize::Zeroizing;

/// Where to look for one secret, in order.
pub struct Source<'a> {
    /// A file named by a flag.
    pub file: Option<&'a Path>,
    /// The flag's name, for messages.
    pub file_flag: &'a str,
    /// An environment variable.
    pub env: &'a str,
    /// What to ask on a terminal.
    pub prompt: &'a str,
}

impl Source<'_> {
    /// Read the secret; on a terminal, `confirm` asks twice and insists they match.
    pub fn read(&self, confirm: bool) -> Result<Zeroizing<String>> {
        if let Some(path) = self.file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {} {}", self.file_flag, path.display()))?;
            return Ok(Zeroizing::new(text));
        }
        if let Ok(text) = std::env::var(self.env) {
            return Ok(Zeroizing::new(text));
        }
        if !std::io::stdin().is_terminal() {
            bail!(
                "no secret given for \"{}\": use {} FILE, set {}, or run on a terminal",
                self.prompt.trim_end_matches(": "),
                self.file_flag,
                self.env
            );
        }
        let first =
            Zeroizing::new(rpassword::prompt_password(self.prompt).context("cannot read from the terminal")?);
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Again, to confirm: ").context("cannot read from the terminal")?,
            );
            if *first != *again {
                bail!("the two entries differ; nothing was changed");
            }
        }
        Ok(first)
    }

    /// Read a passphrase, refusing an empty one.
    pub fn passphrase(&self, confirm: bool) -> Result<Passphrase> {
        let passphrase = Passphrase::new(self.read(confirm)?.to_string());
        if passphrase.is_empty() {
            bail!("the passphrase is empty; choose a non-empty one");
        }
        Ok(passphrase)
    }
}

/// The current passphrase: --passphrase-file, $VMVAULT_PASSPHRASE, or a prompt.
pub fn current(file: Option<&Path>) -> Source<'_> {
    Source { file, file_flag: "--passphrase-file", env: "VMVAULT_PASSPHRASE", prompt: "Vault passphrase: " }
}

/// A new passphrase: --new-passphrase-file, $VMVAULT_NEW_PASSPHRASE, or a prompt.
pub fn new(file: Option<&Path>) -> Source<'_> {
    Source {
        file,
        file_flag: "--new-passphrase-file",
        env: "VMVAULT_NEW_PASSPHRASE",
        prompt: "New passphrase: ",
    }
}
