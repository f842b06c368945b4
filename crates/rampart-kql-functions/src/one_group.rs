//! Our `GroupsAccumulator`s used as `Accumulator`s, for an aggregation without `by` (and
//! wherever DataFusion asks for a plain accumulator): every row goes to group 0.

use datafusion::arrow::array::ArrayRef;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{Accumulator, GroupsAccumulator};

/// What group 0 holds, read without taking it out of the accumulator.
pub(crate) trait OneGroupValues: GroupsAccumulator + std::fmt::Debug + Sync {
    /// Group 0's result (the result over no rows when none was added).
    fn value(&self) -> Result<ScalarValue>;
    /// Group 0's state, one value per state field.
    fn state_values(&self) -> Result<Vec<ScalarValue>>;
}

/// A groups accumulator holding one group.
#[derive(Debug)]
pub(crate) struct OneGroup<G>(pub(crate) G);

impl<G: OneGroupValues> Accumulator for OneGroup<G> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |v| v.len());
        self.0.update_batch(values, &vec![0; rows], None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.value()
    }

    fn size(&self) -> usize {
        self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.state_values()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states.first().map_or(0, |v| v.len());
        self.0.merge_batch(states, &vec![0; rows], 1)
    }
}
