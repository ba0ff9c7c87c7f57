//! The backend contract, checked on a local directory and on a real S3 endpoint (moto_server
//! on loopback): every vault operation relies on exactly these answers.

use std::sync::Arc;

use bytes::Bytes;
use vault::backend::{Backend, LocalBackend, Put, S3Backend};
use vault::{VaultError, catalog};

/// A local backend and an S3 one, each empty.
fn backends(dir: &std::path::Path) -> Vec<Arc<dyn Backend>> {
    vec![
        Arc::new(LocalBackend::new(dir.join("local"))),
        testkit::moto().backend(&testkit::moto().new_vault_url()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_if_absent_never_overwrites_and_reads_come_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    for backend in backends(dir.path()) {
        let at = backend.location();
        assert_eq!(
            backend.put_if_absent("chunks/ab/abc", Bytes::from_static(b"first")).await.unwrap(),
            Put::Created
        );
        assert_eq!(
            backend.put_if_absent("chunks/ab/abc", Bytes::from_static(b"second")).await.unwrap(),
            Put::Existed
        );
        assert_eq!(&backend.get("chunks/ab/abc").await.unwrap()[..], b"first", "{at}");
        assert_eq!(backend.head("chunks/ab/abc").await.unwrap(), Some(5), "{at}");
        assert_eq!(backend.head("chunks/ab/none").await.unwrap(), None, "{at}");
        let err = backend.get("chunks/ab/none").await.unwrap_err();
        assert!(
            matches!(err, VaultError::NotFound { .. }) && err.to_string().contains("chunks/ab/none"),
            "{at}: {err}"
        );
        backend.delete("chunks/ab/abc").await.unwrap();
        backend.delete("chunks/ab/abc").await.unwrap();
        assert_eq!(backend.head("chunks/ab/abc").await.unwrap(), None, "{at}");
        backend.flush().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_lets_exactly_one_writer_win() {
    let dir = tempfile::tempdir().unwrap();
    for backend in backends(dir.path()) {
        let at = backend.location();
        let v1 = backend.compare_and_swap("catalog/x.json", None, Bytes::from_static(b"1")).await.unwrap();
        let again = backend.compare_and_swap("catalog/x.json", None, Bytes::from_static(b"1")).await;
        assert!(matches!(again, Err(VaultError::Conflict { .. })), "{at}: create of an existing document");
        let v2 =
            backend.compare_and_swap("catalog/x.json", Some(&v1), Bytes::from_static(b"2")).await.unwrap();
        let stale = backend.compare_and_swap("catalog/x.json", Some(&v1), Bytes::from_static(b"3")).await;
        assert!(matches!(&stale, Err(e) if e.is_retryable()), "{at}: a stale version must lose");
        let (bytes, version) = backend.get_versioned("catalog/x.json").await.unwrap().unwrap();
        assert_eq!((&bytes[..], version), (&b"2"[..], v2), "{at}");
        assert!(backend.get_versioned("catalog/none.json").await.unwrap().is_none(), "{at}");

        // Many writers racing on one document through read-modify-write lose no update.
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let backend = Arc::clone(&backend);
                tokio::spawn(async move {
                    for _ in 0..3 {
                        catalog::update(backend.as_ref(), "catalog/counter.json", |n: Option<u32>| {
                            Ok::<_, VaultError>(n.unwrap_or(0) + 1)
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let total: Option<u32> = catalog::read(backend.as_ref(), "catalog/counter.json").await.unwrap();
        assert_eq!(total, Some(24), "{at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_keeps_to_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    for backend in backends(dir.path()) {
        let at = backend.location();
        for key in [
            "points/web/p1/manifest.json",
            "points/web/p1/vda.fidx",
            "points/web2/p1/manifest.json",
            "jobs/j1.json",
        ] {
            backend.put_if_absent(key, Bytes::from_static(b"x")).await.unwrap();
        }
        let keys = |prefix: &'static str| {
            let backend = Arc::clone(&backend);
            async move { backend.list(prefix).await.unwrap().into_iter().map(|o| o.key).collect::<Vec<_>>() }
        };
        assert_eq!(
            keys("points/web/").await,
            ["points/web/p1/manifest.json", "points/web/p1/vda.fidx"],
            "{at}"
        );
        assert_eq!(keys("points/").await.len(), 3, "{at}");
        assert_eq!(keys("points/web2/p").await, ["points/web2/p1/manifest.json"], "{at}");
        assert!(keys("gc/").await.is_empty(), "{at}");
        assert_eq!(backend.list("jobs/").await.unwrap()[0].size, 1, "{at}");
        assert!(backend.put_if_absent("../escape", Bytes::new()).await.is_err(), "{at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_goes_up_in_parts_once() {
    let dir = tempfile::tempdir().unwrap();
    let big: Bytes = (0..(vault::backend::MULTIPART_FROM + 3_000_001)).map(|i| (i * 7 % 251) as u8).collect();
    for backend in backends(dir.path()) {
        let at = backend.location();
        assert_eq!(backend.put_if_absent("chunks/bi/big", big.clone()).await.unwrap(), Put::Created, "{at}");
        assert_eq!(
            backend.put_if_absent("chunks/bi/big", Bytes::from_static(b"no")).await.unwrap(),
            Put::Existed
        );
        assert!(backend.get("chunks/bi/big").await.unwrap() == big, "{at}: the object came back different");
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_one_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = |name: &str| match name {
        "AWS_ENDPOINT_URL" => Some(format!("http://127.0.0.1:{port}")),
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("x".into()),
        _ => None,
    };
    let backend = S3Backend::from_url_with("s3://nowhere/vault", settings).unwrap();
    let err = backend.get("config.json").await.unwrap_err().to_string();
    assert!(err.starts_with("s3://nowhere/vault: config.json: "), "{err}");
    assert!(err.contains("check the endpoint") && !err.contains('\n'), "{err}");
    let err = S3Backend::from_url_with("s3:///vault", settings).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("names no bucket"), "{err}");
}
