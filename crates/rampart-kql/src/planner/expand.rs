//! `mv-expand`'s element function: a dynamic value (JSON text) to a list DataFusion can unnest.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::cast::as_string_array;
use datafusion::common::exec_err;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast,
};

/// The elements of a dynamic value: an array's elements (strings unquoted, others as JSON
/// text), a bag's properties as one-property bags (Kusto's `bagexpansion=bag`), any other value
/// as itself; null and invalid JSON as no element.
pub fn elements(e: Expr) -> Expr {
    ScalarUDF::new_from_impl(Elements::new()).call(vec![cast(e, DataType::Utf8)])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Elements {
    signature: Signature,
}

impl Elements {
    fn new() -> Elements {
        Elements {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }
    }
}

fn item_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

impl ScalarUDFImpl for Elements {
    fn name(&self) -> &str {
        "mv_expand_elements"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(item_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(input) = arrays.first() else {
            return exec_err!("mv-expand's element function takes one argument");
        };
        let strings = as_string_array(input)?;
        let mut out = ListBuilder::new(StringBuilder::new());
        for i in 0..strings.len() {
            if strings.is_null(i) {
                out.append(false);
                continue;
            }
            push_elements(strings.value(i), out.values());
            out.append(true);
        }
        let array: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(array))
    }
}

fn push_elements(text: &str, out: &mut StringBuilder) {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(items)) => {
            for v in items {
                push_value(&v, out);
            }
        }
        Ok(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                let mut one = serde_json::Map::new();
                one.insert(k, v);
                out.append_value(serde_json::Value::Object(one).to_string());
            }
        }
        Ok(serde_json::Value::Null) => {}
        Ok(v) => push_value(&v, out),
        // Not JSON: a plain string is a scalar of its own.
        Err(_) => out.append_value(text),
    }
}

fn push_value(v: &serde_json::Value, out: &mut StringBuilder) {
    match v {
        serde_json::Value::String(s) => out.append_value(s),
        serde_json::Value::Null => out.append_null(),
        other => out.append_value(other.to_string()),
    }
}
