//! Math kernels where DataFusion's builtin errors on a value Kusto answers (`sqrt(-1)` and
//! `pow(0, -1)` error in DataFusion; Kusto gives NaN and infinity).

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::Float64Type;
use datafusion::common::Result;

use crate::udf::{Call, Prims, prims};

pub fn k_sqrt(c: &Call) -> Result<ArrayRef> {
    let x = Prims::<Float64Type>::new(c.arg(0)?)?;
    Ok(prims::<Float64Type>(c.rows, |i| x.get(i).map(f64::sqrt)))
}

pub fn k_pow(c: &Call) -> Result<ArrayRef> {
    let b = Prims::<Float64Type>::new(c.arg(0)?)?;
    let e = Prims::<Float64Type>::new(c.arg(1)?)?;
    Ok(prims::<Float64Type>(c.rows, |i| {
        Some(b.get(i)?.powf(e.get(i)?))
    }))
}
