//! Topic and identifier hygiene. Device identifiers come from gateways and meters (hostile
//! until proven otherwise): only their sanitised slug ever enters a topic or a `unique_id`, so
//! no `+`, `#`, `/`, NUL or non-ASCII reaches the broker, and a slug that had to change carries
//! a hash of the original so two different identifiers never share a topic.

/// Longest slug kept from one identifier (the hash suffix comes on top).
const MAX_SLUG: usize = 32;

/// `value` reduced to `[A-Za-z0-9_-]`: every other byte becomes `_`; when anything changed (or
/// was cut, or `value` is empty) a short FNV-1a hash of the original is appended.
pub fn slug(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(MAX_SLUG)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out != value || out.is_empty() {
        out.push_str(&format!("_{:08x}", fnv1a(value.as_bytes()) as u32));
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A topic prefix an admin may configure: levels of `[A-Za-z0-9_-]`, separated by `/`, none
/// empty, at most 100 characters (the same rule as the table's CHECK).
pub fn valid_prefix(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 100
        && topic.split('/').all(|level| {
            !level.is_empty()
                && level
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// The topics of one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteTopics {
    pub discovery_prefix: String,
    pub base: String,
}

impl SiteTopics {
    /// `online` / `offline`, retained; `offline` is also the connection's last will.
    pub fn availability(&self) -> String {
        format!("{}/status", self.base)
    }

    /// The state topic of one entity: `<base>/<kind>/<device key>/<what>`.
    pub fn state(&self, kind: &str, key: &str, what: &str) -> String {
        format!("{}/{kind}/{key}/{what}", self.base)
    }

    /// A relay's command topic.
    pub fn command(&self, key: &str) -> String {
        format!("{}/relay/{key}/set", self.base)
    }

    /// What the publisher subscribes to for commands.
    pub fn command_filter(&self) -> String {
        format!("{}/relay/+/set", self.base)
    }

    /// The device key of a command topic, if `topic` is one of this site's.
    pub fn command_key<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/relay/")?;
        let key = rest.strip_suffix("/set")?;
        (!key.is_empty() && !key.contains('/')).then_some(key)
    }

    /// Home Assistant's discovery topic: `<prefix>/<component>/<node_id>/<object_id>/config`.
    pub fn discovery(&self, component: &str, node: &str, object: &str) -> String {
        format!(
            "{}/{component}/{node}/{object}/config",
            self.discovery_prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_topic_safe_and_distinct() {
        assert_eq!(slug("SG000017"), "SG000017");
        assert_eq!(slug("meter-1_a"), "meter-1_a");
        for hostile in [
            "a/b",
            "+",
            "#",
            "a\0b",
            "ščž",
            "",
            "../..",
            "x y",
            &"9".repeat(80),
        ] {
            let s = slug(hostile);
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{hostile:?} -> {s:?}"
            );
            assert!(!s.is_empty() && s.len() <= MAX_SLUG + 9);
        }
        assert_ne!(slug("a/b"), slug("a+b"));
        assert_ne!(slug("a/b"), slug("a_b"));
    }

    #[test]
    fn prefixes_and_command_topics() {
        assert!(valid_prefix("homeassistant"));
        assert!(valid_prefix("headend/site-1"));
        for bad in ["", "a//b", "/a", "a/", "a/+", "a/#", "a b", "$SYS"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
        let t = SiteTopics {
            discovery_prefix: "homeassistant".into(),
            base: "headend/plant".into(),
        };
        assert_eq!(
            t.command_key("headend/plant/relay/SG1_ir0/set"),
            Some("SG1_ir0")
        );
        assert_eq!(t.command_key("headend/plant/relay/a/b/set"), None);
        assert_eq!(t.command_key("headend/plantx/relay/a/set"), None);
        assert_eq!(
            t.discovery("sensor", "headend_SG1", "meter_ir0_power"),
            "homeassistant/sensor/headend_SG1/meter_ir0_power/config"
        );
    }
}
