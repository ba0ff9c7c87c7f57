//! A connection to libvirtd through its C API (the `virt` crate, and `virt::sys` for the
//! backup and checkpoint calls that have no safe wrapper yet). libvirt owns the monitor and
//! the guest-agent channel of the domains it runs, so everything vmvault does to a running
//! libvirt domain goes through here: its state, its definition, the agent freeze, pull-mode
//! backups and the checkpoints that make them incremental.

use std::ffi::{CStr, CString};
use std::ptr;

use virt::connect::Connect;
use virt::sys;

use crate::catalog::vm::LibvirtLink;
use crate::error::{EngineError, Result};
use crate::services::vms::NewVm;

/// What a domain is doing, as far as a backup cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Running (or blocked): backed up live through the backup API.
    Running,
    /// Paused; `io_error` when QEMU paused it on a failed write.
    Paused {
        /// Paused because a write failed (a full disk, a full fleecing scratch).
        io_error: bool,
    },
    /// Shut off; `clean` when the guest shut itself down (its file systems were unmounted).
    ShutOff {
        /// The guest shut down (not destroyed, crashed or failed to start).
        clean: bool,
    },
    /// Anything else (being shut down, crashed, suspended to memory): libvirt's state number.
    Other(i32),
}

impl DomainState {
    /// Whether QEMU runs for this domain (its images are then in use).
    pub fn is_active(self) -> bool {
        !matches!(self, DomainState::ShutOff { .. })
    }
}

/// A connection to one libvirt daemon.
pub struct Host {
    conn: Connect,
    uri: String,
}

/// One libvirt domain.
pub struct Domain {
    dom: virt::domain::Domain,
    name: String,
    uri: String,
}

fn failed(what: &str, e: virt::error::Error) -> EngineError {
    EngineError::Libvirt { what: what.to_string(), message: e.message().to_string() }
}

impl Host {
    /// Connect to the daemon at `uri` (`qemu:///system`).
    pub fn connect(uri: &str) -> Result<Host> {
        // libvirt prints every error to stderr unless told not to: vmvault reports its own.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| EngineError::Libvirt {
            what: uri.to_string(),
            message: format!(
                "cannot connect ({}); is libvirtd running, and may this user reach it?",
                e.message()
            ),
        })?;
        Ok(Host { conn, uri: uri.to_string() })
    }

    /// The domain with this UUID, or else this name.
    pub fn domain(&self, uuid_or_name: &str) -> Result<Domain> {
        let dom = self
            .conn
            .lookup_domain_by_uuid_string(uuid_or_name)
            .or_else(|_| self.conn.lookup_domain_by_name(uuid_or_name))
            .map_err(|e| EngineError::Libvirt {
                what: self.uri.clone(),
                message: format!("no domain {uuid_or_name:?} ({}); see `virsh list --all`", e.message()),
            })?;
        self.wrap(dom)
    }

    /// Every domain libvirt knows, defined or running.
    pub fn domains(&self) -> Result<Vec<Domain>> {
        let all = self.conn.list_all_domains(0).map_err(|e| failed(&self.uri, e))?;
        all.into_iter().map(|d| self.wrap(d)).collect()
    }

    /// Define a persistent domain from its XML.
    pub fn define(&self, xml: &str) -> Result<Domain> {
        let dom = self.conn.define_domain_xml(xml).map_err(|e| failed(&self.uri, e))?;
        self.wrap(dom)
    }

    fn wrap(&self, dom: virt::domain::Domain) -> Result<Domain> {
        let name = dom.name().map_err(|e| failed(&self.uri, e))?;
        Ok(Domain { dom, name, uri: self.uri.clone() })
    }
}

impl Domain {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn what(&self) -> String {
        format!("domain {} on {}", self.name, self.uri)
    }

    fn fail(&self, e: virt::error::Error) -> EngineError {
        failed(&self.what(), e)
    }

    /// Check a raw libvirt call's result (negative is failure).
    fn check(&self, rc: i32, doing: &str) -> Result<i32> {
        if rc < 0 {
            let e = virt::error::Error::last_error();
            return Err(EngineError::Libvirt {
                what: self.what(),
                message: format!("{doing}: {}", e.message()),
            });
        }
        Ok(rc)
    }

    /// Its UUID.
    pub fn uuid(&self) -> Result<String> {
        self.dom.uuid_string().map_err(|e| self.fail(e))
    }

    /// Its definition: the persistent one (`inactive`, what a restore re-creates), or the
    /// running one (with the DAC label QEMU runs under and the current disks).
    pub fn xml(&self, inactive: bool) -> Result<String> {
        let flags = if inactive { sys::VIR_DOMAIN_XML_INACTIVE } else { 0 };
        self.dom.xml_desc(flags).map_err(|e| self.fail(e))
    }

    /// What it is doing.
    pub fn state(&self) -> Result<DomainState> {
        let (mut state, mut reason) = (-1, -1);
        // SAFETY: the domain pointer is alive while `self` is; libvirt fills the two ints.
        let rc = unsafe { sys::virDomainGetState(self.dom.as_ptr(), &mut state, &mut reason, 0) };
        self.check(rc, "reading the state")?;
        Ok(match state as u32 {
            sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => DomainState::Running,
            sys::VIR_DOMAIN_PAUSED => {
                DomainState::Paused { io_error: reason as u32 == sys::VIR_DOMAIN_PAUSED_IOERROR }
            }
            sys::VIR_DOMAIN_SHUTOFF => {
                DomainState::ShutOff { clean: reason as u32 == sys::VIR_DOMAIN_SHUTOFF_SHUTDOWN }
            }
            other => DomainState::Other(other as i32),
        })
    }

    /// Start it.
    pub fn start(&self) -> Result<()> {
        self.dom.create().map(|_| ()).map_err(|e| self.fail(e))
    }

    /// Resume a paused domain.
    pub fn resume(&self) -> Result<()> {
        self.dom.resume().map(|_| ()).map_err(|e| self.fail(e))
    }

    /// Freeze the guest's file systems through the agent libvirt holds; how many froze.
    pub fn freeze(&self) -> Result<i32> {
        // SAFETY: no mount points given (all of them); the domain pointer is alive.
        let rc = unsafe { sys::virDomainFSFreeze(self.dom.as_ptr(), ptr::null_mut(), 0, 0) };
        self.check(rc, "freezing file systems")
    }

    /// Thaw what [`Domain::freeze`] froze.
    pub fn thaw(&self) -> Result<()> {
        // SAFETY: as for freeze.
        let rc = unsafe { sys::virDomainFSThaw(self.dom.as_ptr(), ptr::null_mut(), 0, 0) };
        self.check(rc, "thawing file systems").map(|_| ())
    }

    /// The names of its checkpoints.
    pub fn checkpoints(&self) -> Result<Vec<String>> {
        let mut list: *mut sys::virDomainCheckpointPtr = ptr::null_mut();
        // SAFETY: libvirt allocates the array and a reference per checkpoint; each is freed
        // below, then the array.
        let n = unsafe { sys::virDomainListAllCheckpoints(self.dom.as_ptr(), &mut list, 0) };
        let n = self.check(n, "listing checkpoints")?;
        let mut names = Vec::new();
        for i in 0..n as usize {
            // SAFETY: `i < n` entries were returned.
            unsafe {
                let cp = *list.add(i);
                let name = sys::virDomainCheckpointGetName(cp);
                if !name.is_null() {
                    names.push(CStr::from_ptr(name).to_string_lossy().into_owned());
                }
                sys::virDomainCheckpointFree(cp);
            }
        }
        if !list.is_null() {
            // SAFETY: the array libvirt allocated.
            unsafe { libc::free(list.cast()) };
        }
        Ok(names)
    }

    /// Delete a checkpoint: libvirt removes or merges its bitmaps. One whose bitmap is gone
    /// from an image cannot be deleted so; then only libvirt's record of it is, and the error
    /// says so (bitmaps it left in other images stay until a stopped backup removes them).
    pub fn delete_checkpoint(&self, name: &str) -> Result<()> {
        let c = cstring(name)?;
        // SAFETY: a valid C string; the checkpoint reference is freed after use.
        unsafe {
            let cp = sys::virDomainCheckpointLookupByName(self.dom.as_ptr(), c.as_ptr(), 0);
            if cp.is_null() {
                self.check(-1, &format!("finding checkpoint {name}"))?;
            }
            let doing = format!("deleting checkpoint {name}");
            let result = match self.check(sys::virDomainCheckpointDelete(cp, 0), &doing) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let flag = sys::VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY;
                    self.check(sys::virDomainCheckpointDelete(cp, flag), &doing).and_then(|_| {
                        Err(EngineError::Libvirt {
                            what: self.what(),
                            message: format!("{e}; only libvirt's record of checkpoint {name} was deleted"),
                        })
                    })
                }
            };
            sys::virDomainCheckpointFree(cp);
            result
        }
    }

    /// Start a pull-mode backup job (`backup` is a `<domainbackup>`), creating the checkpoint
    /// `checkpoint` (a `<domaincheckpoint>`) at the same instant.
    pub fn begin_backup(&self, backup: &str, checkpoint: Option<&str>) -> Result<()> {
        let backup = cstring(backup)?;
        let checkpoint = checkpoint.map(cstring).transpose()?;
        let cp = checkpoint.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        // SAFETY: valid C strings for the duration of the call.
        let rc = unsafe { sys::virDomainBackupBegin(self.dom.as_ptr(), backup.as_ptr(), cp, 0) };
        self.check(rc, "starting the backup").map(|_| ())
    }

    /// End the domain's job (a pull-mode backup ends this way, finished or not).
    pub fn end_job(&self) -> Result<()> {
        // SAFETY: the domain pointer is alive.
        let rc = unsafe { sys::virDomainAbortJob(self.dom.as_ptr()) };
        self.check(rc, "ending the backup job").map(|_| ())
    }

    /// Whether a backup job of this domain is running.
    pub fn backup_running(&self) -> bool {
        // SAFETY: the domain pointer is alive; the returned string is freed.
        unsafe {
            let xml = sys::virDomainBackupGetXMLDesc(self.dom.as_ptr(), 0);
            if xml.is_null() {
                return false;
            }
            libc::free(xml.cast());
            true
        }
    }
}

fn cstring(text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| EngineError::Invalid(format!("{text:?} holds a NUL byte")))
}

/// Registrations for domains read from libvirt at `uri`: those named (by name or UUID), or
/// every one with `all`. Each keeps its UUID and definition; libvirt's agent channel and
/// monitor are never stored (libvirt owns them).
pub fn read_domains(uri: &str, names: &[String], all: bool) -> Result<Vec<NewVm>> {
    let host = Host::connect(uri)?;
    let domains =
        if all { host.domains()? } else { names.iter().map(|n| host.domain(n)).collect::<Result<_>>()? };
    domains
        .into_iter()
        .map(|d| {
            let definition = d.xml(true)?;
            let mut new = super::definition::parse_definition(&definition, &d.what())?;
            new.uuid = Some(d.uuid()?);
            new.libvirt = Some(LibvirtLink { uri: uri.to_string(), definition });
            Ok(new)
        })
        .collect()
}

/// Define the domain whose XML is `xml` at `uri` (and start it with `start`); returns how
/// the VM is reached through libvirt from now on.
pub fn define(uri: &str, xml: &str, start: bool) -> Result<LibvirtLink> {
    let host = Host::connect(uri)?;
    let domain = host.define(xml)?;
    let link = LibvirtLink { uri: uri.to_string(), definition: domain.xml(true)? };
    if start {
        domain.start().map_err(|e| EngineError::Libvirt {
            what: domain.what(),
            message: format!("defined, but it did not start: {e}"),
        })?;
    }
    Ok(link)
}
