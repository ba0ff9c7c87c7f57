//! What the API answers for requests a client may get wrong: 404 for an unknown VM, policy,
//! point or job, 409 for a name that exists, 400 for an invalid name, 412 for a lost race,
//! 403 for a role that may not — each with a JSON body naming the error's kind — and never a
//! 500 for anything a client can send. A real server on loopback over TLS, a real vault with
//! a real backup in it.

mod common;

use common::setup;
use engine::catalog::policy::Policy;
use engine::retention::Retention;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn policy(name: &str) -> Value {
    let retention = Retention::parse(Some("3"), None, None, None).unwrap();
    serde_json::to_value(Policy::new(name, "daily 03:00", "UTC", retention).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_vm_policy_point_or_job_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    // What exists is found.
    assert_eq!(api.get("/api/v1/vms/web").await.0, StatusCode::OK);
    let (status, text) = api.get("/api/v1/vms/web/points").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains(&api.point), "{text}");
    assert_eq!(api.get(&format!("/api/v1/vms/web/points/{}", api.point)).await.0, StatusCode::OK);
    assert_eq!(api.get("/api/v1/policies/gold").await.0, StatusCode::OK);
    for path in [
        "/api/v1/vms/nosuch",
        "/api/v1/vms/nosuch/points",
        "/api/v1/vms/web/points/20990101T000000Z-0000",
        "/api/v1/policies/nosuch",
        "/api/v1/jobs/20990101T000000Z-000000",
        "/api/v1/objects/points/web/nosuch/manifest.json",
    ] {
        let answer = api.error(&api.admin, Method::GET, path, None).await;
        assert_eq!(answer, (StatusCode::NOT_FOUND, "not-found".into()), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_exists_is_409() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let created = api.send(&api.admin, Method::POST, "/api/v1/policies", Some(policy("silver"))).await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    for name in ["gold", "silver"] {
        let answer = api.error(&api.admin, Method::POST, "/api/v1/policies", Some(policy(name))).await;
        assert_eq!(answer, (StatusCode::CONFLICT, "exists".into()), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_name_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let long = "v".repeat(70);
    for path in
        ["/api/v1/vms/-web", &format!("/api/v1/vms/{long}"), "/api/v1/policies/.gold", "/api/v1/jobs/-x"]
    {
        let answer = api.error(&api.admin, Method::GET, path, None).await;
        assert_eq!(answer, (StatusCode::BAD_REQUEST, "invalid".into()), "{path}");
    }
    let mut bad_name = policy("bronze");
    bad_name["name"] = json!("bad/name");
    let mut bad_zone = policy("bronze");
    bad_zone["timezone"] = json!("Mars/Olympus");
    for body in [bad_name, bad_zone] {
        let answer = api.error(&api.admin, Method::POST, "/api/v1/policies", Some(body.clone())).await;
        assert_eq!(answer, (StatusCode::BAD_REQUEST, "invalid".into()), "{body}");
    }
    let prune = json!({"vm": "../etc", "dry_run": true});
    let answer = api.error(&api.admin, Method::POST, "/api/v1/prune", Some(prune)).await;
    assert_eq!(answer, (StatusCode::BAD_REQUEST, "invalid".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_is_412_and_a_role_that_may_not_is_403() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let stale = api
        .http
        .put(format!("{}/api/v1/objects/catalog/settings.json?mode=swap", api.base))
        .bearer_auth(&api.admin)
        .header(server::api::VERSION_HEADER, "no-such-version")
        .body(r#"{"soft_delete_days": 14, "on_demand_per_day": 4}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let answer = api.error(&api.reader, Method::POST, "/api/v1/policies", Some(policy("bronze"))).await;
    assert_eq!(answer, (StatusCode::FORBIDDEN, "denied".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_client_sends_makes_the_server_fail() {
    let dir = tempfile::tempdir().unwrap();
    let api = setup(dir.path()).await;
    let long_key = format!("chunks/ab/{}", "a".repeat(7000));
    let odd: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/objects/{long_key}"), None),
        (Method::PUT, format!("/api/v1/objects/{long_key}?mode=create-if-absent"), None),
        (Method::GET, "/api/v1/objects/points/web/%2e%2e/manifest.json".into(), None),
        (Method::GET, "/api/v1/objects/.hidden".into(), None),
        (Method::GET, "/api/v1/list?prefix=../".into(), None),
        (Method::POST, "/api/v1/prune".into(), Some(json!({"vm": "", "dry_run": true}))),
        (Method::POST, "/api/v1/prune".into(), Some(json!({"vm": "x".repeat(300), "dry_run": true}))),
        (Method::POST, "/api/v1/chunks/missing".into(), Some(json!({"ids": ["zz"]}))),
        (Method::POST, "/api/v1/policies".into(), Some(json!({"name": "x"}))),
        (Method::GET, format!("/api/v1/vms/web/points/{}", "p".repeat(300)), None),
        (Method::GET, "/api/v1/vms/web%00/points".into(), None),
    ];
    for (method, path, body) in odd {
        let (status, text) = api.send(&api.admin, method.clone(), &path, body).await;
        assert!(!status.is_server_error(), "{method} {path}: {status} {text}");
        assert!(!text.contains(&api.vault_dir), "{method} {path}: the answer shows the vault's path: {text}");
    }
}
