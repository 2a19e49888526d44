//! The API keeps the promises of its OpenAPI document (derived from the handlers by utoipa):
//! every documented operation is routed, and Schemathesis, generating requests from the
//! document, finds no server error and no answer the document does not declare (status, content
//! type, body schema, headers).

use std::path::PathBuf;
use std::process::Stdio;

use headend_e2e::TestApp;
use serde_json::Value;

/// The Schemathesis of `deploy/install-python.sh`.
fn schemathesis() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/python/bin/schemathesis");
    assert!(
        path.exists(),
        "{} is missing: run `bash deploy/install-python.sh` (tests/run.sh does)",
        path.display()
    );
    path
}

/// Operations of the document: (method, path).
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed_and_declares_its_errors() {
    let app = TestApp::spawn().await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let document = app.get("/api/v1/openapi.json", &admin).await.json();
    assert_eq!(document["openapi"], "3.1.0");
    let operations = operations(&document);
    assert!(operations.len() >= 60, "{} operations", operations.len());
    for (method, path) in &operations {
        let op = &document["paths"][path][method.to_lowercase()];
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path} has no summary"
        );
        for status in ["400", "401", "404", "500"] {
            assert!(
                op["responses"][status]["content"]["application/json"].is_object(),
                "{method} {path} does not declare {status} as a JSON error"
            );
        }
        // Path parameters filled with something plausible: the route must exist (a 404 from a
        // handler names what it did not find; the fallback says "route not found").
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let body =
            matches!(method.as_str(), "POST" | "PUT" | "PATCH").then(|| serde_json::json!({}));
        let answer = app
            .request(method, &format!("/api/v1{concrete}"), Some(&admin), body)
            .await;
        assert_ne!(answer.status, 405, "{method} {path}: {}", answer.body);
        assert!(
            !(answer.status == 404 && answer.body.contains("route not found")),
            "{method} {path} is documented but not routed"
        );
        assert!(
            answer.status < 500,
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure() {
    let schemathesis = schemathesis();
    let app = TestApp::spawn().await;
    // Something for the generated ids to find: a site with a panel, a gateway, a meter.
    let site = app.site("Plant", "Europe/Ljubljana").await;
    app.gateway("SG0000001", Some(site), None).await;
    // The admin's id out of the generated ids' way: resetting one's own password ends one's
    // sessions, and the run would go on unauthenticated.
    sqlx::query("SELECT setval('users_id_seq', 987654321)")
        .execute(&app.pool)
        .await
        .unwrap();
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let base = format!("http://{}", app.http);
    let report = tempfile::tempdir().expect("report dir");
    let output = tokio::process::Command::new(schemathesis)
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--url", &format!("{base}/api/v1")])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
        ])
        // Bounded: a fixed number of examples per operation, derandomised so a failure repeats.
        .args(["--max-examples", "20", "--generation-deterministic"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // Logging out, or resetting one's own password (the generator learns the admin's id from
        // `GET /users`), would end the admin session the rest of the run uses; both are covered
        // by `api_auth`.
        .args(["--exclude-path", "/auth/logout"])
        .args(["--exclude-operation-id", "patch_user"])
        // A failure is reported as found, not replayed: the API is stateful, and a replay that
        // meets another state would hide it as "inconsistent results".
        .arg("--no-shrink")
        // One worker: CPython 3.11's parser is not safe for the source inspection Hypothesis does
        // from two threads ("AST constructor recursion depth mismatch").
        .args(["--workers", "1", "--no-color"])
        .env("HOME", report.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(report.path())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Schemathesis found failures:\n{stdout}\n{stderr}"
    );
    // It really ran: every operation of the document was tested.
    println!("{stdout}");
    assert!(
        stdout.contains("Test cases:")
            && !stdout.contains("No operations")
            && !stdout.contains("Authentication failed"),
        "{stdout}"
    );
    app.stop().await;
}
