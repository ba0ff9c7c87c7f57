//! Reading a libvirt domain definition into a VM registration, and writing what runs a
//! restored VM: a domain XML (see [`super::restored`] when the source definition is known) and
//! a `qemu-system-x86_64` script that runs headless as it is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::catalog::vm::{Nic, VmRecord};
use crate::error::{EngineError, Result};
use crate::services::vms::NewVm;

/// Read name, UUID, vCPUs, memory, disks and NICs from a domain XML file. libvirt owns the
/// agent channel of its domains, so no agent socket is taken from it: import the domain from
/// libvirt itself (`vm import-libvirt NAME`) for frozen points.
pub fn parse_domain(path: &Path) -> Result<NewVm> {
    let what = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| EngineError::Libvirt { what: what.clone(), message: e.to_string() })?;
    parse_definition(&text, &what)
}

/// Read a domain definition (`what` names where it came from, for errors).
pub fn parse_definition(text: &str, what: &str) -> Result<NewVm> {
    let err = |message: String| EngineError::Libvirt { what: what.to_string(), message };
    let doc = roxmltree::Document::parse(text).map_err(|e| err(format!("not XML: {e}")))?;
    let domain = doc.root_element();
    if domain.tag_name().name() != "domain" {
        return Err(err("not a libvirt domain (root element is not <domain>)".into()));
    }
    let child_text = |name: &str| {
        domain.children().find(|n| n.has_tag_name(name)).and_then(|n| n.text()).map(|t| t.trim().to_string())
    };
    let name = child_text("name").ok_or_else(|| err("no <name>".into()))?;
    let uuid = child_text("uuid");
    let vcpus = match child_text("vcpu") {
        Some(v) => v.parse().map_err(|_| err(format!("<vcpu> {v:?} is not a number")))?,
        None => 1,
    };
    let memory_mib = match domain.children().find(|n| n.has_tag_name("memory")) {
        Some(node) => memory_mib(node).map_err(err)?,
        None => 512,
    };
    let mut disks = Vec::new();
    let mut nics = Vec::new();
    for dev in devices(&domain) {
        if let Some(disk) = disk_of(&dev) {
            let Some(file) = disk.source else {
                return Err(err(format!(
                    "disk {} has no <source file=…> or <source dev=…>; only file and block disks are supported",
                    disk.target.unwrap_or("?")
                )));
            };
            disks.push((disk.target.map(str::to_string), PathBuf::from(file)));
        }
        if dev.has_tag_name("interface") {
            let mac = dev.children().find(|n| n.has_tag_name("mac")).and_then(|m| m.attribute("address"));
            let source = dev.children().find(|n| n.has_tag_name("source"));
            let bridge = source.and_then(|s| s.attribute("bridge"));
            let network = source.and_then(|s| s.attribute("network")).or(bridge);
            if let Some(mac) = mac {
                nics.push(Nic {
                    mac: mac.to_lowercase(),
                    network: network.map(str::to_string),
                    bridge: bridge.is_some(),
                });
            }
        }
    }
    Ok(NewVm { name, uuid, disks, vcpus, memory_mib, nics, ..Default::default() })
}

fn memory_mib(node: roxmltree::Node) -> std::result::Result<u64, String> {
    let value: u64 = node
        .text()
        .map(str::trim)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| "<memory> is not a number".to_string())?;
    let bytes = match node.attribute("unit").unwrap_or("KiB") {
        "b" | "bytes" => value,
        "KiB" | "k" | "K" => value << 10,
        "MiB" | "M" => value << 20,
        "GiB" | "G" => value << 30,
        "KB" => value * 1000,
        "MB" => value * 1_000_000,
        "GB" => value * 1_000_000_000,
        other => return Err(format!("memory unit {other:?} is not understood")),
    };
    Ok(bytes >> 20)
}

/// The elements inside `<devices>`.
pub fn devices<'a>(domain: &roxmltree::Node<'a, 'a>) -> Vec<roxmltree::Node<'a, 'a>> {
    domain
        .children()
        .find(|n| n.has_tag_name("devices"))
        .map(|d| d.children().filter(|n| n.is_element()).collect())
        .unwrap_or_default()
}

/// A `<disk device='disk'>` as a backup sees it: its label and where its data is.
pub struct DiskNode<'a> {
    /// `<target dev=…>`: the disk's label.
    pub target: Option<&'a str>,
    /// `<source file=…>` or `<source dev=…>`; a volume or network disk has none.
    pub source: Option<&'a str>,
}

/// The disk this device is, if it is a disk (not a cdrom or floppy).
pub fn disk_of<'a>(dev: &roxmltree::Node<'a, 'a>) -> Option<DiskNode<'a>> {
    if !dev.has_tag_name("disk") || dev.attribute("device").unwrap_or("disk") != "disk" {
        return None;
    }
    let child = |name: &str| dev.children().find(|n| n.has_tag_name(name));
    Some(DiskNode {
        target: child("target").and_then(|t| t.attribute("dev")),
        source: child("source").and_then(|s| s.attribute("file").or_else(|| s.attribute("dev"))),
    })
}

/// `text` escaped for an XML attribute or element.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// libvirt target device for the disk at `index` (`vda`, `vdb`, ...), keeping labels that are
/// already virtio names.
pub fn target_dev(label: &str, index: usize) -> String {
    let is_vd = label.len() == 3 && label.starts_with("vd") && label.as_bytes()[2].is_ascii_lowercase();
    if is_vd { label.to_string() } else { format!("vd{}", (b'a' + (index % 26) as u8) as char) }
}

/// An `<interface>` element for `nic` (a libvirt network, or a host bridge).
pub(super) fn interface_xml(nic: &Nic, model: &str, indent: &str) -> String {
    let (kind, attr) = if nic.bridge { ("bridge", "bridge") } else { ("network", "network") };
    let source = escape(nic.network.as_deref().unwrap_or("default"));
    format!(
        "<interface type='{kind}'>\n{indent}  <mac address='{}'/>\n{indent}  <source {attr}='{source}'/>\n\
         {indent}  <model type='{}'/>\n{indent}</interface>",
        escape(&nic.mac),
        escape(model)
    )
}

/// A libvirt domain XML for a VM whose source definition is not known: its disks and NICs,
/// ACPI, a serial console, the guest-agent channel and a VNC display on localhost.
pub fn domain_xml(vm: &VmRecord) -> String {
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='kvm'>");
    let _ = writeln!(x, "  <name>{}</name>", escape(&vm.name));
    let _ = writeln!(x, "  <uuid>{}</uuid>", escape(&vm.uuid));
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", vm.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", vm.vcpus);
    let _ = writeln!(x, "  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n  </os>");
    let _ = writeln!(x, "  <features>\n    <acpi/>\n    <apic/>\n  </features>");
    let _ = writeln!(x, "  <devices>");
    for (i, d) in vm.disks.iter().enumerate() {
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(x, "      <driver name='qemu' type='{}'/>", d.format.as_str());
        let _ = writeln!(x, "      <source file='{}'/>", escape(&d.path.display().to_string()));
        let _ = writeln!(x, "      <target dev='{}' bus='virtio'/>", target_dev(&d.label, i));
        let _ = writeln!(x, "    </disk>");
    }
    for nic in &vm.nics {
        let _ = writeln!(x, "    {}", interface_xml(nic, "virtio", "    "));
    }
    let _ = writeln!(x, "    <serial type='pty'><target port='0'/></serial>");
    let _ = writeln!(x, "    <console type='pty'><target type='serial' port='0'/></console>");
    let _ = writeln!(
        x,
        "    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
    );
    let _ = writeln!(x, "    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>");
    let _ = writeln!(x, "  </devices>\n</domain>");
    x
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A shell script that runs the VM with `qemu-system-x86_64`, without libvirt and without a
/// display: its serial console goes to `<name>.serial.log`, its QMP monitor and guest-agent
/// channel are sockets `<name>.qmp` and `<name>.qga`, all beside the script; `$QEMU_ACCEL`
/// picks the accelerator (default `kvm:tcg`), and the script's arguments are passed on.
pub fn qemu_script(vm: &VmRecord, point_id: &str) -> String {
    let name = &vm.name;
    let mut args = vec![
        "qemu-system-x86_64".to_string(),
        format!("-name {}", shell_quote(name)),
        format!("-uuid {}", vm.uuid),
        "-machine \"q35,accel=${QEMU_ACCEL:-kvm:tcg}\"".to_string(),
        format!("-m {}", vm.memory_mib),
        format!("-smp {}", vm.vcpus),
        "-nodefaults -display none".to_string(),
        format!("-serial \"file:$here/\"{}", shell_quote(&format!("{name}.serial.log"))),
        format!("-qmp \"unix:$here/\"{}\",server=on,wait=off\"", shell_quote(&format!("{name}.qmp"))),
        format!(
            "-chardev \"socket,id=qga0,server=on,wait=off,path=$here/\"{}",
            shell_quote(&format!("{name}.qga"))
        ),
        "-device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0".to_string(),
    ];
    for (i, d) in vm.disks.iter().enumerate() {
        let file = d.path.display().to_string().replace(',', ",,");
        args.push(format!(
            "-blockdev {}",
            shell_quote(&format!(
                "driver={},node-name=disk{i},file.driver=file,file.filename={file}",
                d.format.as_str()
            ))
        ));
        args.push(format!("-device virtio-blk-pci,drive=disk{i},id={}", target_dev(&d.label, i)));
    }
    for (i, nic) in vm.nics.iter().enumerate() {
        args.push(format!("-netdev user,id=net{i}"));
        args.push(format!("-device virtio-net-pci,netdev=net{i},mac={}", nic.mac));
    }
    args.push("\"$@\"".into());
    format!(
        "#!/bin/sh\n# VM {name}, restored by vmvault from point {point_id}. Runs headless: console in\n\
         # {name}.serial.log, QMP at {name}.qmp, guest agent at {name}.qga (beside this script).\n\
         # QEMU_ACCEL=tcg where KVM is missing; extra arguments go to QEMU.\n\
         here=$(cd \"$(dirname \"$0\")\" && pwd)\nexec {}\n",
        args.join(" \\\n    ")
    )
}
