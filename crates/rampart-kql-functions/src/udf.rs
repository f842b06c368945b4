//! Machinery shared by the Kusto functions written as DataFusion UDFs: one UDF type whose
//! behaviour is a plain kernel function, typed views of arguments (a constant argument is read
//! once, never expanded to a column), and result builders.
//!
//! The expression builders in this crate cast arguments to the types a kernel reads (`Int64`,
//! `Float64`, strings, ...) before calling it, so a kernel only checks what it was promised and
//! answers an internal error otherwise; bad *values* give null, never an error.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, LargeStringArray, PrimitiveArray,
    StringArray, StringBuilder, StringViewArray,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::types::dynamic_metadata;

/// What a kernel sees of a call: its arguments, their fields (for the dynamic tag) and the
/// number of rows to produce.
pub(crate) struct Call<'a> {
    pub args: &'a [ColumnarValue],
    pub fields: &'a [FieldRef],
    pub rows: usize,
}

impl Call<'_> {
    pub fn arg(&self, i: usize) -> Result<&ColumnarValue> {
        match self.args.get(i) {
            Some(a) => Ok(a),
            None => exec_err!("missing argument {i}"),
        }
    }

    /// Whether argument `i` is Kusto `dynamic` (JSON text), as opposed to a plain string.
    pub fn is_dynamic(&self, i: usize) -> bool {
        self.fields
            .get(i)
            .is_some_and(|f| crate::types::field_is_dynamic(f))
    }

    /// Argument `i` as an array of `rows` values.
    pub fn array(&self, i: usize) -> Result<ArrayRef> {
        self.arg(i)?.to_array(self.rows)
    }
}

pub(crate) type Kernel = fn(&Call) -> Result<ArrayRef>;

/// A Kusto function whose behaviour is a stateless kernel. Two instances are the same function
/// when their names and result types agree (names are unique per kernel).
#[derive(Debug)]
pub(crate) struct KernelUdf {
    name: &'static str,
    signature: Signature,
    ret: DataType,
    dynamic: bool,
    nullable: bool,
    kernel: Kernel,
}

impl PartialEq for KernelUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.ret == other.ret && self.dynamic == other.dynamic
    }
}

impl Eq for KernelUdf {}

impl Hash for KernelUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.ret.hash(state);
    }
}

impl KernelUdf {
    pub fn new(name: &'static str, ret: DataType, kernel: Kernel) -> KernelUdf {
        KernelUdf {
            name,
            signature: Signature::variadic_any(Volatility::Immutable),
            ret,
            dynamic: false,
            nullable: true,
            kernel,
        }
    }

    /// A function returning Kusto `dynamic` (JSON text tagged as such).
    pub fn dynamic(name: &'static str, kernel: Kernel) -> KernelUdf {
        KernelUdf {
            dynamic: true,
            ..KernelUdf::new(name, DataType::Utf8, kernel)
        }
    }

    /// The result is never null (string predicates: a Kusto string is never null).
    pub fn total(mut self) -> KernelUdf {
        self.nullable = false;
        self
    }

    pub fn call(self, args: Vec<Expr>) -> Expr {
        ScalarUDF::new_from_impl(self).call(args)
    }
}

impl ScalarUDFImpl for KernelUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.ret.clone())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        let field = Field::new(self.name, self.ret.clone(), self.nullable);
        Ok(Arc::new(if self.dynamic {
            field.with_metadata(dynamic_metadata())
        } else {
            field
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let call = Call {
            args: &args.args,
            fields: &args.arg_fields,
            rows: args.number_rows,
        };
        (self.kernel)(&call).map(ColumnarValue::Array)
    }
}

/// A string argument: a constant, or a column of any of Arrow's three string layouts.
#[derive(Clone, Copy)]
pub(crate) enum Strs<'a> {
    One(Option<&'a str>),
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Strs<'a> {
    pub fn new(value: &'a ColumnarValue) -> Result<Strs<'a>> {
        Ok(match value {
            ColumnarValue::Scalar(s) => Strs::One(match s {
                ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                    v.as_deref()
                }
                s if s.is_null() => None,
                other => return exec_err!("expected a string, got {}", other.data_type()),
            }),
            ColumnarValue::Array(a) => Strs::of_array(a)?,
        })
    }

    pub fn of_array(a: &'a ArrayRef) -> Result<Strs<'a>> {
        Ok(if let Some(a) = a.as_string_opt::<i32>() {
            Strs::Utf8(a)
        } else if let Some(a) = a.as_string_opt::<i64>() {
            Strs::Large(a)
        } else if let Some(a) = a.as_string_view_opt() {
            Strs::View(a)
        } else if a.data_type() == &DataType::Null {
            Strs::One(None)
        } else {
            return exec_err!("expected strings, got {}", a.data_type());
        })
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strs::One(v) => *v,
            Strs::Utf8(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
            Strs::Large(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
            Strs::View(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
        }
    }

    /// The value with Kusto's reading of a null string: the empty string.
    #[inline]
    pub fn text(&self, i: usize) -> &'a str {
        self.get(i).unwrap_or("")
    }
}

/// A primitive argument (`Int64`, `Float64`, timestamps ...): a constant or a column.
pub(crate) enum Prims<'a, T: ArrowPrimitiveType> {
    One(Option<T::Native>),
    Arr(&'a PrimitiveArray<T>),
}

impl<'a, T: ArrowPrimitiveType> Prims<'a, T> {
    pub fn new(value: &'a ColumnarValue) -> Result<Prims<'a, T>> {
        match value {
            ColumnarValue::Scalar(s) => {
                if s.is_null() {
                    return Ok(Prims::One(None));
                }
                let a = s.to_array_of_size(1)?;
                match a.as_primitive_opt::<T>() {
                    Some(p) if p.is_valid(0) => Ok(Prims::One(Some(p.value(0)))),
                    Some(_) => Ok(Prims::One(None)),
                    None => exec_err!("expected {}, got {}", T::DATA_TYPE, s.data_type()),
                }
            }
            ColumnarValue::Array(a) => match a.as_primitive_opt::<T>() {
                Some(p) => Ok(Prims::Arr(p)),
                None if a.data_type() == &DataType::Null => Ok(Prims::One(None)),
                None => exec_err!("expected {}, got {}", T::DATA_TYPE, a.data_type()),
            },
        }
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<T::Native> {
        match self {
            Prims::One(v) => *v,
            Prims::Arr(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
        }
    }
}

/// Builds a `Utf8` column.
pub(crate) fn strings<S: AsRef<str>>(
    rows: usize,
    mut f: impl FnMut(usize) -> Option<S>,
) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        b.append_option(f(i));
    }
    Arc::new(b.finish())
}

/// Builds a `Boolean` column without nulls.
pub(crate) fn bools_total(rows: usize, f: impl FnMut(usize) -> bool) -> ArrayRef {
    Arc::new(BooleanArray::new(
        BooleanBuffer::collect_bool(rows, f),
        None,
    ))
}

/// Builds a `Boolean` column.
pub(crate) fn bools(rows: usize, mut f: impl FnMut(usize) -> Option<bool>) -> ArrayRef {
    Arc::new((0..rows).map(&mut f).collect::<BooleanArray>())
}

/// Builds a primitive column (`Int64`, `Float64`, ...).
pub(crate) fn prims<T: ArrowPrimitiveType>(
    rows: usize,
    mut f: impl FnMut(usize) -> Option<T::Native>,
) -> ArrayRef {
    Arc::new((0..rows).map(&mut f).collect::<PrimitiveArray<T>>())
}

/// Builds a `Timestamp(µs, UTC)` column.
pub(crate) fn timestamps(rows: usize, mut f: impl FnMut(usize) -> Option<i64>) -> ArrayRef {
    use datafusion::arrow::datatypes::TimestampMicrosecondType;
    Arc::new(
        (0..rows)
            .map(&mut f)
            .collect::<PrimitiveArray<TimestampMicrosecondType>>()
            .with_timezone("UTC"),
    )
}
