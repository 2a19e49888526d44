//! The API checks role and site on every route.

use headend_e2e::{fixture, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_sites_scope_every_read_and_write() {
    let app = TestApp::spawn().await;
    let site_a = app.site("Site A", "Europe/Ljubljana").await;
    let site_b = app.site("Site B", "America/New_York").await;
    let pw_a = app.gateway("SGA", Some(site_a), None).await;
    let pw_b = app.gateway("SGB", Some(site_b), None).await;
    for (serial, pw) in [("SGA", &pw_a), ("SGB", &pw_b)] {
        let mut c = app.gateway_client(serial, pw).await;
        let mut doc: serde_json::Value =
            serde_json::from_slice(&fixture("measurements-rs485-manual.json")).unwrap();
        doc["header"]["serial_number"] = serde_json::Value::from(format!("M-{serial}"));
        c.publish(
            &format!("sg/{serial}/pub/measurements/rs485/1"),
            serde_json::to_vec(&doc).unwrap(),
        )
        .await;
        c.publish(
            &format!("sg/{serial}/pub/measurements/rs485/99"),
            b"{}".to_vec(),
        )
        .await;
        c.wait_acks(2).await;
    }
    app.wait_count("SELECT count(*) FROM measurements", 2).await;
    app.wait_count("SELECT count(*) FROM ingest_rejects", 2)
        .await;

    // No token, a bad token: 401 everywhere under /api/v1 except login and the OpenAPI document.
    for path in [
        "/api/v1/gateways",
        "/api/v1/devices",
        "/api/v1/ingest/rejects",
        "/api/v1/me",
        "/api/v1/sites",
    ] {
        let r = app.request("GET", path, None, None).await;
        assert_eq!(r.status, 401, "{path}");
        let r = app.get(path, "not-a-token").await;
        assert_eq!(r.status, 401, "{path}");
    }
    let bad_login = app
        .request(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(serde_json::json!({"email": "x@y.z", "password": "nope-nope-nope"})),
        )
        .await;
    assert_eq!(bad_login.status, 401);

    let viewer_a = app
        .user_token("viewer-a@example.com", "viewer", &[site_a])
        .await;
    let operator_b = app
        .user_token("op-b@example.com", "operator", &[site_b])
        .await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;

    let serials = |v: serde_json::Value, key: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x[key].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        serials(
            app.get("/api/v1/gateways", &viewer_a).await.json(),
            "serial"
        ),
        ["SGA"]
    );
    assert_eq!(
        serials(
            app.get("/api/v1/gateways", &operator_b).await.json(),
            "serial"
        ),
        ["SGB"]
    );
    assert_eq!(
        serials(app.get("/api/v1/gateways", &admin).await.json(), "serial"),
        ["SGA", "SGB"]
    );
    assert_eq!(
        serials(app.get("/api/v1/devices", &viewer_a).await.json(), "serial"),
        ["M-SGA"]
    );
    assert_eq!(
        serials(
            app.get("/api/v1/ingest/rejects", &viewer_a).await.json(),
            "gateway"
        ),
        ["SGA"]
    );
    assert_eq!(
        serials(app.get("/api/v1/sites", &viewer_a).await.json(), "name"),
        ["Site A"]
    );
    // Another site's meter and gateway are invisible, not forbidden: no existence leak.
    assert_eq!(
        app.get("/api/v1/devices/M-SGB/latest", &viewer_a)
            .await
            .status,
        404
    );
    assert_eq!(
        app.get("/api/v1/devices/M-SGB/counters", &viewer_a)
            .await
            .status,
        404
    );
    assert_eq!(app.get("/api/v1/gateways/SGB", &viewer_a).await.status, 404);
    assert_eq!(
        app.get("/api/v1/devices/M-SGA/latest", &viewer_a)
            .await
            .status,
        200
    );

    // Writes need admin.
    let new_gateway = serde_json::json!({ "serial": "SGC", "site_id": site_a });
    for token in [&viewer_a, &operator_b] {
        let r = app
            .request(
                "POST",
                "/api/v1/gateways",
                Some(token),
                Some(new_gateway.clone()),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
        let r = app.request("GET", "/api/v1/users", Some(token), None).await;
        assert_eq!(r.status, 403);
    }
    let created = app
        .request(
            "POST",
            "/api/v1/gateways",
            Some(&admin),
            Some(new_gateway.clone()),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    assert_eq!(created["publish_base"], "sg/SGC/pub");
    assert_eq!(created["command_topic"], "sg/SGC/sub");
    let password = created["password"].as_str().unwrap();
    assert_eq!(password.len(), 24);
    // The new gateway can connect and publish at once.
    let mut c = app.gateway_client("SGC", password).await;
    c.publish(
        "sg/SGC/pub/measurements/ir",
        fixture("measurements-ir.json"),
    )
    .await;
    c.wait_acks(1).await;
    app.wait_count("SELECT count(*) FROM measurements", 3).await;
    let again = app
        .request("POST", "/api/v1/gateways", Some(&admin), Some(new_gateway))
        .await;
    assert_eq!(again.status, 409);
    let hostile = app
        .request(
            "POST",
            "/api/v1/gateways",
            Some(&admin),
            Some(serde_json::json!({ "serial": "sg/#" })),
        )
        .await;
    assert_eq!(hostile.status, 400, "{}", hostile.body);

    // The session cookie works for reads only: a cross-site form cannot write.
    let login = app
        .request("POST", "/api/v1/auth/login", None, Some(serde_json::json!({"email": "admin@example.com", "password": "correct horse battery staple"})))
        .await;
    assert!(login
        .headers
        .to_lowercase()
        .contains("set-cookie: headend_session="));
    assert!(login.headers.contains("HttpOnly") && login.headers.contains("SameSite=Strict"));

    // Opaque server errors, documented API, metrics and health.
    let spec = app
        .request("GET", "/api/v1/openapi.json", None, None)
        .await
        .json();
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["paths"]["/devices/{serial}/latest"].is_object());
    // Metrics: for the scraper's token or an admin, nobody else.
    assert_eq!(app.request("GET", "/metrics", None, None).await.status, 401);
    assert_eq!(
        app.request("GET", "/metrics", Some("not-the-scraper-token"), None)
            .await
            .status,
        401
    );
    let viewer_metrics = app.request("GET", "/metrics", Some(&viewer_a), None).await;
    assert_eq!(viewer_metrics.status, 403);
    let admin_metrics = app.request("GET", "/metrics", Some(&admin), None).await;
    assert_eq!(admin_metrics.status, 200);
    let metrics = app
        .request("GET", "/metrics", Some(headend_e2e::METRICS_TOKEN), None)
        .await;
    assert!(
        metrics
            .body
            .contains("headend_ingest_measurement_rows_total 3"),
        "{}",
        metrics.body
    );
    assert_eq!(app.request("GET", "/healthz", None, None).await.status, 200);
    app.stop().await;
}

/// Admins take access away: a revoked site, a disabled account and a reset password take effect
/// at once; a gateway's rotated MQTT password replaces the old one at the next CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_disabling_and_rotating_credentials_take_effect_at_once() {
    use headend_e2e::MqttClient;
    use serde_json::json;
    let app = TestApp::spawn().await;
    let site = app.site("Plant", "UTC").await;
    let admin = app.user_token("admin@example.com", "admin", &[]).await;
    let viewer = app
        .user_token("viewer@example.com", "viewer", &[site])
        .await;
    let viewer_id: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'viewer@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let admin_id: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'admin@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let site_path = format!("/api/v1/sites/{site}");
    assert_eq!(app.get(&site_path, &viewer).await.status, 200);

    // Only admins.
    let revoke = format!("/api/v1/users/{viewer_id}/sites/{site}");
    assert_eq!(
        app.request("DELETE", &revoke, Some(&viewer), None)
            .await
            .status,
        403
    );
    assert_eq!(
        app.request("DELETE", &revoke, Some(&admin), None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&site_path, &viewer).await.status,
        404,
        "the site is gone for them"
    );
    assert_eq!(
        app.request("DELETE", &revoke, Some(&admin), None)
            .await
            .status,
        404
    );

    // Reset: the old password stops working, the new one works.
    let user = format!("/api/v1/users/{viewer_id}");
    let reset = app
        .request(
            "PATCH",
            &user,
            Some(&admin),
            Some(json!({ "reset_password": true })),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    let new_password = reset.json()["password"].as_str().unwrap().to_owned();
    let login = |password: String| {
        let app = &app;
        async move {
            app.request(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({ "email": "viewer@example.com", "password": password })),
            )
            .await
            .status
        }
    };
    assert_eq!(login("correct horse battery staple".into()).await, 401);
    assert_eq!(login(new_password.clone()).await, 200);

    // Disabled: the token already issued stops working too.
    let r = app
        .request(
            "PATCH",
            &user,
            Some(&admin),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(r.json()["disabled"], true);
    assert_eq!(app.get("/api/v1/sites", &viewer).await.status, 401);
    assert_eq!(login(new_password).await, 401);
    let own = format!("/api/v1/users/{admin_id}");
    assert_eq!(
        app.request(
            "PATCH",
            &own,
            Some(&admin),
            Some(json!({ "disabled": true }))
        )
        .await
        .status,
        409
    );
    assert_eq!(
        app.request(
            "PATCH",
            &user,
            Some(&admin),
            Some(json!({ "disabld": true }))
        )
        .await
        .status,
        422
    );

    // A gateway's MQTT password, rotated.
    let old = app.gateway("SGR", Some(site), None).await;
    let mqtt = app.mqtt.unwrap();
    assert!(MqttClient::connect(mqtt, "SGR-1", "SGR", &old)
        .await
        .is_ok());
    let r = app
        .request("POST", "/api/v1/gateways/SGR/password", Some(&admin), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.json()["password"].as_str().unwrap().to_owned();
    assert!(
        MqttClient::connect(mqtt, "SGR-1", "SGR", &old)
            .await
            .is_err(),
        "the old password is refused at once"
    );
    assert!(MqttClient::connect(mqtt, "SGR-1", "SGR", &new)
        .await
        .is_ok());
    assert_eq!(
        app.request("POST", "/api/v1/gateways/NOPE/password", Some(&admin), None)
            .await
            .status,
        404
    );
    app.stop().await;
}
