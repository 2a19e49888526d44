//! Headend's own PostgreSQL sessions: how they are set up.

use headend_e2e::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_is_named_and_runs_without_jit() {
    let app = TestApp::spawn().await;
    // Several connections of the pool at once, so more than the first one is looked at.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(app.pool.acquire().await.unwrap());
    }
    for conn in &mut held {
        let (name, jit): (String, String) =
            sqlx::query_as("SELECT current_setting('application_name'), current_setting('jit')")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
        assert_eq!(name, "headend");
        // JIT compiled the ingest's and the profile worker's statements for longer than they
        // ran (docs/benchmarks/ingest.md, third pass).
        assert_eq!(jit, "off");
    }
}
