//! Form validation shown beside the field: a refused form is rendered again (422) with what
//! was typed and one message per field, instead of a redirect that loses the input.

use std::collections::BTreeMap;

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
}
