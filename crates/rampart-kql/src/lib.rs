//! Rampart's KQL engine: Kusto queries over the hunting tables, planned to DataFusion.
//!
//! - [`rampart_kql_syntax`] turns text into a syntax tree (re-exported as [`syntax`]);
//! - [`planner`] turns the tree into a DataFusion [`LogicalPlan`](datafusion::logical_expr::LogicalPlan):
//!   tables come from a [`Catalog`], scalar meaning from [`rampart_kql_functions`];
//! - [`Engine`] runs plans with a row limit and a timeout; DataFusion's physical plans get
//!   two rules of ours, `join_keys` (joins with a text key join on one numbered key) and
//!   `group_keys` (group-bys on several text keys group on one packed integer).
//!
//! ```
//! # rampart_kql::runtime().unwrap().block_on(async {
//! use rampart_kql::{Engine, MemCatalog, QueryOptions};
//! let engine = Engine::new(MemCatalog::hunting_tables());
//! let result = engine.run("print x = 1 + 2", &QueryOptions::default()).await.unwrap();
//! assert_eq!(result.rows(), 1);
//! # });
//! ```

mod catalog;
mod engine;
mod group_keys;
mod join_keys;
mod key_column;
mod key_table;
mod naming;
pub mod planner;
pub mod results;

pub use catalog::{Catalog, MemCatalog};
pub use engine::{Engine, QUERY_STACK_BYTES, QueryOptions, QueryResult, runtime};
pub use rampart_kql_syntax as syntax;
pub use rampart_kql_syntax::{ErrorKind, KqlError};
