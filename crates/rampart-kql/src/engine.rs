//! Running queries: parse, plan, optimise, execute with a row limit and a timeout.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use rampart_kql_syntax::KqlError;

use crate::catalog::Catalog;
use crate::group_keys::PackGroupKeys;
use crate::join_keys::PackJoinKeys;
use crate::planner::{self, Plan, clean_message};

/// Stack of the threads that parse, plan and run queries. The parser bounds nesting and tree
/// height, but a tree at those bounds (a 500-term `or` chain) still recurses deeply in
/// DataFusion's optimiser, past the 2 MiB a thread gets by default.
pub const QUERY_STACK_BYTES: usize = 16 << 20;

/// A runtime fit for running queries: multi-threaded, with [`QUERY_STACK_BYTES`] stacks.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(QUERY_STACK_BYTES)
        .enable_all()
        .build()
}

/// Limits of one query.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Most rows returned; more are cut and [`QueryResult::truncated`] says so.
    pub limit: usize,
    /// Past this, the query is cancelled.
    pub timeout: Duration,
}

impl Default for QueryOptions {
    fn default() -> QueryOptions {
        QueryOptions {
            limit: 10_000,
            timeout: Duration::from_secs(600),
        }
    }
}

/// What a query returned.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows existed than the limit allowed.
    pub truncated: bool,
    /// The chart a trailing `render` asked for.
    pub chart: Option<String>,
}

impl QueryResult {
    /// Rows returned.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Plans and runs KQL over a catalog. Run it on a [`runtime`] (deep queries need its stacks).
#[derive(Clone)]
pub struct Engine {
    catalog: Arc<dyn Catalog>,
    ctx: SessionContext,
}

impl Engine {
    pub fn new(catalog: impl Catalog + 'static) -> Engine {
        Engine::with_catalog(Arc::new(catalog))
    }

    pub fn with_catalog(catalog: Arc<dyn Catalog>) -> Engine {
        let config = SessionConfig::new()
            .with_information_schema(false)
            // Kusto compares names case-sensitively; so must the engine.
            .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
            // The store's row groups are clustered by file and device, not sorted by time, so
            // their pages' time ranges span the row group's and prune next to nothing; reading
            // and parsing every column's page index cost ~10 % of a filter + count over 10 M
            // rows (73–84 against 69–77 ms without; a 5-minute window 12–19 against 9–15).
            .set_bool("datafusion.execution.parquet.enable_page_index", false);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(PackJoinKeys))
            .with_physical_optimizer_rule(Arc::new(PackGroupKeys))
            .build();
        Engine {
            catalog,
            ctx: SessionContext::new_with_state(state),
        }
    }

    /// Parses and plans a query. Operators whose columns depend on the data (`bag_unpack`)
    /// run a small query of their own while planning.
    pub async fn plan(&self, source: &str) -> Result<Plan, KqlError> {
        let query = rampart_kql_syntax::parse(source)?;
        let this = self.clone();
        let handle = tokio::runtime::Handle::current();
        // Planning may run sub-queries and wait for them: it runs off the async workers.
        tokio::task::spawn_blocking(move || {
            let runner = |plan: LogicalPlan| -> Result<Vec<RecordBatch>, KqlError> {
                handle
                    .block_on(async {
                        let df = this.ctx.execute_logical_plan(plan).await?;
                        df.collect().await
                    })
                    .map_err(|e| KqlError::execution(clean_message(&e)))
            };
            planner::plan_query(&query, this.catalog.as_ref(), Some(&runner))
        })
        .await
        .map_err(|e| KqlError::execution(format!("planning stopped: {e}")))?
    }

    /// Parses and plans a query without touching the data (data-dependent operators are
    /// refused).
    pub fn plan_offline(&self, source: &str) -> Result<Plan, KqlError> {
        let query = rampart_kql_syntax::parse(source)?;
        planner::plan_query(&query, self.catalog.as_ref(), None)
    }

    /// Parses, plans and optimises down to a physical plan, without running it: what
    /// `--dry-run` checks.
    pub async fn check(&self, source: &str) -> Result<Plan, KqlError> {
        Ok(self.physical(source).await?.0)
    }

    /// The physical plan a query would run, as DataFusion prints it (one operator per line,
    /// children indented: scans with the filters pushed into them, joins, aggregations), what
    /// `--explain` shows.
    pub async fn explain(&self, source: &str) -> Result<String, KqlError> {
        let (_, physical) = self.physical(source).await?;
        Ok(displayable(physical.as_ref()).indent(true).to_string())
    }

    async fn physical(&self, source: &str) -> Result<(Plan, Arc<dyn ExecutionPlan>), KqlError> {
        let plan = self.plan(source).await?;
        let physical = self
            .ctx
            .state()
            .create_physical_plan(&plan.plan)
            .await
            .map_err(|e| KqlError::execution(clean_message(&e)))?;
        Ok((plan, physical))
    }

    /// Runs a query to completion within the options' limits.
    pub async fn run(&self, source: &str, options: &QueryOptions) -> Result<QueryResult, KqlError> {
        let planned = self.plan(source).await?;
        self.execute(planned, options).await
    }

    /// Runs an already planned query.
    pub async fn execute(
        &self,
        planned: Plan,
        options: &QueryOptions,
    ) -> Result<QueryResult, KqlError> {
        let Plan { plan, chart } = planned;
        // One row past the limit tells whether the result was cut.
        let fetch = options.limit.saturating_add(1);
        let plan = LogicalPlanBuilder::from(plan)
            .limit(0, Some(fetch))
            .and_then(LogicalPlanBuilder::build)
            .map_err(|e| KqlError::execution(clean_message(&e)))?;
        let run = async {
            let df = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(|e| KqlError::execution(clean_message(&e)))?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df
                .execute_stream()
                .await
                .map_err(|e| KqlError::execution(clean_message(&e)))?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| KqlError::execution(clean_message(&e)))?;
                let room = options.limit - rows;
                if batch.num_rows() > room {
                    truncated = true;
                    if room > 0 {
                        batches.push(batch.slice(0, room));
                    }
                    break;
                }
                rows += batch.num_rows();
                batches.push(batch);
            }
            Ok::<_, KqlError>(QueryResult {
                schema,
                batches,
                truncated,
                chart: chart.clone(),
            })
        };
        match tokio::time::timeout(options.timeout, run).await {
            Ok(result) => result,
            // Dropping the stream cancels every operator still running.
            Err(_) => Err(KqlError::execution(format!(
                "the query ran past its timeout of {} and was cancelled",
                humanize(options.timeout)
            ))),
        }
    }
}

fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}
