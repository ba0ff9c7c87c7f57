//! Reading a libvirt domain (`virsh dumpxml`) into a VM registration, and writing one for a
//! restored VM.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::catalog::vm::{Nic, VmRecord};
use crate::error::{EngineError, Result};
use crate::services::vms::NewVm;

/// Read name, UUID, vCPUs, memory, disks and NICs from a domain XML file.
pub fn parse_domain(path: &Path) -> Result<NewVm> {
    let what = path.display().to_string();
    let err = |message: String| EngineError::Libvirt { what: what.clone(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| err(format!("not XML: {e}")))?;
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
        Some(node) => {
            let value: u64 = node
                .text()
                .map(str::trim)
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| err("<memory> is not a number".into()))?;
            let unit = node.attribute("unit").unwrap_or("KiB");
            let bytes = match unit {
                "b" | "bytes" => value,
                "KiB" | "k" | "K" => value << 10,
                "MiB" | "M" => value << 20,
                "GiB" | "G" => value << 30,
                "KB" => value * 1000,
                "MB" => value * 1_000_000,
                "GB" => value * 1_000_000_000,
                other => return Err(err(format!("memory unit {other:?} is not understood"))),
            };
            bytes >> 20
        }
        None => 512,
    };
    let devices = domain.children().find(|n| n.has_tag_name("devices"));
    let mut disks = Vec::new();
    let mut nics = Vec::new();
    let mut qga = None;
    for dev in devices.iter().flat_map(|d| d.children()) {
        // <channel type='unix'><source mode='bind' path='…'/><target type='virtio' name='org.qemu.guest_agent.0'/>
        if dev.has_tag_name("channel") && dev.attribute("type") == Some("unix") {
            let target = dev.children().find(|n| n.has_tag_name("target")).and_then(|t| t.attribute("name"));
            let source = dev.children().find(|n| n.has_tag_name("source")).and_then(|s| s.attribute("path"));
            if target == Some("org.qemu.guest_agent.0") {
                qga = source.map(PathBuf::from);
            }
        }
        if dev.has_tag_name("disk") && dev.attribute("device").unwrap_or("disk") == "disk" {
            let source = dev.children().find(|n| n.has_tag_name("source"));
            let file = source.and_then(|s| s.attribute("file").or_else(|| s.attribute("dev")));
            let Some(file) = file else {
                return Err(err("a <disk> has no <source file=…> or <source dev=…>; only file and block disks are supported".into()));
            };
            let label = dev.children().find(|n| n.has_tag_name("target")).and_then(|t| t.attribute("dev"));
            disks.push((label.map(str::to_string), PathBuf::from(file)));
        }
        if dev.has_tag_name("interface") {
            let mac = dev.children().find(|n| n.has_tag_name("mac")).and_then(|m| m.attribute("address"));
            let network = dev
                .children()
                .find(|n| n.has_tag_name("source"))
                .and_then(|s| s.attribute("network").or_else(|| s.attribute("bridge")));
            if let Some(mac) = mac {
                nics.push(Nic { mac: mac.to_lowercase(), network: network.map(str::to_string) });
            }
        }
    }
    // libvirt keeps QEMU's monitor to itself (its socket is not in the XML): give --qmp for
    // live backups of libvirt VMs.
    Ok(NewVm { name, uuid, disks, vcpus, memory_mib, nics, qmp: None, qga, force: false })
}

fn escape(text: &str) -> String {
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

/// A libvirt domain XML for a VM record.
pub fn domain_xml(vm: &VmRecord) -> String {
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='kvm'>");
    let _ = writeln!(x, "  <name>{}</name>", escape(&vm.name));
    let _ = writeln!(x, "  <uuid>{}</uuid>", escape(&vm.uuid));
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", vm.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", vm.vcpus);
    let _ = writeln!(x, "  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n  </os>");
    let _ = writeln!(x, "  <devices>");
    for (i, d) in vm.disks.iter().enumerate() {
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(x, "      <driver name='qemu' type='{}'/>", d.format.as_str());
        let _ = writeln!(x, "      <source file='{}'/>", escape(&d.path.display().to_string()));
        let _ = writeln!(x, "      <target dev='{}' bus='virtio'/>", target_dev(&d.label, i));
        let _ = writeln!(x, "    </disk>");
    }
    for nic in &vm.nics {
        let _ = writeln!(x, "    <interface type='network'>");
        let _ = writeln!(x, "      <mac address='{}'/>", escape(&nic.mac));
        let _ =
            writeln!(x, "      <source network='{}'/>", escape(nic.network.as_deref().unwrap_or("default")));
        let _ = writeln!(x, "      <model type='virtio'/>");
        let _ = writeln!(x, "    </interface>");
    }
    let _ = writeln!(x, "  </devices>\n</domain>");
    x
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A `qemu-system-x86_64` command line that runs the VM without libvirt.
pub fn qemu_command(vm: &VmRecord) -> String {
    let mut args = vec![
        "qemu-system-x86_64".to_string(),
        format!("-name {}", shell_quote(&vm.name)),
        format!("-uuid {}", vm.uuid),
        "-machine q35,accel=kvm:tcg".to_string(),
        format!("-m {}", vm.memory_mib),
        format!("-smp {}", vm.vcpus),
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
    args.join(" \\\n    ")
}
