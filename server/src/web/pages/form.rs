//! Form validation shown beside the field: a refused form is rendered again (422) with what
//! was typed and one message per field, instead of a redirect that loses the input.

use std::collections::BTreeMap;
use std::fmt::Display;

/// Messages by field name (the form's `name` attribute); `""` is the form as a whole.
#[derive(Debug, Default, Clone)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the first message of `field` (later ones for the same field are dropped: one
    /// thing to fix at a time).
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| message.into());
    }

    /// The message of `field`, for `{% if let Some(e) = errors.get("name") %}`.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// Whether `field` has a message (for `aria-invalid`).
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Every message with its field, for a summary at the top of a long form.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A refused form shown again: the messages by field and what was typed, keyed by the
/// field's element id (`new-panel-name`, `panel-7-name`), so several forms on one page keep
/// their own. A form rendered without a refusal shows the stored values.
#[derive(Debug, Default, Clone)]
pub struct Submitted {
    pub errors: FieldErrors,
    typed: BTreeMap<String, String>,
}

impl Submitted {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps what was typed in `key` (the element id).
    pub fn keep(&mut self, key: &str, value: &str) {
        self.typed.insert(key.to_owned(), value.to_owned());
    }

    pub fn add(&mut self, key: &str, message: impl Into<String>) {
        self.errors.add(key, message);
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The message of `key`.
    pub fn error(&self, key: &str) -> Option<&str> {
        self.errors.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.errors.has(key)
    }

    /// The message of the field `field` of the form `form-<id>`.
    pub fn error_at(&self, form: &str, id: impl Display, field: &str) -> Option<&str> {
        self.errors.get(&format!("{form}-{id}-{field}"))
    }

    pub fn has_at(&self, form: &str, id: impl Display, field: &str) -> bool {
        self.errors.has(&format!("{form}-{id}-{field}"))
    }

    /// What was typed in `key`, else `stored`.
    pub fn value<'a>(&'a self, key: &str, stored: &'a str) -> &'a str {
        self.typed.get(key).map_or(stored, String::as_str)
    }

    /// What was typed in the field `field` of the form `form-<id>`, else `stored`.
    pub fn value_at<'a>(
        &'a self,
        form: &str,
        id: impl Display,
        field: &str,
        stored: &'a str,
    ) -> &'a str {
        self.value(&format!("{form}-{id}-{field}"), stored)
    }

    /// Whether `value` is the one chosen in the picker `key` (typed, else `stored`).
    pub fn chosen(&self, key: &str, stored: &str, value: &str) -> bool {
        self.value(key, stored) == value
    }

    pub fn chosen_at(
        &self,
        form: &str,
        id: impl Display,
        field: &str,
        stored: &str,
        value: &str,
    ) -> bool {
        self.value_at(form, id, field, stored) == value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_message_of_a_field_is_kept() {
        let mut e = FieldErrors::new();
        assert!(e.is_empty());
        e.add("name", "a name is needed");
        e.add("name", "too long");
        assert_eq!(e.get("name"), Some("a name is needed"));
        assert!(e.has("name") && !e.has("site"));
        assert!(e.clone().into_result(()).is_err());
        assert!(FieldErrors::new().into_result(1).is_ok());
    }

    #[test]
    fn a_refused_form_keeps_what_was_typed_per_form() {
        let mut s = Submitted::new();
        assert_eq!(s.value("new-panel-name", ""), "");
        s.keep("panel-7-name", "Main <b>");
        s.add("panel-7-name", "taken");
        assert_eq!(s.value_at("panel", 7, "name", "Main"), "Main <b>");
        assert_eq!(s.value_at("panel", 8, "name", "Other"), "Other");
        assert_eq!(s.error_at("panel", 7, "name"), Some("taken"));
        assert!(s.has_at("panel", 7, "name") && !s.has_at("panel", 8, "name"));
        assert!(s.chosen_at("panel", 7, "name", "x", "Main <b>"));
    }
}
