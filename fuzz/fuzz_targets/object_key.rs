//! Object keys come from clients of the server: classifying one must never panic, and a key
//! classified as something vmvault writes must be exactly the key `vault::layout` builds for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::layout::{self, ObjectClass};

fuzz_target!(|data: &[u8]| {
    let Ok(key) = std::str::from_utf8(data) else { return };
    let rebuilt = match ObjectClass::of(key) {
        ObjectClass::Chunk(id) => layout::chunk(&id),
        ObjectClass::Manifest { vm, point } => layout::manifest(vm, point),
        ObjectClass::Index { vm, point, disk } => layout::index(vm, point, disk),
        ObjectClass::Vm(name) => layout::vm(name),
        ObjectClass::Policy(name) => layout::policy(name),
        ObjectClass::Item(vm) => layout::item(vm),
        ObjectClass::Group(name) => layout::group(name),
        ObjectClass::Checkpoints(vm) => layout::checkpoints(vm),
        ObjectClass::Verified(vm) => layout::verified(vm),
        ObjectClass::ScheduleClaim(vm) => layout::schedule_claim(vm),
        ObjectClass::Session(name) => layout::session(name),
        ObjectClass::GcCondemned(gc_id) => layout::gc_condemned(gc_id),
        ObjectClass::Job(id) => layout::job(id),
        ObjectClass::JobCancel(id) => layout::job_cancel(id),
        _ => return,
    };
    assert_eq!(rebuilt.as_str(), key);
});
