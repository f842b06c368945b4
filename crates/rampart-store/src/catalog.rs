//! The store as the KQL engine's catalog: the hunting tables of one tenant, and nothing of any
//! other tenant (a query cannot name another tenant's data, so it cannot read it).

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use rampart_kql::Catalog;
use rampart_schema::Table;

use crate::{Store, StoreReader};

/// What the catalog reads from: the writing store itself (the server) or a read-only view of a
/// store another process writes (the CLI).
#[derive(Clone)]
enum Source {
    Store(Arc<Store>),
    Reader(Arc<StoreReader>),
}

/// One tenant's tables of a store.
#[derive(Clone)]
pub struct TenantCatalog {
    source: Source,
    tenant: String,
}

impl TenantCatalog {
    /// The tenant's tables in the store this process writes.
    pub fn of_store(store: Arc<Store>, tenant: &str) -> TenantCatalog {
        TenantCatalog {
            source: Source::Store(store),
            tenant: tenant.to_string(),
        }
    }

    /// The tenant's tables in a read-only view.
    pub fn of_reader(reader: Arc<StoreReader>, tenant: &str) -> TenantCatalog {
        TenantCatalog {
            source: Source::Reader(reader),
            tenant: tenant.to_string(),
        }
    }
}

impl Catalog for TenantCatalog {
    fn table(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        let table = Table::from_name(name)?;
        Some(match &self.source {
            Source::Store(store) => store.table_provider(&self.tenant, table),
            Source::Reader(reader) => reader.table_provider(&self.tenant, table),
        })
    }

    fn table_names(&self) -> Vec<String> {
        Table::ALL.iter().map(|t| t.name().to_string()).collect()
    }
}
