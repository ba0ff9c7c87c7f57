//! The domain XML of a restored VM made from its source's definition: everything the source
//! had (features, CPU, firmware, the agent channel, serial console, graphics, device
//! addresses) is kept; the name, UUID and MACs are new, the disks are the restored files, and
//! the NICs go where the operator says (or where the source's went).

use roxmltree::{Document, Node};

use super::definition::{devices, disk_of, escape, interface_xml};
use crate::catalog::vm::VmRecord;
use crate::error::{EngineError, Result};

/// Where a restored VM's NICs attach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Attach {
    /// Where the source's NICs did.
    #[default]
    AsSource,
    /// A libvirt network.
    Network(String),
    /// A host bridge.
    Bridge(String),
}

impl Attach {
    /// Attach `nic` here.
    fn apply(&self, nic: &mut crate::catalog::vm::Nic) {
        match self {
            Attach::AsSource => {}
            Attach::Network(name) => (nic.network, nic.bridge) = (Some(name.clone()), false),
            Attach::Bridge(name) => (nic.network, nic.bridge) = (Some(name.clone()), true),
        }
    }
}

/// Replacements of byte ranges in the source text.
struct Edits(Vec<(std::ops::Range<usize>, String)>);

impl Edits {
    fn apply(mut self, text: &str) -> String {
        self.0.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut out = text.to_string();
        for (range, with) in self.0 {
            out.replace_range(range, &with);
        }
        out
    }
}

/// The source's definition `source` turned into the restored VM `vm`'s (new name, UUID and
/// MACs, `vm.disks` as restored), its NICs attached as `attach` says.
pub fn restored_xml(source: &str, vm: &VmRecord, attach: &Attach) -> Result<String> {
    let err =
        |m: String| EngineError::Libvirt { what: format!("the definition of VM {}", vm.name), message: m };
    let doc = Document::parse(source).map_err(|e| err(format!("not XML: {e}")))?;
    let domain = doc.root_element();
    let mut edits = Edits(Vec::new());
    for (tag, value) in [("name", vm.name.as_str()), ("uuid", vm.uuid.as_str())] {
        match domain.children().find(|n| n.has_tag_name(tag)) {
            Some(node) => edits.0.push((node.range(), format!("<{tag}>{}</{tag}>", escape(value)))),
            None => return Err(err(format!("no <{tag}>"))),
        }
    }
    let mut nics = vm.nics.iter();
    for dev in devices(&domain) {
        if let Some(disk) = disk_of(&dev) {
            let label = disk.target.unwrap_or_default();
            let with = match vm.disks.iter().find(|d| d.label == label) {
                Some(restored) => disk_xml(&dev, label, restored),
                // Not in the point: the restored VM has no such disk.
                None => String::new(),
            };
            edits.0.push((dev.range(), with));
        } else if dev.has_tag_name("interface") {
            let Some(nic) = nics.next() else {
                edits.0.push((dev.range(), String::new()));
                continue;
            };
            match (attach, dev.children().find(|n| n.has_tag_name("mac"))) {
                // As the source's, with the new MAC.
                (Attach::AsSource, Some(mac)) => {
                    edits.0.push((mac.range(), format!("<mac address='{}'/>", escape(&nic.mac))))
                }
                // libvirt gives a NIC without a MAC a new one.
                (Attach::AsSource, None) => {}
                _ => edits.0.push((dev.range(), interface(&dev, nic, attach))),
            }
        } else if (dev.has_tag_name("serial") || dev.has_tag_name("console"))
            && dev.attribute("type") == Some("file")
            && let Some(source) = dev.children().find(|n| n.has_tag_name("source"))
        {
            // The source's console log is the source's: the restored VM writes its own.
            let dir = vm.disks.first().and_then(|d| d.path.parent()).map(|p| p.display().to_string());
            let file = format!("{}/{}.{}.log", dir.unwrap_or_default(), vm.name, dev.tag_name().name());
            edits.0.push((source.range(), format!("<source path='{}'/>", escape(&file))));
        } else if dev.has_tag_name("channel")
            && let Some(source) = dev.children().find(|n| n.has_tag_name("source"))
            && source.attribute("path").is_some()
        {
            // A socket path of the source's (its agent channel): libvirt makes a new one.
            edits.0.push((source.range(), "<source mode='bind'/>".into()));
        }
    }
    Ok(edits.apply(source))
}

/// The restored disk in place of the source's, keeping its bus, boot order and address.
fn disk_xml(dev: &Node, label: &str, restored: &crate::catalog::vm::DiskRecord) -> String {
    let bus = dev
        .children()
        .find(|n| n.has_tag_name("target"))
        .and_then(|t| t.attribute("bus"))
        .unwrap_or("virtio");
    let mut kept = String::new();
    for child in dev.children().filter(|n| n.has_tag_name("boot") || n.has_tag_name("address")) {
        kept.push_str("\n      ");
        kept.push_str(&dev.document().input_text()[child.range()]);
    }
    format!(
        "<disk type='file' device='disk'>\n      <driver name='qemu' type='{}'/>\n      \
         <source file='{}'/>\n      <target dev='{}' bus='{}'/>{kept}\n    </disk>",
        restored.format.as_str(),
        escape(&restored.path.display().to_string()),
        escape(label),
        escape(bus)
    )
}

/// `vm` with its NICs attached as `attach` says (for a definition made from scratch).
pub fn attached(vm: &VmRecord, attach: &Attach) -> VmRecord {
    let mut vm = vm.clone();
    vm.nics.iter_mut().for_each(|nic| attach.apply(nic));
    vm
}

/// The source's NIC (its model kept) with its new MAC, on the network or bridge given.
fn interface(dev: &Node, nic: &crate::catalog::vm::Nic, attach: &Attach) -> String {
    let model = dev
        .children()
        .find(|n| n.has_tag_name("model"))
        .and_then(|m| m.attribute("type"))
        .unwrap_or("virtio");
    let mut nic = nic.clone();
    attach.apply(&mut nic);
    interface_xml(&nic, model, "    ")
}
