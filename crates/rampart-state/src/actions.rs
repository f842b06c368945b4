//! Response actions queued for devices (the action center).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{Cols, FromRow, Order, Page, PageRequest, Scope, Sql, Time, micros, now, str_enum};
use crate::devices::IsolationState;
use crate::validate::{json, limits, line};
use crate::{Error, Result, StateDb, ids};

str_enum! {
    ActionKind {
        Isolate = "isolate",
        Release = "release",
        KillProcess = "kill_process",
        QuarantineFile = "quarantine_file",
        RestoreFile = "restore_file",
        CollectPackage = "collect_package",
        RunCommand = "run_command",
    }
}

str_enum! {
    ActionStatus {
        Pending = "pending",
        Sent = "sent",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl ActionStatus {
    /// The states an action can move to `self` from. Terminal states are final, so a late or
    /// repeated agent report cannot resurrect a cancelled action.
    fn allowed_from(self) -> &'static [ActionStatus] {
        use ActionStatus::*;
        match self {
            Pending => &[],
            Sent => &[Pending],
            Running => &[Pending, Sent],
            Succeeded | Failed | Cancelled => &[Pending, Sent, Running],
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActionStatus::Succeeded | ActionStatus::Failed | ActionStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: String,
    pub tenant_id: String,
    pub device_id: String,
    pub kind: ActionKind,
    pub params: Value,
    pub status: ActionStatus,
    pub requested_by: String,
    pub requested_at: Time,
    pub updated_at: Time,
    pub result: Option<Value>,
    /// The investigation package the agent uploaded (`collect_package` actions).
    #[serde(default)]
    pub package: Option<Package>,
}

/// An investigation package stored for an action; the file is kept by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    pub stored_at: Time,
}

impl FromRow for Action {
    const COLUMNS: &'static str = "id, tenant_id, device_id, kind, params, status, requested_by, requested_at, updated_at, result, package_bytes, package_sha256, package_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        let package = match (
            r.opt_i64("package_bytes")?,
            r.opt_str("package_sha256")?,
            r.opt_time("package_at")?,
        ) {
            (Some(bytes), Some(sha256), Some(stored_at)) => Some(Package {
                bytes: u64::try_from(bytes)
                    .map_err(|_| Error::Corrupt(format!("package_bytes {bytes}")))?,
                sha256,
                stored_at,
            }),
            _ => None,
        };
        Ok(Action {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            device_id: r.str("device_id")?,
            kind: r.parse("kind")?,
            params: r.json("params")?,
            status: r.parse("status")?,
            requested_by: r.str("requested_by")?,
            requested_at: r.time("requested_at")?,
            updated_at: r.time("updated_at")?,
            result: r.opt_json("result")?,
            package,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAction {
    pub device_id: String,
    pub kind: ActionKind,
    #[serde(default)]
    pub params: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionFilter {
    /// Actions on devices in scope.
    #[serde(default)]
    pub scope: Scope,
    pub device_id: Option<String>,
    pub kind: Option<ActionKind>,
    pub status: Option<ActionStatus>,
    /// `true`: only actions not finished yet (pending, sent, running); `false`: only finished ones.
    #[serde(default)]
    pub open: Option<bool>,
    /// Request time range, `[from, to)`.
    pub from: Option<Time>,
    pub to: Option<Time>,
}

impl StateDb {
    /// Queues an action (status `pending`) for a device of this tenant.
    pub async fn create_action(
        &self,
        tenant: &str,
        new: &NewAction,
        requested_by: &str,
    ) -> Result<Action> {
        self.ensure_exists("devices", tenant, &new.device_id, "device")
            .await?;
        let at = now();
        let action = Action {
            id: ids::new_id("act")?,
            tenant_id: tenant.to_owned(),
            device_id: new.device_id.clone(),
            kind: new.kind,
            params: new.params.clone(),
            status: ActionStatus::Pending,
            requested_by: line("requested_by", requested_by, limits::SHORT_MAX_CHARS, true)?,
            requested_at: at,
            updated_at: at,
            result: None,
            package: None,
        };
        sqlx::query(
            "INSERT INTO actions (id, tenant_id, device_id, kind, params, status, requested_by, requested_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(action.id.clone())
        .bind(action.tenant_id.clone())
        .bind(action.device_id.clone())
        .bind(action.kind.as_str())
        .bind(json("params", &action.params, limits::JSON_MAX_BYTES)?)
        .bind(action.status.as_str())
        .bind(action.requested_by.clone())
        .bind(micros(at))
        .execute(&self.pool)
        .await?;
        Ok(action)
    }

    pub async fn get_action(&self, tenant: &str, scope: &Scope, id: &str) -> Result<Action> {
        let mut sql = Self::select::<Action>("actions", tenant);
        sql.and_eq("id", Some(id.to_owned()))
            .and_device_scope(tenant, "device_id", scope);
        self.fetch_one(sql, "action").await
    }

    /// Actions, newest first.
    pub async fn list_actions(
        &self,
        tenant: &str,
        filter: &ActionFilter,
        page: &PageRequest,
    ) -> Result<Page<Action>> {
        let mut sql = Self::select::<Action>("actions", tenant);
        sql.and_device_scope(tenant, "device_id", &filter.scope)
            .and_eq("device_id", filter.device_id.clone())
            .and_eq("kind", filter.kind.map(ActionKind::as_str))
            .and_eq("status", filter.status.map(ActionStatus::as_str))
            .and_range("requested_at", filter.from, filter.to);
        if let Some(open) = filter.open {
            let statuses: Vec<String> = ActionStatus::ALL
                .iter()
                .filter(|s| s.is_terminal() != open)
                .map(|s| s.as_str().to_owned())
                .collect();
            sql.and_in("status", &statuses);
        }
        self.fetch_page(sql, Order::NewestFirst("requested_at"), page)
            .await
    }

    /// Hands the device's pending actions over: moves them to `sent` and returns them, oldest
    /// first (the order to carry them out). One conditional `UPDATE` does both, so when two
    /// calls race (a heartbeat and a long-poll) each action goes to exactly one of them.
    pub async fn hand_over_pending_actions(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<Vec<Action>> {
        let mut sql = Sql::new("UPDATE actions SET status = ");
        sql.bind(ActionStatus::Sent.as_str())
            .push(", updated_at = ")
            .bind(micros(now()))
            .push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND device_id = ")
            .bind(device_id.to_owned())
            .push(" AND status = ")
            .bind(ActionStatus::Pending.as_str())
            .push(&format!(" RETURNING {}", Action::COLUMNS));
        let mut actions: Vec<Action> = self.fetch_all(sql).await?;
        // RETURNING has no order.
        actions.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
        Ok(actions)
    }

    /// Moves an action to `status` (with the agent's result, if any). The transition is checked
    /// in the `UPDATE` itself, so two concurrent reports cannot both win; an illegal transition
    /// (e.g. from a terminal state) is a `Conflict`.
    pub async fn set_action_status(
        &self,
        tenant: &str,
        id: &str,
        status: ActionStatus,
        result: Option<&Value>,
    ) -> Result<Action> {
        let from: Vec<String> = status
            .allowed_from()
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        if from.is_empty() {
            return Err(Error::invalid(
                "status",
                format!("an action cannot move back to {status}"),
            ));
        }
        let mut sql = Sql::new("UPDATE actions SET status = ");
        sql.bind(status.as_str())
            .push(", updated_at = ")
            .bind(micros(now()));
        if let Some(result) = result {
            sql.push(", result = ")
                .bind(json("result", result, limits::JSON_MAX_BYTES)?);
        }
        sql.push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned())
            .and_in("status", &from)
            .push(&format!(" RETURNING {}", Action::COLUMNS));
        if let Some(action) = self.fetch_optional(sql).await? {
            self.follow_isolation(tenant, &action).await?;
            return Ok(action);
        }
        // Nothing changed: say whether the action is missing or in the wrong state.
        let current = self.get_action(tenant, &Scope::all(), id).await?;
        Err(Error::Conflict(format!(
            "action {id} is {} and cannot become {status}",
            current.status
        )))
    }

    /// A succeeded isolate or release action sets its device's isolation state at once (the
    /// agent's next heartbeat confirms it), so the console does not show the old state meanwhile.
    async fn follow_isolation(&self, tenant: &str, action: &Action) -> Result<()> {
        let state = match (action.kind, action.status) {
            (ActionKind::Isolate, ActionStatus::Succeeded) => IsolationState::Isolated,
            (ActionKind::Release, ActionStatus::Succeeded) => IsolationState::NotIsolated,
            _ => return Ok(()),
        };
        let mut sql = Sql::new("UPDATE devices SET isolation = ");
        sql.bind(state.as_str());
        match self
            .execute_on_id(sql, tenant, &action.device_id, "device")
            .await
        {
            // The device was deleted meanwhile: nothing to follow.
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// Records the package stored for an action of `device_id` (replacing an earlier one). Only
    /// a `collect_package` action of that device takes one; any other id is `NotFound`.
    pub async fn attach_package(
        &self,
        tenant: &str,
        device_id: &str,
        id: &str,
        bytes: u64,
        sha256: &str,
    ) -> Result<Action> {
        let bytes = i64::try_from(bytes).map_err(|_| Error::invalid("bytes", "too large"))?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("sha256", "64 hexadecimal digits"));
        }
        let at = micros(now());
        let mut sql = Sql::new("UPDATE actions SET package_bytes = ");
        sql.bind(bytes)
            .push(", package_sha256 = ")
            .bind(sha256.to_ascii_lowercase())
            .push(", package_at = ")
            .bind(at)
            .push(", updated_at = ")
            .bind(at)
            .push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned())
            .push(" AND device_id = ")
            .bind(device_id.to_owned())
            .push(" AND kind = ")
            .bind(ActionKind::CollectPackage.as_str())
            .push(&format!(" RETURNING {}", Action::COLUMNS));
        self.fetch_one(sql, "action").await
    }

    /// Actions of every tenant whose package was stored before `before` (for retention).
    pub async fn actions_with_packages_before(&self, before: Time) -> Result<Vec<Action>> {
        let mut sql = Sql::new(&format!(
            "SELECT {} FROM actions WHERE package_at < ",
            Action::COLUMNS
        ));
        sql.bind(micros(before));
        self.fetch_all(sql).await
    }

    /// Forgets an action's package (its file was removed).
    pub async fn forget_package(&self, tenant: &str, id: &str) -> Result<()> {
        let sql = Sql::new(
            "UPDATE actions SET package_bytes = NULL, package_sha256 = NULL, package_at = NULL",
        );
        self.execute_on_id(sql, tenant, id, "action").await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::devices::tests::scratch;

    #[tokio::test]
    async fn open_and_finished_actions_and_the_isolation_they_leave() {
        let (_dir, db, t, d) = scratch().await;
        let new = |kind| NewAction {
            device_id: d.id.clone(),
            kind,
            params: json!({}),
        };
        let isolate = new(ActionKind::Isolate);
        let isolate = db.create_action(&t, &isolate, "ann").await.unwrap();
        let collect = new(ActionKind::CollectPackage);
        let collect = db.create_action(&t, &collect, "ann").await.unwrap();
        db.set_action_status(&t, &collect.id, ActionStatus::Failed, None)
            .await
            .unwrap();
        let first = PageRequest::first(10);
        for (open, expected) in [(true, &isolate.id), (false, &collect.id)] {
            let filter = ActionFilter {
                open: Some(open),
                ..ActionFilter::default()
            };
            let page = db.list_actions(&t, &filter, &first).await.unwrap();
            let ids: Vec<&str> = page.items.iter().map(|a| a.id.as_str()).collect();
            assert_eq!(ids, [expected.as_str()], "open: {open}");
        }

        let all = Scope::all();
        db.set_action_status(&t, &isolate.id, ActionStatus::Running, None)
            .await
            .unwrap();
        let device = db.get_device(&t, &all, &d.id).await.unwrap();
        assert_eq!(device.isolation, IsolationState::NotIsolated);
        db.set_action_status(&t, &isolate.id, ActionStatus::Succeeded, Some(&json!({})))
            .await
            .unwrap();
        let device = db.get_device(&t, &all, &d.id).await.unwrap();
        assert_eq!(device.isolation, IsolationState::Isolated);
        // A failed release leaves the device isolated; a succeeded one releases it.
        for (status, expected) in [
            (ActionStatus::Failed, IsolationState::Isolated),
            (ActionStatus::Succeeded, IsolationState::NotIsolated),
        ] {
            let release = new(ActionKind::Release);
            let release = db.create_action(&t, &release, "ann").await.unwrap();
            db.set_action_status(&t, &release.id, status, None)
                .await
                .unwrap();
            let device = db.get_device(&t, &all, &d.id).await.unwrap();
            assert_eq!(device.isolation, expected, "release {status}");
        }
    }
}
