//! Pieces of forms that several areas share: repeated fields, the confirmation step before a
//! destructive change, and a failure found before the API is called.

use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::api::Failure;
use super::html::{Ctx, Section};

/// A failure found before calling the API (a form field that cannot be sent as typed).
pub fn failure(status: StatusCode, detail: &str) -> Failure {
    Failure {
        status,
        detail: detail.to_string(),
        problem: Value::Null,
    }
}

/// A URL-encoded form whose fields may repeat (checkbox lists), as `axum::Form` cannot read.
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(body: &[u8]) -> Fields {
        Fields(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The confirmation step before something is deleted or revoked: what will happen, a button
/// that does it (a form: it works without script) and a way back.
pub struct Confirm {
    pub title: &'static str,
    pub what: Markup,
    pub action: String,
    pub button: &'static str,
    pub back: String,
}

impl Confirm {
    pub fn page(self, ctx: &Ctx, section: Section) -> Response {
        ctx.page(
            section,
            self.title,
            html! {
                div.panel.confirm-panel {
                    (self.what)
                    form method="post" action=(self.action) {
                        (ctx.csrf())
                        div.row {
                            button.danger #confirm type="submit" { (self.button) }
                            a.button.quiet href=(self.back) { "Cancel" }
                        }
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_are_all_kept() {
        let f = Fields::parse(
            b"_csrf=x&scope_groups=a&role=admin&scope_groups=b+c&scope_groups=&name=%C3%A9",
        );
        assert_eq!(f.all("scope_groups"), vec!["a", "b c"]);
        assert_eq!(f.get("role"), "admin");
        assert_eq!(f.get("name"), "é");
        assert_eq!(f.get("missing"), "");
        assert!(f.all("missing").is_empty());
    }
}
