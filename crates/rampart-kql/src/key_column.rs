//! What the operators our physical rules add share: each passes one input's rows on with one
//! more column, computed from key expressions ([`crate::join_keys`], [`crate::group_keys`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};

/// `input`'s schema with a column `name` of type `t` after its own.
pub(crate) fn with_key_column(
    input: &SchemaRef,
    name: &str,
    t: DataType,
    nullable: bool,
) -> SchemaRef {
    let mut fields: Vec<_> = input.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(name, t, nullable)));
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// Plan properties of an operator over `input` with output `schema`, partitioned as
/// `partitioning`, in no known order.
pub(crate) fn properties(
    schema: &SchemaRef,
    partitioning: Partitioning,
    input: &Arc<dyn ExecutionPlan>,
) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(schema)),
        partitioning,
        input.pipeline_behavior(),
        input.boundedness(),
    ))
}

/// Applies `f` to each key expression, as `ExecutionPlan::apply_expressions` does.
pub(crate) fn apply_to_keys(
    keys: &[Arc<dyn PhysicalExpr>],
    f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
) -> Result<TreeNodeRecursion> {
    for k in keys {
        if f(k)? == TreeNodeRecursion::Stop {
            return Ok(TreeNodeRecursion::Stop);
        }
    }
    Ok(TreeNodeRecursion::Continue)
}

/// The one input of operator `name` among `children`.
pub(crate) fn only_child(
    name: &str,
    mut children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    match children.len() {
        1 => Ok(children.swap_remove(0)),
        n => internal_err!("{name} takes one input, not {n}"),
    }
}
