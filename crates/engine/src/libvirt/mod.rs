//! libvirt: domain definitions read into VM registrations and written for restored VMs
//! ([`definition`]), and a connection to libvirtd ([`host`]) for what only libvirt may do
//! on the domains it runs — their backup API, checkpoints, guest-agent freeze, state.
//!
//! The connection needs libvirt's C library: it is the default-on cargo feature `libvirt`.
//! Built without it, every other command works and the libvirt ones say how to get it.

pub mod definition;
#[cfg(feature = "libvirt")]
pub mod host;
pub mod restored;

pub use definition::{domain_xml, parse_definition, parse_domain, qemu_script, target_dev};
pub use restored::{Attach, restored_xml};

use crate::error::EngineError;

/// What a libvirt command says when vmvault was built without libvirt.
pub fn absent(uri: &str) -> EngineError {
    EngineError::Libvirt {
        what: uri.to_string(),
        message: "this vmvault was built without libvirt (cargo feature `libvirt`, needs libvirt-dev); \
                  rebuild with it, or register the VM with `vm add` and its QMP socket"
            .into(),
    }
}

/// The libvirt URI when none is given: `$VMVAULT_LIBVIRT`, else the system daemon.
pub fn default_uri() -> String {
    std::env::var("VMVAULT_LIBVIRT").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "qemu:///system".into())
}

/// Registrations for domains read from libvirt at `uri` (see [`host::read_domains`]).
pub fn read_domains(
    uri: &str,
    names: &[String],
    all: bool,
) -> crate::error::Result<Vec<crate::services::vms::NewVm>> {
    #[cfg(feature = "libvirt")]
    return host::read_domains(uri, names, all);
    #[cfg(not(feature = "libvirt"))]
    {
        let _ = (names, all);
        Err(absent(uri))
    }
}

/// Define (and start) a domain at `uri` (see [`host::define`]).
pub fn define(uri: &str, xml: &str, start: bool) -> crate::error::Result<crate::catalog::vm::LibvirtLink> {
    #[cfg(feature = "libvirt")]
    return host::define(uri, xml, start);
    #[cfg(not(feature = "libvirt"))]
    {
        let _ = (xml, start);
        Err(absent(uri))
    }
}
