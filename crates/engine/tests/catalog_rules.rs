//! The rules that span catalog records, one test each (`engine::services`), and two races that
//! show a rule holds however two requests interleave. Real vault, real images.

mod common;

use common::*;
use engine::catalog::Catalog;
use engine::catalog::group::ConsistencyGroup;
use engine::catalog::item::{ProtectedItem, ProtectionState};
use engine::catalog::policy::Policy;
use engine::catalog::vm::VmRecord;
use engine::limits::Limits;
use engine::retention::Retention;
use engine::services::protection::{self, StopMode};
use engine::services::vms::NewVm;
use engine::services::{groups, policies, vms};
use engine::{EngineError, ErrorKind, Record};
use jiff::Timestamp;

async fn lab_with(vms: &[&str]) -> Lab {
    let lab = Lab::new(false).await;
    for name in vms {
        let image = lab.path(&format!("{name}.raw"));
        create(&image, "raw", "8M");
        lab.register(name, &[("vda", &image), ("data", &image)]).await;
    }
    let retention = Retention::parse(Some("7"), None, None, None).unwrap();
    policies::create(lab.catalog(), &Policy::new("gold", "daily 02:00", "UTC", retention).unwrap())
        .await
        .unwrap();
    lab
}

fn kind<T: std::fmt::Debug>(result: engine::Result<T>) -> ErrorKind {
    result.expect_err("the rule should refuse this").kind()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_created_once_and_found_by_name() {
    let lab = lab_with(&["web"]).await;
    let catalog = lab.catalog();
    let web: VmRecord = catalog.get("web").await.unwrap();
    assert!(matches!(catalog.create(&web).await, Err(EngineError::Exists { what: Record::Vm, .. })));
    assert!(matches!(
        catalog.get::<Policy>("nosuch").await,
        Err(EngineError::NotFound { what: Record::Policy, .. })
    ));
    assert_eq!(kind(catalog.get::<VmRecord>("-bad").await), ErrorKind::Invalid);
    assert_eq!(catalog.list::<VmRecord>().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protection_needs_a_registered_vm_an_existing_policy_and_a_disk_left() {
    let lab = lab_with(&["web"]).await;
    let (catalog, now) = (lab.catalog(), Timestamp::now());
    let refused = protection::protect(catalog, "nosuch", "gold", &[], now).await;
    assert!(matches!(refused, Err(EngineError::NotFound { what: Record::Vm, .. })), "{refused:?}");
    let refused = protection::protect(catalog, "web", "nosuch", &[], now).await;
    assert!(matches!(refused, Err(EngineError::NotFound { what: Record::Policy, .. })), "{refused:?}");
    assert_eq!(
        kind(protection::protect(catalog, "web", "gold", &["sdz".into()], now).await),
        ErrorKind::NotFound
    );
    let all = ["vda".to_string(), "data".to_string()];
    assert_eq!(kind(protection::protect(catalog, "web", "gold", &all, now).await), ErrorKind::Invalid);
    assert!(catalog.find::<ProtectedItem>("web").await.unwrap().is_none(), "a refused protect wrote an item");
    let item = protection::protect(catalog, "web", "gold", &["data".into()], now).await.unwrap();
    assert_eq!((item.state, item.excluded_disks), (ProtectionState::Protected, vec!["data".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deleted_data_is_not_protected_again_until_undeleted_and_a_lock_keeps_it() {
    let lab = lab_with(&["web"]).await;
    let (catalog, now) = (lab.catalog(), Timestamp::now());
    assert_eq!(kind(protection::undelete(catalog, "web").await), ErrorKind::Refused);
    protection::protect(catalog, "web", "gold", &[], now).await.unwrap();
    assert_eq!(kind(protection::undelete(catalog, "web").await), ErrorKind::Refused);
    protection::set_delete_lock(catalog, "web", true).await.unwrap();
    let locked = protection::unprotect(catalog, "web", StopMode::DeleteData, now).await;
    assert_eq!(kind(locked), ErrorKind::Refused);
    protection::set_delete_lock(catalog, "web", false).await.unwrap();
    protection::unprotect(catalog, "web", StopMode::DeleteData, now).await.unwrap();
    let again = protection::protect(catalog, "web", "gold", &[], now).await;
    let hint = again.as_ref().err().and_then(EngineError::hint).unwrap_or_default();
    assert_eq!(kind(again), ErrorKind::Refused);
    assert!(hint.contains("undelete web"), "{hint}");
    assert_eq!(protection::undelete(catalog, "web").await.unwrap().state, ProtectionState::StoppedRetain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_vm_or_a_group_member_cannot_be_removed() {
    let lab = lab_with(&["web", "db"]).await;
    let catalog = lab.catalog();
    protection::protect(catalog, "web", "gold", &[], Timestamp::now()).await.unwrap();
    let refused = vms::remove(catalog, "web").await;
    assert!(refused.as_ref().err().and_then(EngineError::hint).unwrap_or_default().contains("unprotect web"));
    assert_eq!(kind(refused), ErrorKind::Refused);
    protection::unprotect(catalog, "web", StopMode::RetainData, Timestamp::now()).await.unwrap();
    groups::create(catalog, "shop", &["web".into(), "db".into()]).await.unwrap();
    assert_eq!(kind(vms::remove(catalog, "web").await), ErrorKind::Refused);
    assert!(catalog.find::<VmRecord>("web").await.unwrap().is_some(), "a refused remove removed the VM");
    groups::delete(catalog, "shop").await.unwrap();
    vms::remove(catalog, "web").await.unwrap();
    assert!(catalog.find::<VmRecord>("web").await.unwrap().is_none());
    assert_eq!(kind(vms::remove(catalog, "web").await), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_in_use_cannot_be_deleted() {
    let lab = lab_with(&["web"]).await;
    let catalog = lab.catalog();
    protection::protect(catalog, "web", "gold", &[], Timestamp::now()).await.unwrap();
    assert_eq!(kind(policies::delete(catalog, "gold").await), ErrorKind::Refused);
    assert!(catalog.find::<Policy>("gold").await.unwrap().is_some());
    // A stopped item still names its policy, for the record: still in use.
    protection::unprotect(catalog, "web", StopMode::RetainData, Timestamp::now()).await.unwrap();
    assert_eq!(kind(policies::delete(catalog, "gold").await), ErrorKind::Refused);
    catalog.forget::<ProtectedItem>("web").await.unwrap();
    policies::delete(catalog, "gold").await.unwrap();
    assert_eq!(kind(policies::delete(catalog, "gold").await), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_has_two_registered_vms_each_once() {
    let lab = lab_with(&["web", "db"]).await;
    let catalog = lab.catalog();
    assert_eq!(kind(groups::create(catalog, "shop", &["web".into()]).await), ErrorKind::Invalid);
    assert_eq!(
        kind(groups::create(catalog, "shop", &["web".into(), "web".into()]).await),
        ErrorKind::Invalid
    );
    assert_eq!(
        kind(groups::create(catalog, "shop", &["web".into(), "nosuch".into()]).await),
        ErrorKind::NotFound
    );
    assert!(catalog.list::<ConsistencyGroup>().await.unwrap().is_empty());
    groups::create(catalog, "shop", &["web".into(), "db".into()]).await.unwrap();
    assert_eq!(kind(groups::create(catalog, "shop", &["web".into(), "db".into()]).await), ErrorKind::Exists);
    assert_eq!(kind(groups::delete(catalog, "nosuch").await), ErrorKind::NotFound);
}

/// Remove a VM and protect it at the same moment, many times: whichever wins, a protected
/// item never outlives its VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_racing_a_protect_never_leaves_a_protected_item_without_its_vm() {
    let lab = lab_with(&[]).await;
    let (mut removed, mut protected) = (0, 0);
    for round in 0..24 {
        let name = format!("vm{round}");
        // A disk of its own: a VM protect won keeps its disk.
        let image = lab.path(&format!("{name}.raw"));
        create(&image, "raw", "8M");
        lab.register(&name, &[("vda", &image)]).await;
        let vault = std::sync::Arc::clone(&lab.vault);
        let n = name.clone();
        let protect = tokio::spawn(async move {
            protection::protect(Catalog::of(vault.vault()), &n, "gold", &[], Timestamp::now())
                .await
                .map(|_| ())
        });
        let remove = vms::remove(lab.catalog(), &name).await;
        let protect = protect.await.unwrap();
        let vm = lab.catalog().find::<VmRecord>(&name).await.unwrap();
        let item = lab.catalog().find::<ProtectedItem>(&name).await.unwrap();
        let item_protected = item.is_some_and(|i| i.state == ProtectionState::Protected);
        assert!(!item_protected || vm.is_some(), "round {round}: a protected item without its VM");
        assert!(
            remove.is_ok() != vm.is_some(),
            "round {round}: remove said {remove:?}, VM there: {}",
            vm.is_some()
        );
        assert!(remove.is_err() || protect.is_err(), "round {round}: both succeeded");
        removed += usize::from(remove.is_ok());
        protected += usize::from(protect.is_ok());
    }
    eprintln!("24 races: the remove won {removed}, the protect won {protected}");
}

/// Delete a policy and protect with it at the same moment: an item never names a policy
/// that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_delete_racing_a_protect_never_leaves_an_item_without_its_policy() {
    let lab = lab_with(&["web"]).await;
    let retention = Retention::parse(Some("7"), None, None, None).unwrap();
    for round in 0..24 {
        let name = format!("p{round}");
        let policy = Policy::new(&name, "daily 02:00", "UTC", retention.clone()).unwrap();
        policies::create(lab.catalog(), &policy).await.unwrap();
        let vault = std::sync::Arc::clone(&lab.vault);
        let n = name.clone();
        let protect = tokio::spawn(async move {
            protection::protect(Catalog::of(vault.vault()), "web", &n, &[], Timestamp::now())
                .await
                .map(|_| ())
        });
        let delete = policies::delete(lab.catalog(), &name).await;
        let protect = protect.await.unwrap();
        let item = lab.catalog().find::<ProtectedItem>("web").await.unwrap();
        if let Some(named) = item.and_then(|i| i.policy) {
            let exists = lab.catalog().find::<Policy>(&named).await.unwrap().is_some();
            assert!(
                exists,
                "round {round}: the item names policy {named}, which is gone (delete {delete:?}, protect {protect:?})"
            );
        }
        assert!(delete.is_err() || protect.is_err(), "round {round}: both succeeded");
        // Free the policy for the next round's delete to be decided by the race alone.
        lab.catalog().forget::<ProtectedItem>("web").await.unwrap();
    }
}

/// A disk belongs to one VM: a second VM naming the same image (by another path, too) is
/// refused, since each one's backup would remove the other's change-tracking bitmaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_belongs_to_one_vm_only() {
    let lab = Lab::new(false).await;
    let image = lab.path("shared.qcow2");
    create(&image, "qcow2", "16M");
    lab.register("first", &[("vda", &image)]).await;
    std::os::unix::fs::symlink(&image, lab.path("alias.qcow2")).unwrap();
    let new =
        NewVm { name: "second".into(), disks: vec![(None, lab.path("alias.qcow2"))], ..Default::default() };
    let err = vms::add(lab.catalog(), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("already disk vda of VM \"first\""), "{err}");
    assert!(lab.catalog().find::<VmRecord>("second").await.unwrap().is_none());
}
