//! The crate's error type: what an HTTP layer needs to pick a status code.

/// Errors returned by [`crate::StateDb`] methods.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist in this tenant (or is outside the caller's scope). The payload
    /// names the kind of object, e.g. `"alert"`.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule or a state transition forbids the change (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Input rejected by validation; `field` names the offending input field (HTTP 400).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The database failed (connection, I/O, SQL error).
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not decode (unknown enum text, bad JSON): the database was edited by
    /// hand or by a newer version.
    #[error("stored data does not decode: {0}")]
    Corrupt(String),
    /// Password hashing or the system random source failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Turns a unique-constraint violation into a `Conflict` with a message that names what
    /// collided, instead of the engine-specific constraint text.
    pub(crate) fn unique(what: &'static str) -> impl FnOnce(Error) -> Error {
        move |e| match e {
            Error::Conflict(_) => Error::Conflict(format!("{what} already exists")),
            other => other,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(db.message().to_string())
            }
            _ => Error::Db(e),
        }
    }
}
