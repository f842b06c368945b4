//! Investigation packages: the `.tar.gz` an agent collects for a `collect_package` action. The
//! upload is streamed to `DATA_DIR/packages/<tenant>/<action id>.tar.gz` (SHA-256 computed on
//! the way, never held in memory), analysts download it, and retention removes it with the
//! events of the same age.

use std::path::{Path, PathBuf};

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use futures::StreamExt;
use rampart_state::{Action, ActionKind, NewAuditEntry, Principal, Scope, StateDb, Time};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::audit;
use super::spool::Spool;
use crate::app::App;
use crate::auth::AgentIdentity;
use crate::problem::{ApiResult, Problem};

/// Every gzip stream starts with these two bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const GZIP: &str = "application/gzip";

/// Where the package of an action is kept. Tenant and action ids are the database's own
/// (generated, path-safe), never what a client sent.
pub fn package_path(data_dir: &Path, tenant: &str, action_id: &str) -> PathBuf {
    data_dir
        .join("packages")
        .join(tenant)
        .join(format!("{action_id}.tar.gz"))
}

/// `POST /api/v1/agents/actions/{id}/package`: the calling device's package for its open
/// `collect_package` action (a repeated upload replaces the earlier one).
pub async fn upload(
    State(app): State<App>,
    Extension(agent): Extension<AgentIdentity>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let action = match checked(&app, &agent, &id, &headers).await {
        Ok(action) => action,
        Err(problem) => return refuse_after_draining(body, problem).await,
    };
    let spool = Spool::create(&app, "package.tar.gz").await?;
    let (mut hasher, mut head) = (Sha256::new(), Vec::<u8>::with_capacity(GZIP_MAGIC.len()));
    let limit = app.config.limits.max_package_bytes;
    let bytes = spool
        .fill(body, limit, "limits.max_package_bytes", |chunk| {
            hasher.update(chunk);
            let missing = GZIP_MAGIC.len() - head.len();
            head.extend(chunk.iter().take(missing));
        })
        .await?;
    if head != GZIP_MAGIC {
        return Err(Problem::bad_request(
            "the body is not a gzip archive: send the .tar.gz file's bytes",
        ));
    }
    let sha256 = hex::encode(hasher.finalize());
    let path = package_path(&app.config.data_dir, &agent.tenant, &action.id);
    {
        let _turn = app.package_commits.lock().await;
        spool.keep(&path).await?;
        let recorded = app
            .db
            .attach_package(&agent.tenant, &agent.device_id, &action.id, bytes, &sha256)
            .await;
        if let Err(error) = recorded {
            // A file no record names (or under another upload's checksum) must not be served.
            let _ = tokio::fs::remove_file(&path).await;
            return Err(error.into());
        }
    }
    let entry = NewAuditEntry {
        actor: format!("agent:{}", agent.device_id),
        action: "action.package_upload".into(),
        target_kind: "action".into(),
        target_id: action.id.clone(),
        details: json!({"hostname": agent.hostname, "bytes": bytes, "sha256": sha256}),
        remote_addr: None,
    };
    app.db.append_audit(&agent.tenant, &entry).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"bytes": bytes, "sha256": sha256})),
    )
        .into_response())
}

/// `GET /api/v1/actions/{id}/package`: the package, streamed from disk, as
/// `<hostname>-<action id>.tar.gz`.
/// The action `id` of the agent, if a package may be uploaded to it with these headers.
async fn checked(
    app: &App,
    agent: &AgentIdentity,
    id: &str,
    headers: &HeaderMap,
) -> Result<Action, Problem> {
    let action = super::agents::own_action(app, agent, id).await?;
    if action.kind != ActionKind::CollectPackage {
        return Err(Problem::conflict(format!(
            "action {id} is {}: only collect_package actions take a package",
            action.kind
        )));
    }
    if action.status.is_terminal() {
        return Err(Problem::conflict(format!(
            "action {id} is {}: a package is taken only while its action is open",
            action.status
        )));
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if !matches!(media_type.as_deref(), Some(GZIP | "application/x-gzip")) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("send the .tar.gz archive with 'Content-Type: {GZIP}'"),
        ));
    }
    Ok(action)
}

/// Most bytes of a refused upload read (and discarded) before the answer.
const DRAIN_BYTES: usize = 1 << 20;

/// Answers `problem` after reading up to [`DRAIN_BYTES`] of the body: a client that sends the
/// whole body before it reads the answer (most do) then gets the answer, not a connection
/// closed under its writes.
async fn refuse_after_draining(body: Body, problem: Problem) -> ApiResult {
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while read < DRAIN_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
    Err(problem)
}

pub async fn download(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
    let action = app.db.get_action(&p.tenant_id, &p.scope, &id).await?;
    let no_package = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "action {id} has no package: its agent has not uploaded one, or retention removed it"
            ),
        )
    };
    let package = action.package.as_ref().ok_or_else(no_package)?;
    let device = app
        .db
        .get_device(&p.tenant_id, &Scope::all(), &action.device_id)
        .await?;
    let path = package_path(&app.config.data_dir, &p.tenant_id, &action.id);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_package()),
        Err(e) => return Err(Problem::internal(e)),
    };
    let length = file.metadata().await.map_err(Problem::internal)?.len();
    audit(
        &app,
        &p,
        "action.package_download",
        "action",
        &action.id,
        json!({"bytes": length, "sha256": package.sha256}),
    )
    .await?;
    let filename = format!("{}-{}.tar.gz", safe_filename(&device.hostname), action.id);
    Ok((
        [
            (header::CONTENT_TYPE, GZIP.to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}

/// A host name as a file name: letters, digits, `.`, `-` and `_` kept, anything else (quotes,
/// slashes, control characters) replaced.
fn safe_filename(name: &str) -> String {
    let clean: String = name
        .chars()
        .take(100)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    match clean.trim_start_matches('.') {
        "" => "device".into(),
        rest => rest.into(),
    }
}

/// Removes the packages stored before `before` (retention), the file first and then its
/// record: a failure in between leaves a record that the next run removes, never a file that
/// nothing names. Returns how many were removed.
pub async fn remove_expired(db: &StateDb, data_dir: &Path, before: Time) -> anyhow::Result<usize> {
    let expired = db.actions_with_packages_before(before).await?;
    for action in &expired {
        let path = package_path(data_dir, &action.tenant_id, &action.id);
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::anyhow!("cannot remove {}: {e}", path.display()));
            }
            _ => db.forget_package(&action.tenant_id, &action.id).await?,
        }
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_safe_file_names() {
        assert_eq!(safe_filename("web01.example.org"), "web01.example.org");
        assert_eq!(safe_filename("a\"b/c\r\n"), "a_b_c__");
        assert_eq!(safe_filename("../x"), "_x");
        assert_eq!(safe_filename(""), "device");
    }

    /// Retention removes what is older than its cutoff, file and record, and keeps the rest.
    #[tokio::test]
    async fn retention_removes_expired_packages() {
        let dir = std::env::temp_dir().join(format!("rampart-packages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("state.db").display());
        let db = StateDb::connect(&url).await.unwrap();
        let tenant = db.ensure_default_tenant().await.unwrap().id;
        let sighting = rampart_state::DeviceSighting {
            hostname: "web01".into(),
            platform: "Linux".into(),
            os_version: "12".into(),
            seen_at: chrono::Utc::now(),
        };
        let device = db.record_device_sighting(&tenant, &sighting).await.unwrap();
        let new = rampart_state::NewAction {
            device_id: device.id.clone(),
            kind: ActionKind::CollectPackage,
            params: json!({}),
        };
        let action = db.create_action(&tenant, &new, "ann").await.unwrap();
        let path = package_path(&dir, &tenant, &action.id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, GZIP_MAGIC).unwrap();
        db.attach_package(&tenant, &device.id, &action.id, 2, &"0".repeat(64))
            .await
            .unwrap();

        let stored = db
            .get_action(&tenant, &Scope::all(), &action.id)
            .await
            .unwrap();
        let at = stored.package.expect("package").stored_at;
        assert_eq!(remove_expired(&db, &dir, at).await.unwrap(), 0);
        assert!(path.exists());
        let later = at + chrono::Duration::seconds(1);
        assert_eq!(remove_expired(&db, &dir, later).await.unwrap(), 1);
        assert!(!path.exists());
        let action = db
            .get_action(&tenant, &Scope::all(), &action.id)
            .await
            .unwrap();
        assert_eq!(action.package, None);
        assert_eq!(remove_expired(&db, &dir, later).await.unwrap(), 0);
        db.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
