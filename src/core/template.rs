//! Templates for webhook bodies and URLs (minijinja, Jinja2 syntax).
//!
//! A template renders over the event's CloudEvents envelope: `type`, `id`,
//! `source`, `time`, `subject` and `data.*`. Undefined names are errors, not
//! empty strings, and every template is rendered against a sample of each
//! event type its subscription can receive when the configuration loads —
//! so a typo such as `data.cube_nmae` stops Herald at start instead of
//! sending a broken body at 3 a.m.

use std::fmt;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

const NAME: &str = "template";

#[derive(Clone)]
pub struct Template {
    source: String,
    env: Arc<Environment<'static>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        let position = e.line().map(|l| format!("line {l}: ")).unwrap_or_default();
        let detail = e.detail().map(|d| format!(" ({d})")).unwrap_or_default();
        TemplateError {
            message: format!("{position}{}{detail}", e.kind()),
        }
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Output goes into JSON bodies and URLs, not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.add_template_owned(NAME, source.to_owned())?;
        Ok(Template {
            source: source.to_owned(),
            env: Arc::new(env),
        })
    }

    pub fn render(&self, context: &Value) -> Result<String, TemplateError> {
        // A plain URL (most are) is its own rendering: no engine per webhook.
        if self.is_static() {
            return Ok(self.source.clone());
        }
        let template = self.env.get_template(NAME)?;
        Ok(template.render(context)?)
    }

    /// Checks the template against a sample context: it must render, and
    /// every name it reads (`data.cube_name`, `type`, ...) must exist in the
    /// sample. The second check catches what rendering alone lets through,
    /// such as an undefined value handed to a filter (`| tojson`) or read
    /// only on a branch the sample does not take.
    pub fn check(&self, sample: &Value) -> Result<(), TemplateError> {
        self.render(sample)?;
        let template = self.env.get_template(NAME)?;
        let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        names.sort();
        let unknown = names
            .iter()
            .find(|name| !resolves(sample, name) && !self.assigns(name));
        match unknown {
            Some(name) => Err(TemplateError {
                message: format!("`{name}` is not a field of the event"),
            }),
            None => Ok(()),
        }
    }

    /// Whether the template itself assigns the root of `name` (with `set`
    /// or as a loop variable). The static analysis cannot always tell a
    /// variable set inside an `if` from a missing field; this settles it.
    fn assigns(&self, name: &str) -> bool {
        let root = name.split('.').next().unwrap_or_default();
        ["set ", "for "].iter().any(|keyword| {
            self.source.contains(&format!("{keyword}{root} "))
                || self.source.contains(&format!("{keyword}{root}="))
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template has no placeholders, tags or comments: it
    /// renders to its source whatever the event.
    pub fn is_static(&self) -> bool {
        !["{{", "{%", "{#"]
            .iter()
            .any(|open| self.source.contains(open))
    }
}

/// Global functions minijinja provides; reading them is not reading the event.
const BUILTINS: [&str; 5] = ["range", "dict", "namespace", "debug", "loop"];

fn resolves(context: &Value, dotted: &str) -> bool {
    let mut parts = dotted.split('.');
    let root = parts.next().unwrap_or_default();
    if BUILTINS.contains(&root) {
        return true;
    }
    let mut value = &context[root];
    if value.is_null() && context.get(root).is_none() {
        return false;
    }
    for part in parts {
        match value.get(part) {
            Some(inner) => value = inner,
            None => return false,
        }
    }
    true
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_of_the_envelope() {
        let t =
            Template::parse(r#"{"text": {{ ("Refresh of " ~ data.cube ~ " " ~ type) | tojson }}}"#)
                .unwrap();
        let out = t
            .render(&json!({"type": "t", "data": {"cube": "Sales \"EU\""}}))
            .unwrap();
        assert_eq!(out, r#"{"text": "Refresh of Sales \"EU\" t"}"#);
    }

    /// A source with nothing to render is sent as written, trailing newline
    /// and all; a comment alone is not static (it renders to nothing).
    #[test]
    fn a_static_source_renders_to_itself_and_a_comment_does_not() {
        for source in [
            "https://example.test/hook?a=1&b=%7B",
            "line\n",
            "{ \"a\": 1 }",
        ] {
            let t = Template::parse(source).unwrap();
            assert!(t.is_static(), "{source}");
            assert_eq!(t.render(&Value::Null).unwrap(), source);
        }
        let comment = Template::parse("https://example.test/{# later #}hook").unwrap();
        assert!(!comment.is_static());
        assert_eq!(
            comment.render(&Value::Null).unwrap(),
            "https://example.test/hook"
        );
    }

    #[test]
    fn an_undefined_field_is_an_error_naming_the_line() {
        let t = Template::parse("ok\n{{ data.nope }}").unwrap();
        let err = t.render(&json!({"data": {}})).unwrap_err();
        assert!(err.message.starts_with("line 2: undefined value"), "{err}");
    }

    #[test]
    fn check_finds_unknown_fields_even_behind_filters_and_branches() {
        let sample = json!({"type": "t", "data": {"cube": "c", "error": null}});
        let ok = Template::parse(
            "{% set x = data.cube %}{{ x | tojson }}{{ data.error }}{{ range(2) }}",
        );
        assert_eq!(ok.unwrap().check(&sample), Ok(()));
        let filtered = Template::parse("{{ data.cub | tojson }}").unwrap();
        assert_eq!(
            filtered.check(&sample).unwrap_err().message,
            "`data.cub` is not a field of the event"
        );
        let branch = Template::parse("{% if type == 'x' %}{{ dta.cube }}{% endif %}").unwrap();
        assert!(branch.check(&sample).is_err());
    }

    #[test]
    fn a_syntax_error_is_refused_at_parse_with_its_line() {
        let err = Template::parse("a\nb {{ data.x ").unwrap_err();
        assert!(err.message.starts_with("line 2: syntax error"), "{err}");
    }
}
