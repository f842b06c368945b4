//! Where the planner finds tables: a name → [`TableProvider`] lookup.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use rampart_schema::Table;

/// The tables a query can read. The store implements it for a tenant; tests use [`MemCatalog`].
pub trait Catalog: Send + Sync {
    /// The table called `name` (case-sensitive, as in Kusto).
    fn table(&self, name: &str) -> Option<Arc<dyn TableProvider>>;
    /// Every table name, for wildcards in `union` and for suggestions.
    fn table_names(&self) -> Vec<String>;
}

/// Tables held in memory.
#[derive(Default, Clone)]
pub struct MemCatalog {
    tables: BTreeMap<String, Arc<dyn TableProvider>>,
}

impl MemCatalog {
    pub fn new() -> MemCatalog {
        MemCatalog::default()
    }

    /// All 29 hunting tables, empty.
    pub fn hunting_tables() -> MemCatalog {
        let mut c = MemCatalog::new();
        for t in Table::ALL {
            c.insert_batches(t.name(), vec![RecordBatch::new_empty(t.arrow_schema())]);
        }
        c
    }

    /// Adds (or replaces) a table holding `batches`, which must share one schema.
    ///
    /// # Panics
    /// When `batches` is empty or the schemas differ (test fixtures only).
    pub fn insert_batches(&mut self, name: &str, batches: Vec<RecordBatch>) {
        let schema = batches
            .first()
            .map(RecordBatch::schema)
            .expect("at least one batch");
        let table = MemTable::try_new(schema, vec![batches]).expect("batches share a schema");
        self.tables.insert(name.to_string(), Arc::new(table));
    }

    /// Adds (or replaces) a table.
    pub fn insert(&mut self, name: &str, table: Arc<dyn TableProvider>) {
        self.tables.insert(name.to_string(), table);
    }
}

impl Catalog for MemCatalog {
    fn table(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        self.tables.get(name).cloned()
    }

    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }
}
