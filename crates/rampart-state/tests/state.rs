//! Behaviour of the state database. Every test body runs on SQLite (a temporary file) and, when
//! `RAMPART_TEST_POSTGRES_URL` is set, on PostgreSQL in a schema of its own that is dropped
//! afterwards. With `RAMPART_REQUIRE_DATA=1` a missing PostgreSQL URL fails the run.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use chrono::{Duration, Utc};
use futures::FutureExt as _;
use rampart_state::*;
use serde_json::json;
use sqlx::Connection as _;

struct Backend {
    db: StateDb,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: (server URL, schema to drop).
    pg_schema: Option<(String, String)>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("state.db").display()
    );
    Backend {
        db: StateDb::connect(&url).await.expect("connect sqlite"),
        _dir: Some(dir),
        pg_schema: None,
    }
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher as _, RandomState};
    format!(
        "{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

async fn postgres() -> Option<Backend> {
    let url = match std::env::var("RAMPART_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var("RAMPART_REQUIRE_DATA").as_deref() != Ok("1"),
                "RAMPART_REQUIRE_DATA=1 but RAMPART_TEST_POSTGRES_URL is not set"
            );
            println!("skipping PostgreSQL: RAMPART_TEST_POSTGRES_URL is not set");
            return None;
        }
    };
    sqlx::any::install_default_drivers();
    let schema = format!("t_{}", random_suffix());
    let mut admin = sqlx::AnyConnection::connect(&url)
        .await
        .expect("connect postgres");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create schema");
    admin.close().await.expect("close");
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = StateDb::connect(&format!("{url}{sep}options=-c%20search_path%3D{schema}"))
        .await
        .expect("connect postgres schema");
    assert_eq!(db.backend(), rampart_state::Backend::Postgres);
    Some(Backend {
        db,
        _dir: None,
        pg_schema: Some((url, schema)),
    })
}

impl Backend {
    async fn cleanup(self) {
        self.db.close().await;
        if let Some((url, schema)) = self.pg_schema {
            let mut admin = sqlx::AnyConnection::connect(&url)
                .await
                .expect("connect postgres");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .expect("drop schema");
        }
    }
}

/// Runs `body` on SQLite, then on PostgreSQL if configured. Each backend is created just before
/// its run and cleaned up even when the body panics (a PostgreSQL schema is never left behind).
async fn on_each_backend<F, Fut>(body: F)
where
    F: Fn(StateDb) -> Fut,
    Fut: Future<Output = ()>,
{
    run_on(sqlite().await, &body).await;
    if let Some(pg) = postgres().await {
        run_on(pg, &body).await;
    }
}

async fn run_on<F, Fut>(backend: Backend, body: &F)
where
    F: Fn(StateDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(body(backend.db.clone()))
        .catch_unwind()
        .await;
    let name = format!("{:?}", backend.db.backend());
    backend.cleanup().await;
    if let Err(panic) = outcome {
        eprintln!("failed on {name}");
        std::panic::resume_unwind(panic);
    }
}

macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                on_each_backend(|db| async move { bodies::$name(&db).await }).await;
            }
        )+
    };
}

backend_tests!(
    connect_migrates_once_and_bootstraps,
    passwords,
    api_tokens_and_sessions,
    enrollment_tokens_are_consumed_atomically,
    tenant_isolation,
    pagination_is_stable_and_complete,
    incidents_attach_and_merge,
    incident_queue_search_sort_and_involvement,
    alert_deduplication,
    a_batch_looks_up_and_folds_at_once,
    a_batch_records_its_hosts_at_once,
    device_risk_follows_open_alerts,
    indicators_validate_and_normalise,
    limits_name_the_field,
    audit_log,
    devices,
    telemetry_high_water,
    actions,
    actions_are_handed_over_once,
    action_packages,
    rules,
    builtin_rules_follow_the_rule_folders,
    hunting_queries_are_private_and_bounded,
);

/// SQLite specifics: the file is in WAL mode, reopening re-runs the (already applied)
/// migrations without error and keeps the data, and unknown URL schemes are refused.
#[tokio::test]
async fn sqlite_file_reopens_in_wal_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = StateDb::connect(&url).await.unwrap();
    assert_eq!(db.backend(), rampart_state::Backend::Sqlite);
    let t = db.create_tenant("kept").await.unwrap();
    assert!(
        dir.path().join("state.db-wal").exists(),
        "WAL journal in use"
    );
    db.close().await;
    let again = StateDb::connect(&url).await.unwrap();
    assert_eq!(again.get_tenant(&t.id).await.unwrap(), t);
    again.close().await;
    assert_invalid(StateDb::connect("mysql://localhost/x").await, "url");
}

/// Migration 6 moves each alert's activity (event count and time range) to a table of its own:
/// an alert stored before it keeps its figures, and the columns left the alerts table. The
/// migrations' own SQL, run in order on a SQLite file (both backends run it in every test).
#[tokio::test]
async fn alert_activity_moves_to_its_own_table_with_its_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("v5.db").display());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    for sql in [
        include_str!("../migrations/0001_initial.sql"),
        include_str!("../migrations/0002_telemetry_sequence.sql"),
        include_str!("../migrations/0003_action_packages.sql"),
        include_str!("../migrations/0004_hunting_queries.sql"),
        include_str!("../migrations/0005_device_risk.sql"),
        "INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', 0); \
         INSERT INTO alerts (id, tenant_id, title, description, severity, status, tactics, \
           techniques, first_event_time, last_event_time, event_count, dedup_key, evidence, \
           matched_fields, created_at, updated_at) \
         VALUES ('alr_1', 't', 'x', '', 'high', 'new', '[]', '[]', 1000, 2000, 7, 'k', '[]', \
           '{}', 500, 3000)",
        include_str!("../migrations/0006_alert_activity.sql"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let row = sqlx::query(
        "SELECT alert_id, first_event_time, last_event_time, event_count, activity_at \
         FROM alert_activity",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    use sqlx::Row as _;
    let got: (String, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(got, ("alr_1".to_string(), 1000, 2000, 7, 3000));
    let gone = sqlx::query("SELECT event_count FROM alerts")
        .fetch_all(&mut conn)
        .await;
    assert!(gone.is_err(), "event_count is still a column of alerts");
}

/// The scheduler's listing of a tenant's enabled KQL rules, in title order, reads the
/// `rules_kind` index (migration 7) instead of every rule of the tenant.
#[tokio::test]
async fn kql_rules_are_listed_through_their_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("state.db").display()
    );
    StateDb::connect(&url).await.unwrap().close().await;
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let plan = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT id, source FROM rules \
         WHERE tenant_id = 't' AND kind = 'kql' AND enabled = 1 ORDER BY title ASC, id ASC LIMIT 501",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    use sqlx::Row as _;
    let detail: Vec<String> = plan.iter().map(|r| r.get::<String, _>(3)).collect();
    assert!(
        detail.iter().any(|d| d.contains("USING INDEX rules_kind")),
        "plan: {detail:?}"
    );
    assert!(
        !detail.iter().any(|d| d.contains("TEMP B-TREE")),
        "sorted again: {detail:?}"
    );
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T>, expected_field: &str) {
    match r {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, expected_field),
        other => panic!("expected Invalid({expected_field}), got {other:?}"),
    }
}

mod bodies {
    use super::*;

    pub(super) const PW: &str = "correct horse battery";

    pub(super) async fn tenant(db: &StateDb, name: &str) -> String {
        db.create_tenant(name).await.expect("tenant").id
    }

    pub(super) async fn user(db: &StateDb, tenant: &str, name: &str, role: Role) -> User {
        db.create_user(
            tenant,
            &NewUser {
                username: name.into(),
                password: PW.into(),
                role,
                scope_groups: vec![],
            },
        )
        .await
        .expect("user")
    }

    /// The open alert one deduplication key finds (through the batch lookup).
    pub(super) async fn open_alert(
        db: &StateDb,
        tenant: &str,
        key: &str,
        since: chrono::DateTime<Utc>,
    ) -> Option<String> {
        let mut found = db
            .find_open_alerts_by_dedup_keys(tenant, &[key.to_string()], since)
            .await
            .expect("lookup");
        found.remove(key).map(|a| a.id)
    }

    pub(super) fn repeats(
        alert: &str,
        count: u32,
        earliest: chrono::DateTime<Utc>,
        latest: chrono::DateTime<Utc>,
    ) -> Repeats {
        Repeats {
            alert: alert.into(),
            count,
            earliest,
            latest,
        }
    }

    /// Folds repeats into one alert and reads it back.
    pub(super) async fn fold(
        db: &StateDb,
        tenant: &str,
        alert: &str,
        count: u32,
        earliest: chrono::DateTime<Utc>,
        latest: chrono::DateTime<Utc>,
    ) -> Result<Alert> {
        db.record_duplicates(tenant, &[repeats(alert, count, earliest, latest)])
            .await?;
        db.get_alert(tenant, &Scope::all(), alert).await
    }

    pub(super) fn new_alert(title: &str, severity: Severity, device: Option<&Device>) -> NewAlert {
        let t = Utc::now();
        NewAlert {
            rule: None,
            title: title.into(),
            description: String::new(),
            severity,
            tactics: vec!["execution".into()],
            techniques: vec!["T1059.001".into()],
            device_id: device.map(|d| d.id.clone()),
            device_name: device.map(|d| d.hostname.clone()),
            first_event_time: t,
            last_event_time: t,
            dedup_key: None,
            evidence: vec![json!({"kind": "process", "name": title})],
            trigger_event: Some(json!({"table": "DeviceProcessEvents", "record_id": 1})),
            matched_fields: json!({"Image": "powershell.exe"}),
        }
    }

    /// An agent of `hostname` enrolling with the certificate `cert_fingerprint`, in no group.
    pub(super) fn agent_device(hostname: &str, cert_fingerprint: String) -> NewDevice {
        NewDevice {
            hostname: hostname.into(),
            platform: "linux".into(),
            os_version: String::new(),
            agent_version: "1".into(),
            group_id: None,
            tags: vec![],
            cert_fingerprint,
        }
    }

    pub(super) async fn device(
        db: &StateDb,
        tenant: &str,
        host: &str,
        group: Option<&str>,
    ) -> Device {
        let d = db
            .record_device_sighting(
                tenant,
                &DeviceSighting {
                    hostname: host.into(),
                    platform: "windows".into(),
                    os_version: "10".into(),
                    seen_at: Utc::now(),
                },
            )
            .await
            .expect("device");
        match group {
            Some(g) => db
                .update_device(
                    tenant,
                    &d.id,
                    &DeviceUpdate {
                        group_id: Some(Some(g.into())),
                        ..DeviceUpdate::default()
                    },
                )
                .await
                .expect("group device"),
            None => d,
        }
    }

    pub(super) async fn connect_migrates_once_and_bootstraps(db: &StateDb) {
        let a = db.ensure_default_tenant().await.unwrap();
        let b = db.ensure_default_tenant().await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.id, DEFAULT_TENANT_ID);
        let t = db.create_tenant("Acme").await.unwrap();
        assert_eq!(db.get_tenant(&t.id).await.unwrap(), t);
        assert_eq!(db.list_tenants().await.unwrap().len(), 2);
        assert!(matches!(
            db.get_tenant("ten_missing").await,
            Err(Error::NotFound("tenant"))
        ));
        assert_invalid(db.create_tenant("  ").await, "name");
    }

    pub(super) async fn passwords(db: &StateDb) {
        let t = tenant(db, "a").await;
        let u = user(db, &t, "Alice@Example.com", Role::Analyst).await;
        assert_eq!(u.username, "alice@example.com");
        let ok = db
            .verify_password("ALICE@example.com", PW)
            .await
            .unwrap()
            .expect("right password");
        assert_eq!(ok.id, u.id);
        assert!(ok.last_login_at.is_some());
        assert!(
            db.verify_password("alice@example.com", "wrong password")
                .await
                .unwrap()
                .is_none()
        );
        assert!(db.verify_password("nobody", PW).await.unwrap().is_none());
        assert!(
            db.verify_password("alice@example.com", &"x".repeat(5000))
                .await
                .unwrap()
                .is_none()
        );

        // Usernames are global: another tenant cannot reuse one.
        let other = tenant(db, "b").await;
        let dup = db
            .create_user(
                &other,
                &NewUser {
                    username: "alice@example.com".into(),
                    password: PW.into(),
                    role: Role::Admin,
                    scope_groups: vec![],
                },
            )
            .await;
        assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");

        let bad = |username: &str, password: &str| NewUser {
            username: username.into(),
            password: password.into(),
            role: Role::Readonly,
            scope_groups: vec![],
        };
        assert_invalid(db.create_user(&t, &bad("-bob", PW)).await, "username");
        assert_invalid(db.create_user(&t, &bad("bob smith", PW)).await, "username");
        assert_invalid(
            db.create_user(&t, &bad(&"b".repeat(65), PW)).await,
            "username",
        );
        assert_invalid(db.create_user(&t, &bad("bob", "short")).await, "password");
        assert_invalid(
            db.create_user(&t, &bad("bob", &"p".repeat(1025))).await,
            "password",
        );
        let mut scoped = bad("bob", PW);
        scoped.scope_groups = vec!["grp_nope".into()];
        assert_invalid(db.create_user(&t, &scoped).await, "scope_groups");

        // Disabled users cannot log in; a password change ends sessions.
        let (_, session) = db
            .create_session(&t, &u.id, Duration::hours(8))
            .await
            .unwrap();
        assert!(db.authenticate_token(&session).await.unwrap().is_some());
        db.update_user(
            &t,
            &u.id,
            &UserUpdate {
                password: Some("another good password".into()),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
        assert!(db.authenticate_token(&session).await.unwrap().is_none());
        assert!(
            db.verify_password("alice@example.com", PW)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            db.verify_password("alice@example.com", "another good password")
                .await
                .unwrap()
                .is_some()
        );
        db.update_user(
            &t,
            &u.id,
            &UserUpdate {
                disabled: Some(true),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
        assert!(
            db.verify_password("alice@example.com", "another good password")
                .await
                .unwrap()
                .is_none()
        );
    }

    pub(super) async fn api_tokens_and_sessions(db: &StateDb) {
        let t = tenant(db, "a").await;
        let g = db.create_device_group(&t, "servers", "").await.unwrap();
        let analyst = db
            .create_user(
                &t,
                &NewUser {
                    username: "ann".into(),
                    password: PW.into(),
                    role: Role::Analyst,
                    scope_groups: vec![g.id.clone()],
                },
            )
            .await
            .unwrap();
        assert_invalid(
            db.create_api_token(&t, &analyst.id, "ci", Role::Admin, None)
                .await,
            "role",
        );

        let (token, secret) = db
            .create_api_token(&t, &analyst.id, "ci", Role::Readonly, None)
            .await
            .unwrap();
        assert!(
            secret.starts_with("rpt_") && secret.len() == 4 + 43,
            "{secret}"
        );
        let p = db
            .authenticate_token(&secret)
            .await
            .unwrap()
            .expect("valid token");
        assert_eq!(
            (
                p.tenant_id.as_str(),
                p.user_id.as_str(),
                p.role,
                p.token_id.as_str(),
                p.token_kind
            ),
            (
                t.as_str(),
                analyst.id.as_str(),
                Role::Readonly,
                token.id.as_str(),
                TokenKind::Api
            )
        );
        assert_eq!(p.scope, Scope(vec![g.id.clone()]));
        assert_eq!(p.username, "ann");
        let listed = db
            .list_api_tokens(&t, Some(&analyst.id), None, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);
        assert!(listed.items[0].last_used_at.is_some());

        // Unknown, malformed, revoked, expired.
        assert!(db.authenticate_token("rpt_AAAA").await.unwrap().is_none());
        assert!(db.authenticate_token("garbage").await.unwrap().is_none());
        assert!(
            db.authenticate_token(&"rpt_x".repeat(100))
                .await
                .unwrap()
                .is_none()
        );
        db.revoke_token(&t, &token.id).await.unwrap();
        db.revoke_token(&t, &token.id).await.unwrap();
        assert!(db.authenticate_token(&secret).await.unwrap().is_none());
        let (_, expired) = db
            .create_api_token(
                &t,
                &analyst.id,
                "old",
                Role::Analyst,
                Some(Utc::now() - Duration::seconds(1)),
            )
            .await
            .unwrap();
        assert!(db.authenticate_token(&expired).await.unwrap().is_none());

        // Sessions: same table, own prefix; a demoted user's token loses the extra role.
        let (session, s) = db
            .create_session(&t, &analyst.id, Duration::minutes(30))
            .await
            .unwrap();
        assert!(s.starts_with("rps_"));
        assert_eq!(session.kind, TokenKind::Session);
        let p = db.authenticate_token(&s).await.unwrap().expect("session");
        assert_eq!((p.role, p.token_kind), (Role::Analyst, TokenKind::Session));
        db.update_user(
            &t,
            &analyst.id,
            &UserUpdate {
                role: Some(Role::Readonly),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            db.authenticate_token(&s)
                .await
                .unwrap()
                .expect("session")
                .role,
            Role::Readonly
        );
        // The session and the expired (never revoked) token.
        assert_eq!(
            db.revoke_user_tokens(&t, &analyst.id, None).await.unwrap(),
            2
        );
        assert!(db.authenticate_token(&s).await.unwrap().is_none());
    }

    pub(super) async fn enrollment_tokens_are_consumed_atomically(db: &StateDb) {
        let t = tenant(db, "a").await;
        let g = db.create_device_group(&t, "laptops", "").await.unwrap();
        for max_uses in [1_i64, 3] {
            let (tok, secret) = db
                .create_enrollment_token(
                    &t,
                    &NewEnrollmentToken {
                        name: format!("batch {max_uses}"),
                        group_id: Some(g.id.clone()),
                        max_uses,
                        expires_at: Utc::now() + Duration::hours(1),
                    },
                    "admin",
                )
                .await
                .unwrap();
            assert!(secret.starts_with("rpe_"));
            let tasks: Vec<_> = (0..12)
                .map(|_| {
                    let db = db.clone();
                    let secret = secret.clone();
                    tokio::spawn(async move { db.consume_enrollment_token(&secret).await })
                })
                .collect();
            let mut granted = 0;
            for task in tasks {
                if let Some(grant) = task.await.unwrap().unwrap() {
                    assert_eq!(
                        (grant.tenant_id.as_str(), grant.token_id.as_str()),
                        (t.as_str(), tok.id.as_str())
                    );
                    assert_eq!(grant.group_id.as_deref(), Some(g.id.as_str()));
                    granted += 1;
                }
            }
            assert_eq!(granted, max_uses);
        }
        let new = |expires_at| NewEnrollmentToken {
            name: "x".into(),
            group_id: None,
            max_uses: 5,
            expires_at,
        };
        let (_, expired) = db
            .create_enrollment_token(&t, &new(Utc::now() - Duration::seconds(1)), "admin")
            .await
            .unwrap();
        assert!(
            db.consume_enrollment_token(&expired)
                .await
                .unwrap()
                .is_none()
        );
        let (tok, revoked) = db
            .create_enrollment_token(&t, &new(Utc::now() + Duration::hours(1)), "admin")
            .await
            .unwrap();
        db.revoke_enrollment_token(&t, &tok.id).await.unwrap();
        assert!(
            db.consume_enrollment_token(&revoked)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            db.consume_enrollment_token("rpe_unknown")
                .await
                .unwrap()
                .is_none()
        );
        assert_invalid(
            db.create_enrollment_token(
                &t,
                &NewEnrollmentToken {
                    max_uses: 0,
                    ..new(Utc::now())
                },
                "admin",
            )
            .await,
            "max_uses",
        );
        let listed = db
            .list_enrollment_tokens(&t, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 4);
        assert_eq!(listed.items.iter().map(|t| t.used_count).max(), Some(3));
    }

    pub(super) async fn tenant_isolation(db: &StateDb) {
        let a = tenant(db, "a").await;
        let b = tenant(db, "b").await;
        let all = Scope::all();
        let page = PageRequest::default();

        // Tenant A gets one of everything.
        let group = db.create_device_group(&a, "servers", "").await.unwrap();
        let u = user(db, &a, "a-admin", Role::Admin).await;
        let (tok, _) = db
            .create_api_token(&a, &u.id, "t", Role::Admin, None)
            .await
            .unwrap();
        let (enr, _) = db
            .create_enrollment_token(
                &a,
                &NewEnrollmentToken {
                    name: "e".into(),
                    group_id: None,
                    max_uses: 1,
                    expires_at: Utc::now() + Duration::hours(1),
                },
                "a-admin",
            )
            .await
            .unwrap();
        let dev = device(db, &a, "host-a", Some(&group.id)).await;
        let rule = db
            .create_rule(
                &a,
                &sigma_rule("r1", Some("5b3ee1bd-f36e-4a05-a6ab-8b8ef7e5c4a1")),
                "a",
            )
            .await
            .unwrap();
        let alert = db
            .create_alert(&a, &new_alert("x", Severity::High, Some(&dev)))
            .await
            .unwrap();
        let inc = db
            .create_incident(
                &a,
                &NewIncident {
                    id: None,
                    title: "i".into(),
                    tags: vec![],
                },
            )
            .await
            .unwrap();
        db.attach_alert(&a, &inc.id, &alert.id, &json!({"why": "first"}))
            .await
            .unwrap();
        let cmt = db
            .add_comment(&a, CommentTarget::Alert, &alert.id, "a", "hello")
            .await
            .unwrap();
        let ioc = db
            .create_indicator(
                &a,
                &NewIndicator {
                    kind: IndicatorKind::Domain,
                    value: "evil.example".into(),
                    action: IndicatorAction::Block,
                    severity: Severity::High,
                    title: "evil".into(),
                    description: String::new(),
                    scope_groups: vec![],
                    expires_at: None,
                },
                "a",
            )
            .await
            .unwrap();
        let act = db
            .create_action(
                &a,
                &NewAction {
                    device_id: dev.id.clone(),
                    kind: ActionKind::Isolate,
                    params: json!({}),
                },
                "a",
            )
            .await
            .unwrap();
        db.append_audit(
            &a,
            &NewAuditEntry {
                actor: "a".into(),
                action: "alert.update".into(),
                target_kind: "alert".into(),
                target_id: alert.id.clone(),
                details: json!({}),
                remote_addr: None,
            },
        )
        .await
        .unwrap();

        // Tenant B sees none of it, through getters, lists or mutations.
        let nf = |r: Result<()>| assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");
        nf(db.get_device_group(&b, &group.id).await.map(drop));
        nf(db.get_user(&b, &u.id).await.map(drop));
        nf(db.get_device(&b, &all, &dev.id).await.map(drop));
        nf(db.get_rule(&b, &rule.id).await.map(drop));
        nf(db.get_alert(&b, &all, &alert.id).await.map(drop));
        nf(db.get_incident(&b, &all, &inc.id).await.map(drop));
        nf(db.incident_detail(&b, &all, &inc.id).await.map(drop));
        nf(db.get_indicator(&b, &ioc.id).await.map(drop));
        nf(db.get_action(&b, &all, &act.id).await.map(drop));
        nf(db.revoke_token(&b, &tok.id).await);
        nf(db.revoke_enrollment_token(&b, &enr.id).await);
        nf(db
            .update_user(&b, &u.id, &UserUpdate::default())
            .await
            .map(drop));
        nf(db.delete_user(&b, &u.id).await);
        nf(db
            .update_device(&b, &dev.id, &DeviceUpdate::default())
            .await
            .map(drop));
        nf(db.delete_device(&b, &dev.id).await);
        nf(db.set_rule_enabled(&b, &rule.id, false).await.map(drop));
        nf(db.delete_rule(&b, &rule.id).await);
        nf(db
            .update_alert(&b, &all, &alert.id, &AlertUpdate::default())
            .await
            .map(drop));
        nf(db
            .record_duplicates(&b, &[repeats(&alert.id, 1, Utc::now(), Utc::now())])
            .await);
        nf(db
            .update_incident(&b, &all, &inc.id, &IncidentUpdate::default())
            .await
            .map(drop));
        nf(db.delete_indicator(&b, &ioc.id).await);
        nf(db
            .set_action_status(&b, &act.id, ActionStatus::Sent, None)
            .await
            .map(drop));
        nf(db
            .add_comment(&b, CommentTarget::Alert, &alert.id, "b", "hi")
            .await
            .map(drop));
        nf(db
            .create_action(
                &b,
                &NewAction {
                    device_id: dev.id.clone(),
                    kind: ActionKind::Release,
                    params: json!({}),
                },
                "b",
            )
            .await
            .map(drop));
        nf(db
            .create_alert(&b, &new_alert("y", Severity::Low, Some(&dev)))
            .await
            .map(drop));
        let b_inc = db
            .create_incident(
                &b,
                &NewIncident {
                    id: None,
                    title: "b".into(),
                    tags: vec![],
                },
            )
            .await
            .unwrap();
        nf(db
            .attach_alert(&b, &b_inc.id, &alert.id, &json!({}))
            .await
            .map(drop));
        nf(db
            .merge_incidents(&b, &b_inc.id, std::slice::from_ref(&inc.id))
            .await
            .map(drop));
        assert_invalid(
            db.update_device(
                &b,
                "dev_x",
                &DeviceUpdate {
                    group_id: Some(Some(group.id.clone())),
                    ..Default::default()
                },
            )
            .await,
            "group_id",
        );

        assert!(
            db.list_device_groups(&b, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(db.list_users(&b, &page).await.unwrap().items.is_empty());
        assert!(
            db.list_api_tokens(&b, None, None, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            db.list_enrollment_tokens(&b, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            db.list_devices(&b, &DeviceFilter::default(), &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            db.list_rules(&b, &RuleFilter::default(), &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            db.list_alerts(&b, &AlertFilter::default(), &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let b_incidents = db
            .list_incidents(&b, &IncidentFilter::default(), &page)
            .await
            .unwrap();
        assert_eq!(
            b_incidents.items.iter().map(|i| &i.id).collect::<Vec<_>>(),
            vec![&b_inc.id]
        );
        assert!(
            db.list_comments(&b, CommentTarget::Alert, &alert.id, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            db.list_indicators(&b, &IndicatorFilter::default(), &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            db.active_indicators(&b, Utc::now())
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            db.list_actions(&b, &ActionFilter::default(), &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            db.hand_over_pending_actions(&b, &dev.id)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            db.list_audit(&b, &AuditFilter::default(), &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            open_alert(db, &b, "k", Utc::now() - Duration::days(1))
                .await
                .is_none()
        );

        // …while A still has all of it.
        assert_eq!(
            db.list_comments(&a, CommentTarget::Alert, &alert.id, &page)
                .await
                .unwrap()
                .items,
            vec![cmt]
        );
        assert_eq!(
            db.hand_over_pending_actions(&a, &dev.id)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(db.active_indicators(&a, Utc::now()).await.unwrap().len(), 1);

        // Device-group scope inside a tenant.
        let other_group = db.create_device_group(&a, "laptops", "").await.unwrap();
        let narrow = Scope(vec![other_group.id.clone()]);
        assert!(db.get_alert(&a, &narrow, &alert.id).await.is_err());
        assert!(db.get_device(&a, &narrow, &dev.id).await.is_err());
        assert!(db.get_incident(&a, &narrow, &inc.id).await.is_err());
        let scoped_alerts = AlertFilter {
            scope: narrow.clone(),
            ..Default::default()
        };
        assert!(
            db.list_alerts(&a, &scoped_alerts, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let wide = Scope(vec![group.id.clone()]);
        assert_eq!(
            db.get_alert(&a, &wide, &alert.id).await.unwrap().id,
            alert.id
        );
        assert_eq!(
            db.get_incident(&a, &wide, &inc.id).await.unwrap().id,
            inc.id
        );
        let scoped_incidents = IncidentFilter {
            scope: wide,
            ..Default::default()
        };
        assert_eq!(
            db.list_incidents(&a, &scoped_incidents, &page)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
    }

    pub(super) async fn pagination_is_stable_and_complete(db: &StateDb) {
        let t = tenant(db, "a").await;
        let audit = |i: usize| NewAuditEntry {
            actor: format!("user{}", i % 3),
            action: "thing.do".into(),
            target_kind: "thing".into(),
            target_id: i.to_string(),
            details: json!({"i": i}),
            remote_addr: Some("127.0.0.1".into()),
        };
        for i in 0..25 {
            db.append_audit(&t, &audit(i)).await.unwrap();
        }
        // Walk in pages of 7 while new entries keep arriving: the walk sees each of the original
        // entries exactly once, newest first.
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = db
                .list_audit(&t, &AuditFilter::default(), &PageRequest::after(7, cursor))
                .await
                .unwrap();
            assert!(page.items.len() <= 7);
            seen.extend(
                page.items
                    .iter()
                    .map(|e| (e.at, e.id.clone(), e.target_id.clone())),
            );
            db.append_audit(&t, &audit(100 + pages)).await.unwrap();
            pages += 1;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 4);
        let ids: HashSet<_> = seen.iter().map(|s| s.1.clone()).collect();
        assert_eq!(ids.len(), seen.len(), "no duplicates");
        let originals: HashSet<String> = seen.iter().map(|s| s.2.clone()).collect();
        assert_eq!(originals, (0..25).map(|i| i.to_string()).collect());
        assert!(
            seen.windows(2)
                .all(|w| (w[0].0, &w[0].1) > (w[1].0, &w[1].1)),
            "newest first"
        );

        // Filters combine with paging; exact page boundary has no dangling cursor.
        let f = AuditFilter {
            actor: Some("user0".into()),
            ..Default::default()
        };
        let all0 = db
            .list_audit(&t, &f, &PageRequest::first(1000))
            .await
            .unwrap();
        assert!(all0.items.iter().all(|e| e.actor == "user0"));
        let n = all0.items.len() as u32;
        let exact = db.list_audit(&t, &f, &PageRequest::first(n)).await.unwrap();
        assert!(exact.next.is_none());
        // Oversized limits are capped, not rejected; garbage cursors are rejected.
        assert!(
            db.list_audit(&t, &f, &PageRequest::first(1_000_000))
                .await
                .is_ok()
        );
        assert_invalid(
            db.list_audit(&t, &f, &PageRequest::after(5, Some("!!".into())))
                .await,
            "cursor",
        );

        // Alphabetical lists page the same way.
        for i in 0..9 {
            device(db, &t, &format!("host-{i}"), None).await;
        }
        let mut names = Vec::new();
        let mut cursor = None;
        loop {
            let page = db
                .list_devices(&t, &DeviceFilter::default(), &PageRequest::after(4, cursor))
                .await
                .unwrap();
            names.extend(page.items.into_iter().map(|d| d.hostname));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(
            names,
            (0..9).map(|i| format!("host-{i}")).collect::<Vec<_>>()
        );
    }

    pub(super) async fn incidents_attach_and_merge(db: &StateDb) {
        let t = tenant(db, "a").await;
        let dev = device(db, &t, "ws1", None).await;
        let mut low = new_alert("low", Severity::Low, Some(&dev));
        low.first_event_time = Utc::now() - Duration::hours(2);
        let low = db.create_alert(&t, &low).await.unwrap();
        let high = db
            .create_alert(&t, &new_alert("high", Severity::High, Some(&dev)))
            .await
            .unwrap();
        let medium = db
            .create_alert(&t, &new_alert("medium", Severity::Medium, Some(&dev)))
            .await
            .unwrap();
        let mut same_entity = new_alert("dup entity", Severity::Low, None);
        same_entity.evidence = vec![json!({"kind": "process", "name": "low"})];
        let same_entity = db.create_alert(&t, &same_entity).await.unwrap();

        let one = db
            .create_incident(
                &t,
                &NewIncident {
                    id: None,
                    title: "one".into(),
                    tags: vec!["a".into()],
                },
            )
            .await
            .unwrap();
        let two = db
            .create_incident(
                &t,
                &NewIncident {
                    id: None,
                    title: "two".into(),
                    tags: vec!["b".into()],
                },
            )
            .await
            .unwrap();
        let r_low = json!({"shared": ["device:ws1"]});
        let r_high = json!({"shared": ["user:bob"], "window_secs": 600});
        let one_now = db.attach_alert(&t, &one.id, &low.id, &r_low).await.unwrap();
        assert_eq!((one_now.severity, one_now.alert_count), (Severity::Low, 1));
        assert_eq!(one_now.first_activity, low.first_event_time);
        let two_now = db
            .attach_alert(&t, &two.id, &high.id, &r_high)
            .await
            .unwrap();
        assert_eq!(two_now.severity, Severity::High);
        db.attach_alert(&t, &two.id, &medium.id, &json!({"r": "m"}))
            .await
            .unwrap();
        db.attach_alert(&t, &one.id, &same_entity.id, &json!({"r": "e"}))
            .await
            .unwrap();

        // Re-attaching to the same incident is a no-op; to another one is a conflict.
        let again = db
            .attach_alert(&t, &two.id, &high.id, &json!({"other": "reason"}))
            .await
            .unwrap();
        assert_eq!(again.alert_count, 2);
        let moved = db.attach_alert(&t, &one.id, &high.id, &json!({})).await;
        assert!(matches!(moved, Err(Error::Conflict(_))), "{moved:?}");

        let merged = db
            .merge_incidents(&t, &one.id, std::slice::from_ref(&two.id))
            .await
            .unwrap();
        assert_eq!((merged.severity, merged.alert_count), (Severity::High, 4));
        assert_eq!(merged.tags, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(merged.first_activity, low.first_event_time);
        assert!(merged.last_activity >= high.last_event_time);
        let old = db.get_incident(&t, &Scope::all(), &two.id).await.unwrap();
        assert_eq!(
            (old.status, old.merged_into.as_deref(), old.alert_count),
            (IncidentStatus::Merged, Some(one.id.as_str()), 0)
        );
        let late = db.attach_alert(&t, &two.id, &medium.id, &json!({})).await;
        assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
        let merged_again = db
            .merge_incidents(&t, &one.id, std::slice::from_ref(&two.id))
            .await;
        assert!(
            matches!(merged_again, Err(Error::Conflict(_))),
            "{merged_again:?}"
        );
        assert_invalid(
            db.merge_incidents(&t, &one.id, std::slice::from_ref(&one.id))
                .await,
            "sources",
        );

        let detail = db
            .incident_detail(&t, &Scope::all(), &one.id)
            .await
            .unwrap();
        assert_eq!(detail.alerts.len(), 4);
        assert!(!detail.alerts_truncated);
        let reason_of = |id: &str| {
            detail
                .alerts
                .iter()
                .find(|a| a.alert.id == id)
                .map(|a| a.reason.clone())
        };
        assert_eq!(reason_of(&low.id), Some(r_low));
        assert_eq!(reason_of(&high.id), Some(r_high));
        assert!(
            detail
                .alerts
                .iter()
                .all(|a| a.alert.incident_id.as_deref() == Some(one.id.as_str()))
        );
        // Evidence of "low" and "dup entity" is the same entity: listed once.
        assert_eq!(detail.entities.len(), 3, "{:?}", detail.entities);

        // Lists: merged incidents are hidden unless asked for; filters apply.
        let page = PageRequest::default();
        let active = db
            .list_incidents(&t, &IncidentFilter::default(), &page)
            .await
            .unwrap();
        assert_eq!(
            active.items.iter().map(|i| &i.id).collect::<Vec<_>>(),
            vec![&one.id]
        );
        let merged_only = IncidentFilter {
            status: Some(IncidentStatus::Merged),
            ..Default::default()
        };
        assert_eq!(
            db.list_incidents(&t, &merged_only, &page)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let by_tag = IncidentFilter {
            tag: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(
            db.list_incidents(&t, &by_tag, &page)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let by_tag = IncidentFilter {
            tag: Some("B".into()),
            ..Default::default()
        };
        assert!(
            db.list_incidents(&t, &by_tag, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let upd = db
            .update_incident(
                &t,
                &Scope::all(),
                &one.id,
                &IncidentUpdate {
                    status: Some(IncidentStatus::InProgress),
                    assigned_to: Some(Some("ann".into())),
                    classification: Some(Some(Classification::TruePositive)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (upd.status, upd.assigned_to.as_deref()),
            (IncidentStatus::InProgress, Some("ann"))
        );
        let mine = IncidentFilter {
            assigned_to: Some("ann".into()),
            severity: Some(Severity::High),
            ..Default::default()
        };
        assert_eq!(
            db.list_incidents(&t, &mine, &page)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let future = IncidentFilter {
            activity_from: Some(Utc::now() + Duration::hours(1)),
            ..Default::default()
        };
        assert!(
            db.list_incidents(&t, &future, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert_invalid(
            db.update_incident(
                &t,
                &Scope::all(),
                &one.id,
                &IncidentUpdate {
                    status: Some(IncidentStatus::Merged),
                    ..Default::default()
                },
            )
            .await,
            "status",
        );
        let by_incident = AlertFilter {
            incident_id: Some(one.id.clone()),
            ..Default::default()
        };
        assert_eq!(
            db.list_alerts(&t, &by_incident, &page)
                .await
                .unwrap()
                .items
                .len(),
            4
        );
    }

    /// The incident queue: title search, detection-source filter, every sort (paged through its
    /// cursor), and what each listed incident's alerts involve, within the caller's scope.
    pub(super) async fn incident_queue_search_sort_and_involvement(db: &StateDb) {
        let t = tenant(db, "queue").await;
        let group = db.create_device_group(&t, "servers", "").await.unwrap();
        let ws1 = device(db, &t, "ws1", None).await;
        let ws2 = device(db, &t, "ws2", Some(&group.id)).await;
        let account = |name: &str, domain: &str| json!({"kind": "account", "name": name, "domain": domain, "sid": null, "upn": null, "role": "impacted"});
        let alert = |title: &str,
                     severity,
                     device: Option<&Device>,
                     kind: Option<RuleKind>,
                     hours: i64,
                     evidence: Vec<serde_json::Value>| {
            let mut a = new_alert(title, severity, device);
            a.rule = kind.map(|kind| RuleRef {
                id: None,
                title: title.into(),
                kind,
            });
            a.first_event_time = Utc::now() - Duration::hours(hours);
            a.last_event_time = a.first_event_time;
            a.evidence = evidence;
            a
        };
        let mut incidents = Vec::new();
        for (title, alerts) in [
            (
                "PowerShell attack",
                vec![
                    alert(
                        "a",
                        Severity::High,
                        Some(&ws1),
                        Some(RuleKind::Sigma),
                        3,
                        vec![account("bob", "CORP")],
                    ),
                    alert(
                        "b",
                        Severity::Low,
                        Some(&ws2),
                        Some(RuleKind::Kql),
                        2,
                        vec![account("BOB", "corp"), account("eve", "CORP")],
                    ),
                ],
            ),
            (
                "Hash match",
                vec![alert("c", Severity::Medium, Some(&ws1), None, 1, vec![])],
            ),
            (
                "Quiet",
                vec![alert(
                    "d",
                    Severity::Low,
                    None,
                    Some(RuleKind::Sigma),
                    5,
                    vec![],
                )],
            ),
        ] {
            let incident = db
                .create_incident(
                    &t,
                    &NewIncident {
                        id: None,
                        title: title.into(),
                        tags: vec![],
                    },
                )
                .await
                .unwrap();
            for a in alerts {
                let a = db.create_alert(&t, &a).await.unwrap();
                db.attach_alert(&t, &incident.id, &a.id, &json!({}))
                    .await
                    .unwrap();
            }
            incidents.push(incident.id);
        }
        let (attack, hash, quiet) = (
            incidents[0].as_str(),
            incidents[1].as_str(),
            incidents[2].as_str(),
        );
        let ids = |page: Page<Incident>| page.items.into_iter().map(|i| i.id).collect::<Vec<_>>();
        let t = t.as_str();
        let list = |filter: IncidentFilter| async move {
            ids(db
                .list_incidents(t, &filter, &PageRequest::default())
                .await
                .unwrap())
        };

        // Every order, and each paged one at a time through its cursor.
        for (sort, expected) in [
            (IncidentSort::Newest, [quiet, hash, attack]),
            (IncidentSort::Oldest, [attack, hash, quiet]),
            (IncidentSort::Activity, [hash, attack, quiet]),
            (IncidentSort::Severity, [attack, hash, quiet]),
        ] {
            let filter = IncidentFilter {
                sort,
                ..Default::default()
            };
            assert_eq!(list(filter.clone()).await, expected, "{sort}");
            let mut paged = Vec::new();
            let mut page = PageRequest::first(1);
            loop {
                let got = db.list_incidents(t, &filter, &page).await.unwrap();
                paged.extend(got.items.into_iter().map(|i| i.id));
                match got.next {
                    Some(next) => page.cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(paged, expected, "{sort}, one per page");
        }
        assert_eq!(IncidentFilter::default().sort, IncidentSort::Newest);

        // Title search ignores case; blank searches everything.
        let search = |q: &str| IncidentFilter {
            q: Some(q.into()),
            ..Default::default()
        };
        assert_eq!(list(search("powershell")).await, [attack]);
        assert_eq!(list(search("ATTACK")).await, [attack]);
        assert!(list(search("nothing like it")).await.is_empty());
        assert_eq!(list(search("  ")).await.len(), 3);

        // The detection source is the alerts' rule kind (none: an indicator).
        let from = |source| IncidentFilter {
            source: Some(source),
            ..Default::default()
        };
        assert_eq!(list(from(AlertSource::Indicator)).await, [hash]);
        assert_eq!(list(from(AlertSource::CustomDetection)).await, [attack]);
        assert_eq!(list(from(AlertSource::Sigma)).await, [quiet, attack]);
        let indicator_alerts = db
            .list_alerts(
                t,
                &AlertFilter {
                    source: Some(AlertSource::Indicator),
                    ..Default::default()
                },
                &PageRequest::default(),
            )
            .await
            .unwrap();
        assert_eq!(indicator_alerts.items.len(), 1);
        assert_eq!(indicator_alerts.items[0].source(), AlertSource::Indicator);

        // Rows carry the devices, users (one per name whatever its case) and sources.
        let rows = db
            .list_incident_rows(t, &IncidentFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        let involved = |id: &str| {
            rows.items
                .iter()
                .find(|r| r.incident.id == id)
                .map(|r| r.involvement.clone())
                .unwrap()
        };
        assert_eq!(
            involved(attack),
            Involvement {
                devices: vec!["ws1".into(), "ws2".into()],
                users: vec!["CORP\\bob".into(), "CORP\\eve".into()],
                sources: vec![AlertSource::Sigma, AlertSource::CustomDetection],
            }
        );
        assert_eq!(involved(hash).sources, vec![AlertSource::Indicator]);
        assert_eq!(
            involved(quiet),
            Involvement {
                sources: vec![AlertSource::Sigma],
                ..Default::default()
            }
        );
        // A user confined to the servers group sees only what the alerts on ws2 involve.
        let scoped = IncidentFilter {
            scope: Scope(vec![group.id.clone()]),
            ..Default::default()
        };
        let rows = db
            .list_incident_rows(t, &scoped, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(rows.items.len(), 1);
        assert_eq!(rows.items[0].involvement.devices, vec!["ws2".to_string()]);
        assert_eq!(
            rows.items[0].involvement.sources,
            vec![AlertSource::CustomDetection]
        );

        assert_invalid(
            db.list_incidents(t, &search(&"x".repeat(10_000)), &PageRequest::default())
                .await,
            "q",
        );
    }

    /// A device's risk is the highest severity of its alerts not resolved.
    pub(super) async fn device_risk_follows_open_alerts(db: &StateDb) {
        let tenant_id = tenant(db, "a").await;
        let t = tenant_id.as_str();
        let device = db
            .register_device(t, &agent_device("ws-risk", "ab".repeat(32)))
            .await
            .unwrap();
        let id = device.id.as_str();
        let risk = || async move { db.get_device(t, &Scope::all(), id).await.unwrap().risk };
        assert_eq!(risk().await, DeviceRisk::None);
        let medium = db
            .create_alert(t, &new_alert("discovery", Severity::Medium, Some(&device)))
            .await
            .unwrap();
        assert_eq!(risk().await, DeviceRisk::Medium);
        let high = db
            .create_alert(t, &new_alert("mimikatz", Severity::High, Some(&device)))
            .await
            .unwrap();
        // Another device's alert does not count.
        db.create_alert(t, &new_alert("elsewhere", Severity::High, None))
            .await
            .unwrap();
        assert_eq!(risk().await, DeviceRisk::High);
        let resolve = |id: String| async move {
            let update = AlertUpdate {
                status: Some(AlertStatus::Resolved),
                ..AlertUpdate::default()
            };
            db.update_alert(t, &Scope::all(), &id, &update)
                .await
                .unwrap();
        };
        resolve(high.id.clone()).await;
        assert_eq!(risk().await, DeviceRisk::Medium);
        resolve(medium.id.clone()).await;
        assert_eq!(risk().await, DeviceRisk::None);
    }

    pub(super) async fn a_batch_looks_up_and_folds_at_once(db: &StateDb) {
        let t = tenant(db, "a").await;
        let hour_ago = Utc::now() - Duration::hours(1);
        let keyed = |key: &str, minutes_ago: i64| {
            let mut new = new_alert(key, Severity::Low, None);
            new.dedup_key = Some(key.into());
            new.first_event_time = Utc::now() - Duration::minutes(minutes_ago);
            new.last_event_time = new.first_event_time;
            new
        };
        let older = db.create_alert(&t, &keyed("a", 30)).await.unwrap();
        let newer = db.create_alert(&t, &keyed("a", 10)).await.unwrap();
        let stale = db.create_alert(&t, &keyed("b", 120)).await.unwrap();
        let closed = db.create_alert(&t, &keyed("c", 5)).await.unwrap();
        let resolve = AlertUpdate {
            status: Some(AlertStatus::Resolved),
            ..AlertUpdate::default()
        };
        db.update_alert(&t, &Scope::all(), &closed.id, &resolve)
            .await
            .unwrap();
        // More keys than one statement takes: the last one is in the second chunk.
        let mut keys: Vec<String> = (0..KEYS_PER_LOOKUP).map(|i| format!("none{i}")).collect();
        keys.extend(["a", "b", "c"].map(String::from));
        let found = db
            .find_open_alerts_by_dedup_keys(&t, &keys, hour_ago)
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found["a"].id, newer.id);
        assert_eq!(
            found["a"].last_event_time.timestamp_micros(),
            newer.last_event_time.timestamp_micros()
        );
        assert!(!found.contains_key("b"), "outside the window: {}", stale.id);

        // Two alerts of one incident folded in one call: each counts its own repeats, and the
        // incident's activity range covers both.
        let incident = db
            .create_incident(
                &t,
                &NewIncident {
                    id: None,
                    title: "i".into(),
                    tags: vec![],
                },
            )
            .await
            .unwrap();
        for alert in [&older, &newer] {
            db.attach_alert(&t, &incident.id, &alert.id, &json!({}))
                .await
                .unwrap();
        }
        let (early, late) = (
            Utc::now() - Duration::days(2),
            Utc::now() + Duration::hours(2),
        );
        db.record_duplicates(
            &t,
            &[
                repeats(&older.id, 3, early, early),
                repeats(&newer.id, 5, late, late),
            ],
        )
        .await
        .unwrap();
        let (all, tenant_id) = (&Scope::all(), t.as_str());
        let get = |id: String| async move { db.get_alert(tenant_id, all, &id).await.unwrap() };
        let (o, n) = (get(older.id.clone()).await, get(newer.id.clone()).await);
        assert_eq!((o.event_count, n.event_count), (4, 6));
        assert_eq!(
            o.first_event_time.timestamp_micros(),
            early.timestamp_micros()
        );
        assert_eq!(
            n.last_event_time.timestamp_micros(),
            late.timestamp_micros()
        );
        let i = db
            .get_incident(&t, &Scope::all(), &incident.id)
            .await
            .unwrap();
        assert_eq!(
            i.first_activity.timestamp_micros(),
            early.timestamp_micros()
        );
        assert_eq!(i.last_activity.timestamp_micros(), late.timestamp_micros());
        // Repeats of one alert given apart add up.
        db.record_duplicates(
            &t,
            &[
                repeats(&newer.id, 2, late, late),
                repeats(&newer.id, 3, early, early),
            ],
        )
        .await
        .unwrap();
        let n = get(newer.id.clone()).await;
        assert_eq!(n.event_count, 11);
        assert_eq!(
            n.first_event_time.timestamp_micros(),
            early.timestamp_micros()
        );
        // An unknown alert fails the whole call: nothing of it is kept.
        let refused = db
            .record_duplicates(
                &t,
                &[
                    repeats(&older.id, 1, early, early),
                    repeats("alr_missing", 1, early, early),
                ],
            )
            .await;
        assert!(
            matches!(refused, Err(Error::NotFound("alert"))),
            "{refused:?}"
        );
        assert_eq!(get(older.id.clone()).await.event_count, 4);
    }

    pub(super) async fn a_batch_records_its_hosts_at_once(db: &StateDb) {
        let t = tenant(db, "a").await;
        let now = Utc::now();
        let seen = |host: &str, at: chrono::DateTime<Utc>| DeviceSighting {
            hostname: host.into(),
            platform: "Windows".into(),
            os_version: String::new(),
            seen_at: at,
        };
        let long = "x".repeat(limits::SHORT_MAX_CHARS + 1);
        let first = db
            .record_device_sightings(
                &t,
                &[
                    seen("WS1", now),
                    seen("", now),
                    seen(&long, now),
                    seen("ws2", now),
                ],
            )
            .await
            .unwrap();
        let names: Vec<&str> = first.iter().map(|d| d.hostname.as_str()).collect();
        assert_eq!(
            names,
            ["ws1", "ws2"],
            "names the database refuses are left out"
        );
        let ws1 = first[0].id.clone();
        let tenant_id = t.as_str();
        let device =
            |id: String| async move { db.get_device(tenant_id, &Scope::all(), &id).await.unwrap() };
        assert_eq!(device(ws1.clone()).await.platform, "Windows");

        // Within the recorded range: the same device, whatever the case of the name.
        let again = db
            .record_device_sightings(
                &t,
                &[seen("ws1", now - Duration::seconds(1)), seen("Ws1", now)],
            )
            .await
            .unwrap();
        assert!(again.iter().all(|d| d.id == ws1), "{again:?}");
        // Past the granularity, last seen moves; earlier than first seen, first seen does.
        let later = now + SIGHTING_GRANULARITY + Duration::seconds(1);
        let earlier = now - Duration::hours(1);
        db.record_device_sightings(&t, &[seen("ws1", later)])
            .await
            .unwrap();
        db.record_device_sightings(&t, &[seen("ws1", earlier)])
            .await
            .unwrap();
        let d = device(ws1.clone()).await;
        assert_eq!(d.last_seen.timestamp_micros(), later.timestamp_micros());
        assert_eq!(d.first_seen.timestamp_micros(), earlier.timestamp_micros());

        // A deleted device is a new one when seen again.
        db.delete_device(&t, &ws1).await.unwrap();
        let back = db
            .record_device_sightings(&t, &[seen("ws1", now)])
            .await
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_ne!(back[0].id, ws1);
        assert_eq!(device(back[0].id.clone()).await.hostname, "ws1");
    }

    pub(super) async fn alert_deduplication(db: &StateDb) {
        let t = tenant(db, "a").await;
        let mut new = new_alert("mimikatz", Severity::High, None);
        new.dedup_key = Some("rule1|ws1|lsass".into());
        let alert = db.create_alert(&t, &new).await.unwrap();
        assert_eq!(alert.event_count, 1);
        let hour_ago = Utc::now() - Duration::hours(1);
        let found = open_alert(db, &t, "rule1|ws1|lsass", hour_ago).await;
        assert_eq!(found, Some(alert.id.clone()));
        assert!(open_alert(db, &t, "other", hour_ago).await.is_none());
        let later = Utc::now() + Duration::minutes(1);
        assert!(open_alert(db, &t, "rule1|ws1|lsass", later).await.is_none());

        let event = Utc::now() + Duration::minutes(5);
        let bumped = fold(db, &t, &alert.id, 1, event, event).await.unwrap();
        assert_eq!(bumped.event_count, 2);
        assert_eq!(
            bumped.last_event_time.timestamp_micros(),
            event.timestamp_micros()
        );
        assert_eq!(bumped.first_event_time, alert.first_event_time);
        let older = fold(
            db,
            &t,
            &alert.id,
            1,
            Utc::now() - Duration::hours(3),
            Utc::now() - Duration::hours(3),
        )
        .await
        .unwrap();
        assert_eq!(older.event_count, 3);
        assert_eq!(older.last_event_time, bumped.last_event_time);
        assert!(older.first_event_time < alert.first_event_time);
        // A batch's repeats at once: counted, and the range widened both ways.
        let (early, late) = (
            Utc::now() - Duration::hours(5),
            Utc::now() + Duration::hours(1),
        );
        let folded = fold(db, &t, &alert.id, 40, late, early).await.unwrap();
        assert_eq!(folded.event_count, 43);
        assert_eq!(
            folded.first_event_time.timestamp_micros(),
            early.timestamp_micros()
        );
        assert_eq!(
            folded.last_event_time.timestamp_micros(),
            late.timestamp_micros()
        );
        assert!(open_alert(db, &t, "rule1|ws1|lsass", later).await.is_some());

        let resolved = db
            .update_alert(
                &t,
                &Scope::all(),
                &alert.id,
                &AlertUpdate {
                    status: Some(AlertStatus::Resolved),
                    classification: Some(Some(Classification::FalsePositive)),
                    determination: Some(Some("line-of-business app".into())),
                    assigned_to: Some(Some("ann".into())),
                },
            )
            .await
            .unwrap();
        assert_eq!(resolved.classification, Some(Classification::FalsePositive));
        assert!(
            open_alert(db, &t, "rule1|ws1|lsass", hour_ago)
                .await
                .is_none()
        );
        let cleared = db
            .update_alert(
                &t,
                &Scope::all(),
                &alert.id,
                &AlertUpdate {
                    assigned_to: Some(None),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (cleared.assigned_to, cleared.status),
            (None, AlertStatus::Resolved)
        );

        let page = PageRequest::default();
        let f = AlertFilter {
            status: Some(AlertStatus::Resolved),
            severity: Some(Severity::High),
            ..Default::default()
        };
        assert_eq!(db.list_alerts(&t, &f, &page).await.unwrap().items.len(), 1);
        let f = AlertFilter {
            status: Some(AlertStatus::New),
            ..Default::default()
        };
        assert!(
            db.list_alerts(&t, &f, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let f = AlertFilter {
            from: Some(Utc::now() + Duration::hours(1)),
            ..Default::default()
        };
        assert!(
            db.list_alerts(&t, &f, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        // JSON round-trips: serialisation is snake_case.
        let v = serde_json::to_value(&resolved).unwrap();
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["classification"], "false_positive");
        assert_eq!(v["trigger_event"]["table"], "DeviceProcessEvents");
    }

    pub(super) async fn indicators_validate_and_normalise(db: &StateDb) {
        let t = tenant(db, "a").await;
        let cases = [
            (
                IndicatorKind::Sha256,
                "  E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855 ",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                IndicatorKind::Sha1,
                "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            ),
            (
                IndicatorKind::Md5,
                "D41D8CD98F00B204E9800998ECF8427E",
                "d41d8cd98f00b204e9800998ecf8427e",
            ),
            (IndicatorKind::Ip, "2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            (IndicatorKind::Ip, "10.0.0.1", "10.0.0.1"),
            (
                IndicatorKind::Domain,
                "Evil.Example.COM.",
                "evil.example.com",
            ),
            (
                IndicatorKind::Url,
                "HTTPS://Evil.Example.com:8443/Path?Q=1",
                "https://evil.example.com:8443/Path?Q=1",
            ),
            (
                IndicatorKind::Url,
                "http://[2001:DB8::1]/x",
                "http://[2001:db8::1]/x",
            ),
            (
                IndicatorKind::Cert,
                "DA:39:A3:EE:5E:6B:4B:0D:32:55:BF:EF:95:60:18:90:AF:D8:07:09",
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            ),
        ];
        for (kind, input, expected) in cases {
            assert_eq!(kind.normalize(input).unwrap(), expected, "{kind} {input}");
        }
        let bad = [
            (IndicatorKind::Sha256, "abc"),
            (
                IndicatorKind::Sha1,
                "zz39a3ee5e6b4b0d3255bfef95601890afd80709",
            ),
            (IndicatorKind::Md5, ""),
            (IndicatorKind::Ip, "999.1.1.1"),
            (IndicatorKind::Domain, "localhost"),
            (IndicatorKind::Domain, "-bad.example"),
            (IndicatorKind::Domain, "1.2.3.4"),
            (IndicatorKind::Domain, "exa mple.com"),
            (IndicatorKind::Url, "ftp://example.com/"),
            (IndicatorKind::Url, "http://user@example.com/"),
            (IndicatorKind::Url, "http://example.com:99999/"),
            (IndicatorKind::Cert, "1234"),
        ];
        for (kind, input) in bad {
            assert_invalid(kind.normalize(input), "value");
        }

        let new = |kind, value: &str, expires_at| NewIndicator {
            kind,
            value: value.into(),
            action: IndicatorAction::Alert,
            severity: Severity::Medium,
            title: "t".into(),
            description: "d".into(),
            scope_groups: vec![],
            expires_at,
        };
        let ind = db
            .create_indicator(&t, &new(IndicatorKind::Domain, "EVIL.example", None), "ann")
            .await
            .unwrap();
        assert_eq!(ind.value, "evil.example");
        let dup = db
            .create_indicator(
                &t,
                &new(IndicatorKind::Domain, "evil.EXAMPLE.", None),
                "ann",
            )
            .await;
        assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
        // Same value, other kind, is a different indicator.
        db.create_indicator(
            &t,
            &new(IndicatorKind::Url, "http://evil.example/", None),
            "ann",
        )
        .await
        .unwrap();
        let past = Some(Utc::now() - Duration::minutes(1));
        db.create_indicator(&t, &new(IndicatorKind::Ip, "192.0.2.1", past), "ann")
            .await
            .unwrap();
        assert_invalid(
            db.create_indicator(&t, &new(IndicatorKind::Ip, "192.0.2", None), "ann")
                .await,
            "value",
        );
        let mut scoped = new(IndicatorKind::Ip, "192.0.2.2", None);
        scoped.scope_groups = vec!["grp_nope".into()];
        assert_invalid(
            db.create_indicator(&t, &scoped, "ann").await,
            "scope_groups",
        );

        let active = db.active_indicators(&t, Utc::now()).await.unwrap();
        assert_eq!(active.len(), 2);
        assert!(active.iter().all(|i| i.kind != IndicatorKind::Ip));
        let page = PageRequest::default();
        let f = IndicatorFilter {
            kind: Some(IndicatorKind::Domain),
            value: Some("Evil.Example".into()),
            ..Default::default()
        };
        assert_eq!(
            db.list_indicators(&t, &f, &page).await.unwrap().items,
            vec![ind.clone()]
        );
        let f = IndicatorFilter {
            active_at: Some(Utc::now()),
            ..Default::default()
        };
        assert_eq!(
            db.list_indicators(&t, &f, &page).await.unwrap().items.len(),
            2
        );
        assert_eq!(
            db.list_indicators(&t, &IndicatorFilter::default(), &page)
                .await
                .unwrap()
                .items
                .len(),
            3
        );
        db.delete_indicator(&t, &ind.id).await.unwrap();
        assert!(matches!(
            db.get_indicator(&t, &ind.id).await,
            Err(Error::NotFound("indicator"))
        ));
    }

    pub(super) async fn limits_name_the_field(db: &StateDb) {
        let t = tenant(db, "a").await;
        assert_invalid(db.create_device_group(&t, "", "").await, "name");
        assert_invalid(
            db.create_device_group(&t, &"n".repeat(129), "").await,
            "name",
        );
        assert_invalid(
            db.create_device_group(&t, "ok", &"d".repeat(limits::DESCRIPTION_MAX_CHARS + 1))
                .await,
            "description",
        );
        assert_invalid(db.create_device_group(&t, "tab\there", "").await, "name");
        db.create_device_group(&t, "ok", "multi\nline")
            .await
            .unwrap();
        let dup = db.create_device_group(&t, "ok", "").await;
        assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");

        let mut a = new_alert(
            &"t".repeat(limits::TITLE_MAX_CHARS + 1),
            Severity::Low,
            None,
        );
        assert_invalid(db.create_alert(&t, &a).await, "title");
        a.title = "fine".into();
        a.tactics = (0..=limits::TAGS_MAX).map(|i| format!("t{i}")).collect();
        assert_invalid(db.create_alert(&t, &a).await, "tactics");
        a.tactics = vec![];
        a.first_event_time = a.last_event_time + Duration::seconds(1);
        assert_invalid(db.create_alert(&t, &a).await, "first_event_time");
        a.first_event_time = a.last_event_time;
        a.evidence = vec![json!("x".repeat(limits::JSON_MAX_BYTES))];
        assert_invalid(db.create_alert(&t, &a).await, "evidence");
        a.evidence = vec![];
        a.device_id = Some("dev_missing".into());
        assert!(matches!(
            db.create_alert(&t, &a).await,
            Err(Error::NotFound("device"))
        ));
        a.device_id = None;
        let alert = db.create_alert(&t, &a).await.unwrap();

        let long = "c".repeat(limits::COMMENT_MAX_CHARS + 1);
        assert_invalid(
            db.add_comment(&t, CommentTarget::Alert, &alert.id, "ann", &long)
                .await,
            "text",
        );
        assert_invalid(
            db.add_comment(&t, CommentTarget::Alert, &alert.id, "ann", " ")
                .await,
            "text",
        );
        let max = "c".repeat(limits::COMMENT_MAX_CHARS);
        db.add_comment(&t, CommentTarget::Alert, &alert.id, "ann", &max)
            .await
            .unwrap();
        assert!(matches!(
            db.add_comment(&t, CommentTarget::Incident, &alert.id, "ann", "x")
                .await,
            Err(Error::NotFound("incident"))
        ));

        let quoted = NewIncident {
            id: None,
            title: "i".into(),
            tags: vec!["has\"quote".into()],
        };
        assert_invalid(db.create_incident(&t, &quoted).await, "tags");
        let too_many = NewIncident {
            id: None,
            title: "i".into(),
            tags: (0..=limits::TAGS_MAX).map(|i| i.to_string()).collect(),
        };
        assert_invalid(db.create_incident(&t, &too_many).await, "tags");
        let dups = NewIncident {
            id: None,
            title: "i".into(),
            tags: vec!["x".into(), " x ".into(), "y".into()],
        };
        assert_eq!(
            db.create_incident(&t, &dups).await.unwrap().tags,
            vec!["x".to_owned(), "y".to_owned()]
        );

        let err = db
            .create_device_group(&t, "", "")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("name"), "{err}");
    }

    pub(super) async fn audit_log(db: &StateDb) {
        let t = tenant(db, "a").await;
        let before = Utc::now() - Duration::seconds(1);
        let e = db
            .append_audit(
                &t,
                &NewAuditEntry {
                    actor: "ann".into(),
                    action: "user.login".into(),
                    target_kind: "user".into(),
                    target_id: "usr_1".into(),
                    details: json!({"method": "password"}),
                    remote_addr: Some("192.0.2.7".into()),
                },
            )
            .await
            .unwrap();
        db.append_audit(
            &t,
            &NewAuditEntry {
                actor: "bob".into(),
                action: "alert.update".into(),
                target_kind: "alert".into(),
                target_id: "alr_1".into(),
                details: json!(null),
                remote_addr: None,
            },
        )
        .await
        .unwrap();
        let page = PageRequest::default();
        let all = db
            .list_audit(&t, &AuditFilter::default(), &page)
            .await
            .unwrap();
        assert_eq!(all.items.len(), 2);
        assert_eq!(all.items[1], e);
        let by_actor = AuditFilter {
            actor: Some("ann".into()),
            ..Default::default()
        };
        assert_eq!(
            db.list_audit(&t, &by_actor, &page).await.unwrap().items,
            vec![e.clone()]
        );
        let by_target = AuditFilter {
            target_kind: Some("alert".into()),
            target_id: Some("alr_1".into()),
            action: Some("alert.update".into()),
            ..Default::default()
        };
        assert_eq!(
            db.list_audit(&t, &by_target, &page)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let in_range = AuditFilter {
            from: Some(before),
            to: Some(Utc::now() + Duration::seconds(1)),
            ..Default::default()
        };
        assert_eq!(
            db.list_audit(&t, &in_range, &page)
                .await
                .unwrap()
                .items
                .len(),
            2
        );
        let too_late = AuditFilter {
            from: Some(Utc::now() + Duration::seconds(1)),
            ..Default::default()
        };
        assert!(
            db.list_audit(&t, &too_late, &page)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let anonymous = NewAuditEntry {
            actor: " ".into(),
            action: "a".into(),
            target_kind: "k".into(),
            target_id: "i".into(),
            details: json!({}),
            remote_addr: None,
        };
        assert_invalid(db.append_audit(&t, &anonymous).await, "actor");
    }

    pub(super) async fn devices(db: &StateDb) {
        let t = tenant(db, "a").await;
        let g = db.create_device_group(&t, "servers", "prod").await.unwrap();
        // Seen in logs first, then enrolled: same device, adopted.
        let seen = device(db, &t, "WEB-01", None).await;
        assert_eq!(
            (seen.hostname.as_str(), seen.health_status),
            ("web-01", HealthStatus::NoSensorData)
        );
        let fp = "AB".repeat(32);
        let enrolled = db
            .register_device(
                &t,
                &NewDevice {
                    hostname: "web-01".into(),
                    platform: "linux".into(),
                    os_version: "Debian 12".into(),
                    agent_version: "0.1.0".into(),
                    group_id: Some(g.id.clone()),
                    tags: vec!["prod".into(), "web".into()],
                    cert_fingerprint: fp.clone(),
                },
            )
            .await
            .unwrap();
        assert_eq!(enrolled.id, seen.id);
        assert_eq!(enrolled.first_seen, seen.first_seen);
        assert_eq!(enrolled.health_status, HealthStatus::Active);
        assert_eq!(
            enrolled.cert_fingerprint.as_deref(),
            Some("ab".repeat(32).as_str())
        );
        let by_cert = db
            .device_by_cert_fingerprint(&fp)
            .await
            .unwrap()
            .expect("cert lookup");
        assert_eq!(
            (by_cert.id.as_str(), by_cert.tenant_id.as_str()),
            (seen.id.as_str(), t.as_str())
        );
        assert!(
            db.device_by_cert_fingerprint(&"cd".repeat(32))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            db.device_by_cert_fingerprint("nonsense")
                .await
                .unwrap()
                .is_none()
        );
        assert_invalid(
            db.register_device(&t, &agent_device("x", "12".into()))
                .await,
            "cert_fingerprint",
        );
        // A second host cannot claim the same certificate.
        let stolen = db
            .register_device(&t, &agent_device("db-01", fp.clone()))
            .await;
        assert!(matches!(stolen, Err(Error::Conflict(_))), "{stolen:?}");

        let hb = db
            .record_heartbeat(
                &t,
                &seen.id,
                &DeviceHeartbeat {
                    agent_version: "0.1.1".into(),
                    health_status: HealthStatus::Misconfigured,
                    health: json!({"sensor_mode": "proc_connector"}),
                    events_dropped: 12,
                    drops_reported: 2,
                    seen_at: Utc::now() + Duration::seconds(5),
                },
            )
            .await
            .unwrap();
        assert_eq!((hb.events_dropped, hb.drops_reported), (12, 2));
        assert_eq!(hb.health["sensor_mode"], "proc_connector");
        assert!(hb.last_seen > enrolled.last_seen);
        // An older sighting does not move last_seen back.
        let again = db
            .record_device_sighting(
                &t,
                &DeviceSighting {
                    hostname: "web-01".into(),
                    platform: String::new(),
                    os_version: String::new(),
                    seen_at: Utc::now() - Duration::days(1),
                },
            )
            .await
            .unwrap();
        assert_eq!(again.last_seen, hb.last_seen);
        assert_eq!(again.platform, "linux");

        let other = device(db, &t, "laptop-7", None).await;
        let upd = db
            .update_device(
                &t,
                &other.id,
                &DeviceUpdate {
                    tags: Some(vec!["vip".into()]),
                    isolation: Some(IsolationState::Isolated),
                    risk: Some(DeviceRisk::High),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (upd.isolation, upd.risk, upd.tags.clone()),
            (
                IsolationState::Isolated,
                DeviceRisk::High,
                vec!["vip".to_owned()]
            )
        );

        let page = PageRequest::default();
        let (tr, pr) = (t.as_str(), &page);
        let hosts = |f: DeviceFilter| async move {
            db.list_devices(tr, &f, pr)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|d| d.hostname)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hosts(DeviceFilter::default()).await,
            vec!["laptop-7", "web-01"]
        );
        assert_eq!(
            hosts(DeviceFilter {
                group_id: Some(g.id.clone()),
                ..Default::default()
            })
            .await,
            vec!["web-01"]
        );
        assert_eq!(
            hosts(DeviceFilter {
                tag: Some("vip".into()),
                ..Default::default()
            })
            .await,
            vec!["laptop-7"]
        );
        assert!(
            hosts(DeviceFilter {
                tag: Some("vi".into()),
                ..Default::default()
            })
            .await
            .is_empty()
        );
        assert_eq!(
            hosts(DeviceFilter {
                hostname_contains: Some("WEB".into()),
                ..Default::default()
            })
            .await,
            vec!["web-01"]
        );
        assert_eq!(
            hosts(DeviceFilter {
                health_status: Some(HealthStatus::Misconfigured),
                ..Default::default()
            })
            .await,
            vec!["web-01"]
        );
        assert_eq!(
            hosts(DeviceFilter {
                scope: Scope(vec![g.id.clone()]),
                ..Default::default()
            })
            .await,
            vec!["web-01"]
        );
        let recent = DeviceFilter {
            last_seen_from: Some(Utc::now() + Duration::seconds(1)),
            ..Default::default()
        };
        assert_eq!(hosts(recent).await, vec!["web-01"]);

        // Deleting the group ungroups its devices.
        db.delete_device_group(&t, &g.id).await.unwrap();
        assert_eq!(
            db.get_device(&t, &Scope::all(), &seen.id)
                .await
                .unwrap()
                .group_id,
            None
        );
        db.delete_device(&t, &other.id).await.unwrap();
        assert!(matches!(
            db.get_device(&t, &Scope::all(), &other.id).await,
            Err(Error::NotFound("device"))
        ));

        // Agents silent since before a time turn inactive; a fresh heartbeat is not silent.
        let active = db
            .record_heartbeat(
                &t,
                &seen.id,
                &DeviceHeartbeat {
                    agent_version: "0.1.1".into(),
                    health_status: HealthStatus::Active,
                    health: json!({}),
                    events_dropped: 0,
                    drops_reported: 0,
                    seen_at: Utc::now(),
                },
            )
            .await
            .unwrap();
        let status = |id: String| {
            let t = t.clone();
            async move {
                db.get_device(&t, &Scope::all(), &id)
                    .await
                    .unwrap()
                    .health_status
            }
        };
        let before = active.last_seen - Duration::seconds(1);
        db.mark_silent_agents_inactive(before).await.unwrap();
        assert_eq!(status(seen.id.clone()).await, HealthStatus::Active);
        let later = active.last_seen + Duration::seconds(1);
        assert!(db.mark_silent_agents_inactive(later).await.unwrap() >= 1);
        let now_inactive = db.get_device(&t, &Scope::all(), &seen.id).await.unwrap();
        assert_eq!(now_inactive.health_status, HealthStatus::Inactive);
    }

    pub(super) async fn actions(db: &StateDb) {
        let t = tenant(db, "a").await;
        let dev = device(db, &t, "ws1", None).await;
        let new = |kind| NewAction {
            device_id: dev.id.clone(),
            kind,
            params: json!({"pid": 42}),
        };
        let kill = db
            .create_action(&t, &new(ActionKind::KillProcess), "ann")
            .await
            .unwrap();
        let iso = db
            .create_action(&t, &new(ActionKind::Isolate), "ann")
            .await
            .unwrap();
        assert_eq!(kill.status, ActionStatus::Pending);
        let handed = db.hand_over_pending_actions(&t, &dev.id).await.unwrap();
        assert_eq!(
            handed.iter().map(|a| (&a.id, a.status)).collect::<Vec<_>>(),
            vec![
                (&kill.id, ActionStatus::Sent),
                (&iso.id, ActionStatus::Sent)
            ]
        );
        assert!(
            db.hand_over_pending_actions(&t, &dev.id)
                .await
                .unwrap()
                .is_empty(),
            "handed over once"
        );
        assert!(matches!(
            db.set_action_status(&t, &kill.id, ActionStatus::Sent, None)
                .await,
            Err(Error::Conflict(_))
        ));
        let done = db
            .set_action_status(
                &t,
                &kill.id,
                ActionStatus::Succeeded,
                Some(&json!({"killed": true})),
            )
            .await
            .unwrap();
        assert_eq!(done.result, Some(json!({"killed": true})));
        let late = db
            .set_action_status(&t, &kill.id, ActionStatus::Failed, None)
            .await;
        assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
        assert_invalid(
            db.set_action_status(&t, &iso.id, ActionStatus::Pending, None)
                .await,
            "status",
        );
        db.set_action_status(&t, &iso.id, ActionStatus::Cancelled, None)
            .await
            .unwrap();
        assert!(matches!(
            db.set_action_status(&t, "act_missing", ActionStatus::Sent, None)
                .await,
            Err(Error::NotFound(_))
        ));

        let page = PageRequest::default();
        let f = ActionFilter {
            status: Some(ActionStatus::Succeeded),
            ..Default::default()
        };
        assert_eq!(
            db.list_actions(&t, &f, &page).await.unwrap().items,
            vec![done]
        );
        let f = ActionFilter {
            device_id: Some(dev.id.clone()),
            kind: Some(ActionKind::Isolate),
            ..Default::default()
        };
        assert_eq!(db.list_actions(&t, &f, &page).await.unwrap().items.len(), 1);
        assert!(matches!(
            db.create_action(
                &t,
                &NewAction {
                    device_id: "dev_x".into(),
                    kind: ActionKind::RunCommand,
                    params: json!({})
                },
                "ann"
            )
            .await,
            Err(Error::NotFound("device"))
        ));
    }

    /// Heartbeats and long-polls racing for the same device's actions: each action is handed
    /// over to exactly one of them.
    pub(super) async fn actions_are_handed_over_once(db: &StateDb) {
        let t = tenant(db, "a").await;
        let dev = device(db, &t, "ws1", None).await;
        let other = device(db, &t, "ws2", None).await;
        let mut created = HashSet::new();
        for i in 0..40 {
            let target = if i % 4 == 0 { &other.id } else { &dev.id };
            let new = NewAction {
                device_id: target.clone(),
                kind: ActionKind::KillProcess,
                params: json!({"pid": i}),
            };
            let action = db.create_action(&t, &new, "ann").await.unwrap();
            if target == &dev.id {
                created.insert(action.id);
            }
        }
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let (db, t, dev) = (db.clone(), t.clone(), dev.id.clone());
                tokio::spawn(async move { db.hand_over_pending_actions(&t, &dev).await })
            })
            .collect();
        let mut handed = Vec::new();
        for racer in racers {
            handed.extend(racer.await.unwrap().unwrap());
        }
        assert_eq!(handed.len(), created.len(), "each action handed over once");
        assert_eq!(
            handed.iter().map(|a| a.id.clone()).collect::<HashSet<_>>(),
            created
        );
        assert!(handed.iter().all(|a| a.status == ActionStatus::Sent));
        // The other device's actions were not touched.
        assert_eq!(
            db.hand_over_pending_actions(&t, &other.id)
                .await
                .unwrap()
                .len(),
            10
        );
    }

    /// A collect_package action records its package; retention finds it by age and forgets it.
    pub(super) async fn action_packages(db: &StateDb) {
        let t = tenant(db, "a").await;
        let dev = device(db, &t, "ws1", None).await;
        let other = device(db, &t, "ws2", None).await;
        let new = |kind| NewAction {
            device_id: dev.id.clone(),
            kind,
            params: json!({}),
        };
        let collect = db
            .create_action(&t, &new(ActionKind::CollectPackage), "ann")
            .await
            .unwrap();
        let kill = db
            .create_action(&t, &new(ActionKind::KillProcess), "ann")
            .await
            .unwrap();
        assert_eq!(collect.package, None);
        let sha = "AB".repeat(32);
        let before = Utc::now() - Duration::seconds(1);
        let stored = db
            .attach_package(&t, &dev.id, &collect.id, 1234, &sha)
            .await
            .unwrap();
        let package = stored.package.clone().expect("package");
        assert_eq!((package.bytes, package.sha256), (1234, "ab".repeat(32)));
        assert_eq!(
            db.get_action(&t, &Scope::all(), &collect.id).await.unwrap(),
            stored
        );
        // Only the device's own collect_package action takes one.
        for (device, id) in [(&dev.id, &kill.id), (&other.id, &collect.id)] {
            assert!(matches!(
                db.attach_package(&t, device, id, 1, &sha).await,
                Err(Error::NotFound("action"))
            ));
        }
        assert_invalid(
            db.attach_package(&t, &dev.id, &collect.id, 1, "xyz").await,
            "sha256",
        );
        assert!(
            db.actions_with_packages_before(before)
                .await
                .unwrap()
                .is_empty()
        );
        let expired = db
            .actions_with_packages_before(Utc::now() + Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(expired, vec![stored]);
        db.forget_package(&t, &collect.id).await.unwrap();
        assert_eq!(
            db.get_action(&t, &Scope::all(), &collect.id)
                .await
                .unwrap()
                .package,
            None
        );
        assert!(matches!(
            db.forget_package(&t, "act_missing").await,
            Err(Error::NotFound("action"))
        ));
    }

    pub(super) fn sigma_rule(title: &str, sigma_id: Option<&str>) -> NewRule {
        NewRule {
            kind: RuleKind::Sigma,
            sigma_id: sigma_id.map(str::to_owned),
            title: title.into(),
            source:
                "title: x\ndetection:\n  sel:\n    Image|endswith: '\\\\x.exe'\n  condition: sel\n"
                    .into(),
            enabled: true,
            severity: Severity::Medium,
            tags: vec!["attack.execution".into()],
            schedule_secs: None,
            alert_template: None,
            origin: RuleOrigin::Builtin {
                path: "rules/windows/x.yml".into(),
            },
        }
    }

    /// The telemetry high-water mark starts empty, only moves forward, stays within its tenant
    /// and is cleared when the agent enrolls again.
    pub(super) async fn telemetry_high_water(db: &StateDb) {
        let t = tenant(db, "a").await;
        let other = tenant(db, "b").await;
        let d = device(db, &t, "web-01", None).await;
        assert_eq!(db.telemetry_high_water(&t, &d.id).await.unwrap(), None);
        db.advance_telemetry_high_water(&t, &d.id, 100)
            .await
            .unwrap();
        assert_eq!(db.telemetry_high_water(&t, &d.id).await.unwrap(), Some(100));
        // A late request with lower numbers does not move it back.
        db.advance_telemetry_high_water(&t, &d.id, 40)
            .await
            .unwrap();
        assert_eq!(db.telemetry_high_water(&t, &d.id).await.unwrap(), Some(100));
        let big = i64::MAX - 1;
        db.advance_telemetry_high_water(&t, &d.id, big)
            .await
            .unwrap();
        assert_eq!(db.telemetry_high_water(&t, &d.id).await.unwrap(), Some(big));
        assert_invalid(db.advance_telemetry_high_water(&t, &d.id, -1).await, "seq");
        // Another tenant's device, or none, is not found.
        for (tenant, id) in [(&other, d.id.as_str()), (&t, "dev_missing")] {
            assert!(matches!(
                db.telemetry_high_water(tenant, id).await,
                Err(Error::NotFound("device"))
            ));
            assert!(matches!(
                db.advance_telemetry_high_water(tenant, id, 1).await,
                Err(Error::NotFound("device"))
            ));
        }
        // Enrolling anew starts the numbering anew.
        let enrolled = db
            .register_device(&t, &agent_device("web-01", "cd".repeat(32)))
            .await
            .unwrap();
        assert_eq!(enrolled.id, d.id);
        assert_eq!(db.telemetry_high_water(&t, &d.id).await.unwrap(), None);
    }

    pub(super) async fn builtin_rules_follow_the_rule_folders(db: &StateDb) {
        let t = tenant(db, "a").await;
        let file = |path: &str, id: Option<&str>, text: &str| {
            let mut r = sigma_rule(path, id);
            r.origin = RuleOrigin::Builtin { path: path.into() };
            r.source = text.into();
            r
        };
        let id_a = "11111111-1111-4111-8111-111111111111";
        let first = vec![
            file("a.yml", Some(id_a), "title: a"),
            file("b.yml", None, "title: b"),
            file("c.yml", None, "title: c"),
        ];
        let report = db.sync_builtin_rules(&t, &first).await.unwrap();
        assert_eq!((report.added, report.updated, report.removed), (3, 0, 0));
        let all = db
            .list_rules(&t, &RuleFilter::default(), &PageRequest::default())
            .await
            .unwrap()
            .items;
        let b = all.iter().find(|r| r.title == "b.yml").unwrap();
        db.set_rule_enabled(&t, &b.id, false).await.unwrap();

        // b changes (and stays disabled), c goes, d comes, e claims a's id and is left out.
        let second = vec![
            file("e.yml", Some(id_a), "title: e"),
            file("a.yml", Some(id_a), "title: a"),
            file("b.yml", None, "title: b2"),
            file("d.yml", None, "title: d"),
        ];
        let report = db.sync_builtin_rules(&t, &second).await.unwrap();
        assert_eq!(
            (
                report.added,
                report.updated,
                report.removed,
                report.unchanged
            ),
            (1, 1, 1, 1),
            "{report:?}"
        );
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].0, "e.yml");
        assert!(report.skipped[0].1.contains("taken"), "{report:?}");
        let all = db
            .list_rules(&t, &RuleFilter::default(), &PageRequest::default())
            .await
            .unwrap()
            .items;
        let titles: Vec<&str> = all.iter().map(|r| r.title.as_str()).collect();
        assert_eq!(titles, ["a.yml", "b.yml", "d.yml"]);
        let b2 = all.iter().find(|r| r.title == "b.yml").unwrap();
        assert_eq!(
            (b2.id.as_str(), b2.source.as_str(), b2.enabled),
            (b.id.as_str(), "title: b2", false)
        );
        // Another tenant's rules are its own.
        let other = tenant(db, "b").await;
        assert!(
            db.list_rules(&other, &RuleFilter::default(), &PageRequest::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        // Uploaded rules are never touched by the sync.
        let mut up = sigma_rule("uploaded", None);
        up.origin = RuleOrigin::Uploaded;
        db.create_rule(&t, &up, "ann").await.unwrap();
        let report = db.sync_builtin_rules(&t, &[]).await.unwrap();
        assert_eq!(report.removed, 3);
        let left = db
            .list_rules(&t, &RuleFilter::default(), &PageRequest::default())
            .await
            .unwrap()
            .items;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].origin, RuleOrigin::Uploaded);
    }

    pub(super) async fn rules(db: &StateDb) {
        let t = tenant(db, "a").await;
        let id = "5B3EE1BD-F36E-4A05-A6AB-8B8EF7E5C4A1";
        let r = db
            .create_rule(&t, &sigma_rule("b rule", Some(id)), "system")
            .await
            .unwrap();
        assert_eq!(r.sigma_id.as_deref(), Some(id.to_lowercase().as_str()));
        let dup = db
            .create_rule(&t, &sigma_rule("other", Some(&id.to_lowercase())), "system")
            .await;
        assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
        db.create_rule(&t, &sigma_rule("a rule", None), "system")
            .await
            .unwrap();
        db.create_rule(&t, &sigma_rule("c rule", None), "system")
            .await
            .unwrap();
        let mut kql = sigma_rule("kql", None);
        kql.kind = RuleKind::Kql;
        kql.origin = RuleOrigin::Uploaded;
        assert_invalid(db.create_rule(&t, &kql, "ann").await, "schedule_secs");
        kql.schedule_secs = Some(3600);
        assert_invalid(db.create_rule(&t, &kql, "ann").await, "alert_template");
        kql.alert_template = Some(json!({"title": "{DeviceName}", "severity": "high"}));
        let k = db.create_rule(&t, &kql, "ann").await.unwrap();
        assert_eq!(db.get_rule(&t, &k.id).await.unwrap(), k);

        let page = PageRequest::default();
        let (tr, pr) = (t.as_str(), &page);
        let titles = |f: RuleFilter| async move {
            db.list_rules(tr, &f, pr)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|r| r.title)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            titles(RuleFilter::default()).await,
            vec!["a rule", "b rule", "c rule", "kql"]
        );
        assert_eq!(
            titles(RuleFilter {
                kind: Some(RuleKind::Kql),
                ..Default::default()
            })
            .await,
            vec!["kql"]
        );
        assert_eq!(
            titles(RuleFilter {
                builtin: Some(false),
                ..Default::default()
            })
            .await,
            vec!["kql"]
        );
        assert_eq!(
            titles(RuleFilter {
                builtin: Some(true),
                title_contains: Some("B RU".into()),
                ..Default::default()
            })
            .await,
            vec!["b rule"]
        );
        let off = db.set_rule_enabled(&t, &r.id, false).await.unwrap();
        assert!(!off.enabled && off.updated_at >= r.updated_at);
        assert_eq!(
            titles(RuleFilter {
                enabled: Some(false),
                ..Default::default()
            })
            .await,
            vec!["b rule"]
        );

        // Alerts keep the rule's name after it is deleted.
        let mut a = new_alert("hit", Severity::Medium, None);
        a.rule = Some(RuleRef {
            id: Some(r.id.clone()),
            title: r.title.clone(),
            kind: r.kind,
        });
        let alert = db.create_alert(&t, &a).await.unwrap();
        let by_rule = AlertFilter {
            rule_id: Some(r.id.clone()),
            ..Default::default()
        };
        assert_eq!(
            db.list_alerts(&t, &by_rule, &page)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        db.delete_rule(&t, &r.id).await.unwrap();
        let kept = db.get_alert(&t, &Scope::all(), &alert.id).await.unwrap();
        assert_eq!(
            kept.rule,
            Some(RuleRef {
                id: None,
                title: "b rule".into(),
                kind: RuleKind::Sigma
            })
        );
    }

    pub(super) async fn hunting_queries_are_private_and_bounded(db: &StateDb) {
        let t = tenant(db, "a").await;
        let ann = user(db, &t, "ann", Role::Readonly).await;
        let bob = user(db, &t, "bob", Role::Analyst).await;
        let page = PageRequest::first(QUERY_HISTORY_MAX as u32 + 10);
        let history = |u: &str| {
            let (t, u, page) = (t.clone(), u.to_owned(), page.clone());
            async move {
                db.query_history(&t, &u, &page)
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .map(|e| e.query)
                    .collect::<Vec<_>>()
            }
        };

        // Newest first; the same text again moves to the top instead of repeating.
        for q in ["A | take 1", "B | take 2", "A | take 1"] {
            db.record_query(&t, &ann.id, q).await.unwrap();
        }
        assert_eq!(history(&ann.id).await, ["A | take 1", "B | take 2"]);
        assert!(
            history(&bob.id).await.is_empty(),
            "another user's history is private"
        );

        // Bounded: only the newest entries stay.
        for i in 0..QUERY_HISTORY_MAX + 5 {
            db.record_query(&t, &bob.id, &format!("T | take {i}"))
                .await
                .unwrap();
        }
        let kept = history(&bob.id).await;
        assert_eq!(kept.len(), QUERY_HISTORY_MAX);
        assert_eq!(kept[0], format!("T | take {}", QUERY_HISTORY_MAX + 4));
        assert_eq!(kept[QUERY_HISTORY_MAX - 1], "T | take 5");
        assert_eq!(
            history(&ann.id).await.len(),
            2,
            "pruning one user spares the others"
        );

        // Limits name the field; another tenant's or a missing user has no history.
        assert_invalid(db.record_query(&t, &ann.id, " ").await, "query");
        assert_invalid(
            db.record_query(&t, &ann.id, &"q".repeat(QUERY_MAX_CHARS + 1))
                .await,
            "query",
        );
        let other = tenant(db, "b").await;
        assert!(matches!(
            db.record_query(&other, &ann.id, "T").await,
            Err(Error::NotFound("user"))
        ));

        // Saved queries: by name, one per name (saving again replaces), private, deletable.
        let first = db
            .save_query(&t, &ann.id, "Logons", "L | take 1")
            .await
            .unwrap();
        db.save_query(&t, &ann.id, "Admins", "A").await.unwrap();
        let again = db
            .save_query(&t, &ann.id, "Logons", "L | take 2")
            .await
            .unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.query, "L | take 2");
        assert_eq!(again.created_at, first.created_at);
        let saved = db
            .list_saved_queries(&t, &ann.id, &PageRequest::default())
            .await
            .unwrap()
            .items;
        let names: Vec<&str> = saved.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Admins", "Logons"]);
        assert!(
            db.list_saved_queries(&t, &bob.id, &PageRequest::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(matches!(
            db.delete_saved_query(&t, &bob.id, &first.id).await,
            Err(Error::NotFound("saved query"))
        ));
        db.delete_saved_query(&t, &ann.id, &first.id).await.unwrap();
        assert!(matches!(
            db.delete_saved_query(&t, &ann.id, &first.id).await,
            Err(Error::NotFound("saved query"))
        ));
        assert_invalid(db.save_query(&t, &ann.id, "", "Q").await, "name");
        assert_invalid(db.save_query(&t, &ann.id, "n", "").await, "query");

        // Bounded too: past the limit only an existing name can be saved again.
        for i in 0..SAVED_QUERIES_MAX {
            db.save_query(&t, &bob.id, &format!("q{i:03}"), "T")
                .await
                .unwrap();
        }
        let full = db.save_query(&t, &bob.id, "one more", "T").await;
        assert!(matches!(full, Err(Error::Conflict(_))), "{full:?}");
        db.save_query(&t, &bob.id, "q000", "T | take 1")
            .await
            .unwrap();

        // A user's queries go with the user.
        db.delete_user(&t, &ann.id).await.unwrap();
        assert!(history(&ann.id).await.is_empty());
    }
}
