//! A compromised hypervisor host holds a backup-operator token: what it tries against a real
//! server on loopback (raw HTTP requests, each role's token) is refused with the status its
//! kind decides, the vault is left byte-for-byte unchanged, and afterwards prune, GC, backups,
//! job listings and point listings all work. A forged manifest planted in the store itself (as
//! an older server let through) is named by prune and GC and stepped around by backups. A
//! client that sends its headers slowly is cut off; a 70 MiB body gets a 413 answer.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Api, setup};
use engine::NoProgress;
use engine::backup::{BackupOptions, backup_job};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::client::{RemoteBackend, Trust};
use vault::layout;

/// A real TLS client (openssl) connected to the server, sending what is written to its stdin.
fn tls_client(api: &Api) -> std::process::Child {
    std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", api.base.trim_start_matches("https://")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn put(api: &Api, token: &str, key: &str, body: Vec<u8>) -> (StatusCode, String) {
    let url = format!("{}/api/v1/objects/{key}?mode=create-if-absent", api.base);
    let response = api.http.put(url).bearer_auth(token).body(body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let kind = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["kind"].as_str().map(str::to_string));
    (status, kind.unwrap_or(text))
}

/// A client of the server with `token`, unlocked (the test vault has no encryption).
async fn client(api: &Api, token: &str) -> Arc<vault::UnlockedVault> {
    let remote = RemoteBackend::new(&api.base, token, &Trust::Fingerprint(api.fingerprint.clone())).unwrap();
    Arc::new(vault::Vault::open(Arc::new(remote)).await.unwrap().unlock_unencrypted().unwrap())
}

/// Prune, GC, a backup of `web`, the job list and the point list all work.
async fn everything_still_works(api: &Api) -> (Value, Value) {
    let (status, prune) =
        api.send(&api.admin, reqwest::Method::POST, "/api/v1/prune", Some(json!({"dry_run": false}))).await;
    assert_eq!(status, StatusCode::OK, "prune: {prune}");
    let (status, gc) = api
        .send(
            &api.admin,
            reqwest::Method::POST,
            "/api/v1/gc",
            Some(json!({"dry_run": false, "max_wait_s": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "gc: {gc}");
    let host = client(api, &api.host_web).await;
    let (summary, _) =
        backup_job(Arc::clone(&host), "web", BackupOptions::default(), Arc::new(NoProgress)).await.unwrap();
    let catalog = engine::catalog::Catalog::of(host.vault());
    assert!(!engine::catalog::job::list(catalog, None, None).await.unwrap().is_empty());
    let (status, points) = api.get("/api/v1/vms/web/points").await;
    assert_eq!(status, StatusCode::OK, "{points}");
    assert!(points.contains(&summary.point_id), "{points}");
    (serde_json::from_str(&prune).unwrap(), serde_json::from_str(&gc).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_host_may_not_write_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let vault_dir = dir.path().join("vault");
    let genuine = std::fs::read(vault_dir.join(layout::manifest("web", &api.point).as_str())).unwrap();
    let forged_point = "20990101T000000Z-0000";
    let junk_chunk = layout::chunk(&vault::ChunkId::from_bytes([0x5a; 32]));
    let long_key = format!("chunks/ab/{}", "a".repeat(7000));
    let cases: Vec<(&str, &str, String, Vec<u8>, StatusCode)> = vec![
        (
            "any VM, a manifest that is no manifest",
            api.host.as_str(),
            layout::manifest("db", forged_point).into(),
            br#"{"evil":1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "its VM, a manifest that is no manifest",
            api.host_web.as_str(),
            layout::manifest("web", forged_point).into(),
            br#"{"evil":1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "another VM's manifest",
            api.host_web.as_str(),
            layout::manifest("db", forged_point).into(),
            br#"{"evil":1}"#.to_vec(),
            StatusCode::FORBIDDEN,
        ),
        (
            "a genuine manifest under another point's key",
            api.host.as_str(),
            layout::manifest("web", forged_point).into(),
            genuine.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a key under jobs/ that is no job",
            api.host_web.as_str(),
            "jobs/x/y.json".into(),
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a job record that does not parse",
            api.host.as_str(),
            layout::job("20991231T000000Z-abcdef").into(),
            br#"{"evil":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "junk beside the chunks",
            api.host_web.as_str(),
            "chunks/zz/junk1".into(),
            vec![7u8; 1 << 20],
            StatusCode::BAD_REQUEST,
        ),
        (
            "a chunk whose checksum fails",
            api.host.as_str(),
            junk_chunk.clone().into(),
            vec![7u8; 4096],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a chunk bigger than any chunk",
            api.host.as_str(),
            junk_chunk.into(),
            vec![7u8; 5 << 20],
            StatusCode::BAD_REQUEST,
        ),
        (
            "a session that does not parse",
            api.host.as_str(),
            layout::session("backup-db").into(),
            b"[]".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "change tracking that does not parse",
            api.host_web.as_str(),
            layout::checkpoints("web").into(),
            b"[]".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "an index that is no index",
            api.host_web.as_str(),
            layout::index("web", forged_point, "vda").into(),
            vec![1u8; 96],
            StatusCode::BAD_REQUEST,
        ),
        (
            "a file beside a point",
            api.host.as_str(),
            "points/web/p1/notes.txt".into(),
            b"hi".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("a key of 7 000 characters", api.admin.as_str(), long_key, b"x".to_vec(), StatusCode::BAD_REQUEST),
    ];
    let before = testkit::files_under(&vault_dir);
    for (what, token, key, body, expected) in cases {
        let (status, kind) = put(&api, token, &key, body).await;
        assert_eq!(status, expected, "{what} ({key}): {kind}");
        assert!(!status.is_server_error());
    }
    assert_eq!(
        testkit::files_under(&vault_dir).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    // A cleanup asked for a VM name that cannot be one (schemathesis found this one).
    let bad = json!({"vm": "no such/vm", "dry_run": false});
    let answer = api.error(&api.admin, reqwest::Method::POST, "/api/v1/prune", Some(bad)).await;
    assert_eq!(answer, (StatusCode::BAD_REQUEST, "invalid".to_string()));
    assert!(testkit::files_under(&vault_dir) == before, "a refused request changed the vault");
    let (prune, gc) = everything_still_works(&api).await;
    assert!(prune["reports"][0]["damaged"].as_array().unwrap().is_empty(), "{prune}");
    assert!(gc["report"]["damaged_points"].as_array().unwrap().is_empty(), "{gc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_manifest_planted_in_the_store_is_named_and_stepped_around() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let key = layout::manifest("web", "20990101T000000Z-0000");
    let path = dir.path().join("vault").join(key.as_str());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, br#"{"evil":1}"#).unwrap();
    let (prune, gc) = everything_still_works(&api).await;
    let named = prune["reports"][0]["damaged"][0]["point"].as_str();
    assert_eq!(named, Some("20990101T000000Z-0000"), "{prune}");
    let damaged = gc["report"]["damaged_points"].to_string();
    assert!(damaged.contains("web/20990101T000000Z-0000"), "{gc}");
    assert!(path.exists(), "the cleanup removed the forgery on its own: an admin decides");
    let (_, points) = api.get("/api/v1/vms/web/points").await;
    let rows: Value = serde_json::from_str(&points).unwrap();
    let damaged: Vec<&Value> = rows.as_array().unwrap().iter().filter(|r| r["state"] == "damaged").collect();
    assert_eq!(damaged.len(), 1, "{points}");
    assert_eq!(damaged[0]["id"], "20990101T000000Z-0000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_a_huge_body_gets_413() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    // A client that sends half its headers, then nothing.
    let mut slow = tls_client(&api);
    {
        use std::io::Write;
        let stdin = slow.stdin.as_mut().unwrap();
        stdin.write_all(b"GET /api/v1/whoami HTTP/1.1\r\nHost: localhost\r\n").unwrap();
        stdin.flush().unwrap();
    }
    let started = Instant::now();
    // Others are served meanwhile.
    let (status, _) = api.send(&api.reader, reqwest::Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, StatusCode::OK);
    let limit = server::run::HEADER_TIMEOUT + Duration::from_secs(10);
    while slow.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < limit, "a client sending no more headers is still connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A body of 70 MiB: answered 413 before it is read (curl waits for the answer first).
    let body = dir.path().join("huge");
    std::fs::File::create(&body).unwrap().set_len(70 << 20).unwrap();
    let url = format!(
        "{}/api/v1/objects/{}?mode=create-if-absent",
        api.base,
        layout::chunk(&vault::ChunkId::from_bytes([1; 32]))
    );
    let out = std::process::Command::new("curl")
        .args(["-sSk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .args(["-H", &format!("Authorization: Bearer {}", api.host), &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413", "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_change_another_hosts_job_record_or_session() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let web_host = client(&api, &api.host_web).await;
    let backend = Arc::clone(web_host.vault().backend());
    let job = engine::jobs::Job::start(
        Arc::clone(&backend),
        engine::jobs::Operation::Verify,
        Some("web"),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let session = vault::session::Session::begin(
        Arc::clone(&backend),
        "backup-web",
        &job.id(),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let job_key = layout::job(&job.id());
    let session_key = layout::session("backup-web");
    // Another host's token, allowed every VM: it may read both, and change neither.
    for key in [job_key.as_str(), session_key.as_str()] {
        let url = format!("{}/api/v1/objects/{key}", api.base);
        let read = api.http.get(&url).bearer_auth(&api.host).send().await.unwrap();
        assert_eq!(read.status(), StatusCode::OK);
        let version = read.headers()[server::api::VERSION_HEADER].to_str().unwrap().to_string();
        let body = read.bytes().await.unwrap();
        let rewrite = api
            .http
            .put(format!("{url}?mode=swap"))
            .bearer_auth(&api.host)
            .header(server::api::VERSION_HEADER, version)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(rewrite.status(), StatusCode::FORBIDDEN, "{key} rewritten by another host");
        let delete = api.http.delete(&url).bearer_auth(&api.host).send().await.unwrap();
        assert_eq!(delete.status(), StatusCode::FORBIDDEN, "{key} deleted by another host");
    }
    // (The job's own heartbeat keeps rewriting its record, so the vault is not compared whole.)
    assert!(backend.head(&session_key).await.unwrap().is_some(), "the session is gone");
    // Its own host finishes both; the record says what really happened.
    session.end().await.unwrap();
    let record = job.finish(&Ok::<(), engine::EngineError>(())).await.unwrap();
    assert_eq!(record.status, engine::jobs::JobStatus::Completed);
    everything_still_works(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_too_many_connections_gets_503_for_more() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let trust = Trust::Fingerprint(api.fingerprint.clone());
    let whoami = |client: reqwest::Client| {
        let (url, token) = (format!("{}/api/v1/whoami", api.base), api.reader.clone());
        async move { client.get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    // Every place taken: each client keeps its connection open after its request (keep-alive).
    let mut held = Vec::new();
    for _ in 0..server::limit::MAX_CONNECTIONS_PER_CLIENT {
        let client = server::client::http_client(&trust).unwrap();
        assert_eq!(whoami(client.clone()).await, StatusCode::OK);
        held.push(client);
    }
    let one_more = server::client::http_client(&trust).unwrap();
    assert_eq!(
        whoami(one_more).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a connection over the limit was served"
    );
    // The places are given back when the connections close.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer = whoami(server::client::http_client(&trust).unwrap()).await;
    while answer != StatusCode::OK && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = whoami(server::client::http_client(&trust).unwrap()).await;
    }
    assert_eq!(answer, StatusCode::OK, "places were not given back");
}

/// A compromised host holds the vault's key, so it can sign. What it cannot do is date a point
/// ahead (retention would take it for the newest and let genuine points expire): a signed,
/// complete point dated 2099 is refused, by its time and by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_point_dated_in_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let local = Arc::new(vault::backend::LocalBackend::new(dir.path().join("vault")));
    let keys = vault::Vault::open(local.clone()).await.unwrap().unlock_unencrypted().unwrap();
    let genuine = keys.get_manifest(&layout::manifest("web", &api.point)).await.unwrap();
    let index = std::fs::read(dir.path().join("vault").join(&genuine.disks[0].index)).unwrap();
    let future: jiff::Timestamp = "2099-01-01T00:00:00Z".parse().unwrap();
    for (id, time) in [("20990101T000000Z-0001", future), ("20990101T000000Z-0002", genuine.time)] {
        let mut forged = genuine.clone();
        forged.point_id = id.to_string();
        forged.time = time;
        let index_key = layout::index("web", id, &genuine.disks[0].label);
        forged.disks[0].index = index_key.clone().into();
        assert_eq!(put(&api, &api.host_web, &index_key, index.clone()).await.0, StatusCode::OK);
        let (status, kind) =
            put(&api, &api.host_web, &layout::manifest("web", id), forged.encode(keys.keys()).unwrap()).await;
        assert_eq!((status, kind.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "damaged"), "{id} at {time}");
    }
    // Dated now, the same signed point is taken: the check is the date, not the signer.
    let mut now = genuine.clone();
    now.point_id = engine::points::new_point_id(jiff::Timestamp::now()).unwrap();
    now.time = jiff::Timestamp::now();
    let index_key = layout::index("web", &now.point_id, &genuine.disks[0].label);
    now.disks[0].index = index_key.clone().into();
    assert_eq!(put(&api, &api.host_web, &index_key, index).await.0, StatusCode::OK);
    let (status, kind) =
        put(&api, &api.host_web, &layout::manifest("web", &now.point_id), now.encode(keys.keys()).unwrap())
            .await;
    assert_eq!(status, StatusCode::OK, "{kind}");
}
