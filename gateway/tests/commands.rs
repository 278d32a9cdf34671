//! The `gateway` command line: config errors, `migrate`, `api-key`, and graceful shutdown.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Row;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn minimal_config(dir: &std::path::Path, database_url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    must(std::fs::write(
        &path,
        format!(
            "{extra}\n[database]\nurl = \"{database_url}\"\n\n[signer]\nendpoint = \"https://127.0.0.1:1\"\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
        ),
    ));
    path
}

#[test]
fn a_bad_config_stops_the_gateway_with_the_field_named() {
    let dir = must(tempfile::tempdir());
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 4\n",
            "workers",
        ),
        ("[rate_limit]\nper_second = 0\n", "rate_limit.per_second"),
        ("[server]\nmax_body_bytes = \"big\"\n", "max_body_bytes"),
    ];
    for (extra, field) in cases {
        let config = minimal_config(dir.path(), "sqlite:gw.db", extra);
        let out = run_cli(&config, &["serve"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra} accepted");
        assert!(stderr.contains(field), "{extra}: {stderr}");
    }
    assert!(
        !dir.path().join("gw.db").exists(),
        "a refused config created the database"
    );
    let missing = run_cli(&dir.path().join("nope.toml"), &["migrate"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));
}

on_both_databases! {
    async fn migrate_creates_the_schema_and_is_repeatable(kind: DatabaseKind) {
        let db = TestDatabase::create(kind).await;
        let config = minimal_config(db.dir(), &db.url, "");
        for _ in 0..2 {
            let out = run_cli(&config, &["migrate"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).contains("database migrated"));
        }
        if kind == DatabaseKind::Sqlite {
            assert!(db.dir().join("gateway.db").exists());
        }
        let counts = db.row_counts().await;
        assert_eq!(counts.len(), TABLES.len());
        assert!(counts.values().all(|n| *n == 0), "{counts:?}");
        let store = db.store().await;
        let applied = must(sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations").fetch_one(store.pool()).await);
        // One row per migration file of the dialect (the same versions in both).
        let files = must(std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite")))
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".sql"))
            .count();
        assert_eq!(must(applied.try_get::<i64, _>("n")), i64::try_from(files).unwrap_or(0));
        store.close().await;
    }

    async fn api_keys_are_printed_once_and_stored_only_as_a_hash(kind: DatabaseKind) {
        let db = TestDatabase::create(kind).await;
        let config = minimal_config(db.dir(), &db.url, "");
        let out = run_cli(&config, &["api-key", "create", "--role", "admin", "--name", "ops"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(key.starts_with("gwk_") && key.len() == 68, "{key}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(&key));

        let store = db.store().await;
        let row = must(sqlx::query("SELECT key_hash, role, name FROM api_keys").fetch_one(store.pool()).await);
        assert_eq!(must(row.try_get::<String, _>("key_hash")), hex::encode(Sha256::digest(key.as_bytes())));
        assert_eq!(must(row.try_get::<String, _>("role")), "admin");
        store.close().await;
        assert!(!db.all_text().await.iter().any(|v| v.contains(&key)));

        let listed = run_cli(&config, &["api-key", "list"]);
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(listed.contains("\"role\":\"admin\"") && !listed.contains(&key), "{listed}");
        let bad_role = run_cli(&config, &["api-key", "create", "--role", "root"]);
        assert!(!bad_role.status.success());
        assert!(String::from_utf8_lossy(&bad_role.stderr).contains("role must be service or admin"));
        assert_eq!(db.row_counts().await["api_keys"], 1);
    }

    async fn sigterm_lets_an_in_flight_request_finish_then_exits_cleanly(kind: DatabaseKind) {
        let db = TestDatabase::create(kind).await;
        let signerd = start_signerd().await;
        let options = GatewayOptions {
            log_level: "info,gateway::http::request_context=debug",
            ..Default::default()
        };
        let mut gateway = GatewayProcess::start(&db, &signerd, &options).await;
        let key = create_api_key(&gateway.config, "service");

        // A request whose body is only half sent is in flight: authenticated, and waiting in the
        // gateway for the rest of its body. Its start is logged (at debug) with its request id.
        let body = serde_json::json!({ "external_ref": "in-flight" }).to_string();
        let (first, rest) = body.split_at(body.len() / 2);
        let mut stream = must(TcpStream::connect(gateway.addr).await);
        let head = format!(
            "POST /v1/users HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\n\
             Idempotency-Key: drain-1\r\nX-Request-Id: drain-request\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{first}",
            body.len()
        );
        must(stream.write_all(head.as_bytes()).await);

        let started = eventually(Duration::from_secs(10), || async {
            gateway
                .log()
                .lines()
                .any(|line| line.contains("drain-request") && line.contains("request started"))
        })
        .await;
        assert!(started, "the request never reached the gateway:\n{}", gateway.log());

        let pid = gateway.pid().unwrap_or_else(|| panic!("gateway not running"));
        let sent = must(std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status());
        assert!(sent.success());
        let draining = eventually(Duration::from_secs(10), || async {
            gateway.log().contains("shutting down")
        })
        .await;
        assert!(draining, "no shutdown started:\n{}", gateway.log());

        must(stream.write_all(rest.as_bytes()).await);
        let mut response = String::new();
        must(tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut response)).await)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(response.starts_with("HTTP/1.1 201"), "{response}");
        assert!(response.contains("\"external_ref\":\"in-flight\""), "{response}");

        let status = gateway.wait().await;
        assert!(status.success(), "exit status {status}:\n{}", gateway.log());
        assert!(gateway.log().contains("gateway stopped"), "{}", gateway.log());
        assert_eq!(db.row_counts().await["users"], 1);
    }
}
