//! KQL syntax: the lexer, the parser and the syntax tree of Kusto's query language.
//!
//! This crate knows nothing of tables or execution (that is `rampart-kql`); it turns query text
//! into an [`ast::Query`] or a [`KqlError`] that points at the line and column.

pub mod ast;
pub mod blocks;
pub mod error;
mod lexer;
mod parser;

pub use blocks::{QueryBlock, query_blocks};
pub use error::{ErrorKind, KqlError, Location, nearest};

/// Parses a whole query (statements separated by `;`, then the tabular expression).
pub fn parse(source: &str) -> Result<ast::Query, KqlError> {
    parser::parse_query(source)
}
