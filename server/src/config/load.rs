//! Loading the configuration: built-in defaults, then the TOML file, then `HEADEND_*`
//! variables, layered by figment.
//!
//! `HEADEND_<SECTION>__<KEY>` sets `<section>.<key>` (`HEADEND_ALARMS__SMTP_HOST` sets
//! `alarms.smtp_host`); the names Headend had before that rule ([`NAMES`]) keep working, and a
//! `__` name wins over the older name of the same key. An unknown key under the `__` rule is
//! refused, like an unknown key in the file; other `HEADEND_*` variables are not configuration
//! (`HEADEND_CONFIG` names the file; tests and benches have their own) and are ignored.
//!
//! By hand, on top of figment, only the variables: each is its own provider, so an error names
//! the variable that set the bad value (figment's `Env` names only the prefix), and a text key
//! (secret, path, address) takes the value verbatim where `Env` would parse it (an all-digit
//! token would become a number, a quoted password would lose its quotes). Numbers, booleans and
//! lists are parsed as `Env` parses them; which is which comes from the key's default.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::{Config, ConfigError};

/// Variable names older than the `__` rule: documented and deployed, so they stay.
pub const NAMES: &[(&str, &str)] = &[
    ("HEADEND_DATA_DIR", "data_dir"),
    ("HEADEND_HTTP_ADDR", "http.addr"),
    ("HEADEND_METRICS_TOKEN", "http.metrics_token"),
    ("HEADEND_SECURE_COOKIES", "http.secure_cookies"),
    ("HEADEND_MQTT_ADDR", "mqtt.addr"),
    ("HEADEND_MQTTS_ADDR", "mqtt.tls_addr"),
    ("HEADEND_MQTT_TLS_CERT", "mqtt.tls_cert"),
    ("HEADEND_MQTT_TLS_KEY", "mqtt.tls_key"),
    ("HEADEND_MQTT_EXTERNAL_URL", "mqtt.external_url"),
    ("HEADEND_DATABASE_URL", "database.url"),
    ("HEADEND_DATABASE_READ_URL", "database.read_url"),
    ("HEADEND_INSTANCE", "cluster.instance"),
    ("HEADEND_PG_BINDIR", "database.pg_bindir"),
    ("HEADEND_JWT_SECRET", "auth.jwt_secret"),
    ("HEADEND_SMTP_PASSWORD", "alarms.smtp_password"),
    ("HEADEND_WEBHOOK_SECRET", "alarms.webhook_secret"),
    ("HEADEND_DEFAULT_TIME_ZONE", "ingest.default_time_zone"),
    ("HEADEND_INGEST_WRITERS", "ingest.writers"),
    (
        "HEADEND_ENERGY_TOLERANCE_SECS",
        "energy.interval_tolerance_secs",
    ),
    (
        "HEADEND_ENERGY_BACKLOG_HORIZON_DAYS",
        "energy.backlog_horizon_days",
    ),
    (
        "HEADEND_ENERGY_MAX_INTERPOLATION_GAP_HOURS",
        "energy.max_interpolation_gap_hours",
    ),
    ("HEADEND_LOG", "log.filter"),
    ("HEADEND_LOG_JSON", "log.json"),
    ("HEADEND_XML_PUSH_ADDR", "xml_push.addr"),
];

const PREFIX: &str = "HEADEND_";
const SEPARATOR: &str = "__";
/// Names the configuration file when the command line does not.
const FILE_VARIABLE: &str = "HEADEND_CONFIG";

impl Config {
    /// Defaults, then the file (the argument, else `HEADEND_CONFIG`, else none), then the
    /// process environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, process_env()?)
    }

    /// [`Config::load`] with the environment given as name/value pairs, so tests need not
    /// touch the process's.
    pub fn load_from<K: Into<String>, V: Into<String>>(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        let file = file.map(Path::to_path_buf).or_else(|| {
            env.iter()
                .find(|(name, _)| name == FILE_VARIABLE)
                .map(|(_, value)| PathBuf::from(value))
        });
        let figment = layers(file.as_deref(), &env)?;
        let config: Config = figment.extract().map_err(value_error)?;
        config.validate()?;
        Ok(config)
    }
}

fn layers(file: Option<&Path>, env: &[(String, String)]) -> Result<Figment, ConfigError> {
    let defaults = Config::default();
    // The default of each key tells whether its variable is text or a value to parse.
    let types = Value::serialize(&defaults)
        .map_err(|e| ConfigError::Invalid(format!("the defaults do not serialize: {e}")))?;
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        // figment reads a missing file as an empty one: a named file must be there.
        std::fs::File::open(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    let mut vars: Vec<Variable> = env
        .iter()
        .filter_map(|(name, value)| Variable::new(name, value, &types))
        .collect();
    // Older names first, so that a `__` name wins; then by name, whatever the process order.
    vars.sort_by(|a, b| (a.general, &a.name).cmp(&(b.general, &b.name)));
    for var in vars {
        figment = figment.merge(var);
    }
    Ok(figment)
}

/// The `HEADEND_*` variables of the process. A configuration variable whose value is not
/// UTF-8 is refused (by name); any other is not ours to judge and is skipped.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        match value.into_string() {
            Ok(value) => env.push((name.to_owned(), value)),
            Err(_) if name == FILE_VARIABLE || config_key(name).is_some() => {
                return Err(ConfigError::Invalid(format!(
                    "environment variable {name} is not valid UTF-8"
                )))
            }
            Err(_) => {}
        }
    }
    Ok(env)
}

/// The key a variable sets, and whether it is by the `__` rule; `None`: not configuration.
fn config_key(name: &str) -> Option<(String, bool)> {
    if let Some((_, key)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Some(((*key).to_owned(), false));
    }
    let rest = name.strip_prefix(PREFIX)?;
    if !rest.contains(SEPARATOR) {
        return None;
    }
    let key = rest.to_ascii_lowercase().replace(SEPARATOR, ".");
    (!key.split('.').any(str::is_empty)).then_some((key, true))
}

/// One `HEADEND_*` variable as a figment provider of its own, so that figment tags the value
/// with this variable and an error can name it.
struct Variable {
    name: String,
    key: String,
    general: bool,
    value: Value,
}

impl Variable {
    fn new(name: &str, raw: &str, types: &Value) -> Option<Self> {
        let (key, general) = config_key(name)?;
        let value = match types.find_ref(&key) {
            Some(Value::Num(..) | Value::Bool(..) | Value::Array(..) | Value::Dict(..)) => {
                raw.parse().unwrap_or_else(|never| match never {})
            }
            // Text, an option unset by default, or an unknown key (refused on extraction).
            _ => Value::from(raw.to_owned()),
        };
        Some(Self {
            name: name.to_owned(),
            key,
            general,
            value,
        })
    }
}

impl Provider for Variable {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = figment::util::nest(&self.key, self.value.clone())
            .into_dict()
            .ok_or_else(|| figment::Error::from(format!("{} names no key", self.name)))?;
        Ok(Profile::Default.collect(dict))
    }
}

/// Names the key and where the bad value was written: figment tags every value, an unknown
/// key included, with the layer that wrote it.
fn value_error(error: figment::Error) -> ConfigError {
    let key = error.path.join(".");
    let metadata = error.metadata.as_ref();
    let origin = match metadata {
        Some(Metadata {
            source: Some(Source::File(path)),
            ..
        }) => format!("config file {}", path.display()),
        Some(Metadata {
            source: Some(Source::Code(_)),
            ..
        }) => "the built-in defaults".to_owned(),
        Some(metadata) => metadata.name.to_string(),
        None => "the configuration".to_owned(),
    };
    ConfigError::Value {
        origin,
        key,
        reason: error.kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Secret;
    use super::*;

    fn load(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_from(file, env.iter().copied())
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    /// A key's value as text, to compare with what a variable said.
    fn shown(config: &Config, key: &str) -> Option<String> {
        match Value::serialize(config).unwrap().find(key)? {
            Value::String(_, s) => Some(s),
            Value::Num(_, n) => n.to_u128_lossy().map(|n| n.to_string()),
            Value::Bool(_, b) => Some(b.to_string()),
            _ => None,
        }
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        let config = load(
            None,
            &[
                ("HEADEND_HTTP_ADDR", "127.0.0.1:9999"),
                ("HEADEND_DATABASE_URL", "postgres://u:pw@db/headend"),
            ],
        )
        .unwrap();
        assert_eq!(config.http.addr.port(), 9999);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("pw@db"),
            "secret leaked into Debug: {debug}"
        );
    }

    #[test]
    fn energy_limits_have_defaults_and_come_from_file_and_env() {
        let config = Config::default();
        assert_eq!(config.energy.backlog_horizon_days, 400);
        assert_eq!(config.energy.max_interpolation_gap_hours, 744);
        let toml = file("[energy]\nbacklog_horizon_days = 30\nmax_interpolation_gap_hours = 48\n");
        let config = load(Some(toml.path()), &[]).unwrap();
        assert_eq!(config.energy.backlog_horizon(), chrono::Duration::days(30));
        assert_eq!(config.energy.max_interpolation_gap_ms(), 48 * 3_600_000);
        let config = load(
            Some(toml.path()),
            &[
                ("HEADEND_ENERGY_BACKLOG_HORIZON_DAYS", "10"),
                ("HEADEND_ENERGY_MAX_INTERPOLATION_GAP_HOURS", "6"),
            ],
        )
        .unwrap();
        assert_eq!(config.energy.backlog_horizon_days, 10);
        assert_eq!(config.energy.max_interpolation_gap_hours, 6);
        let err = load(
            Some(toml.path()),
            &[("HEADEND_ENERGY_BACKLOG_HORIZON_DAYS", "-1")],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("HEADEND_ENERGY_BACKLOG_HORIZON_DAYS"),
            "{err}"
        );
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = load(None, &[("HEADEND_MQTT_ADDR", "not-an-addr")]).unwrap_err();
        assert!(err.to_string().contains("HEADEND_MQTT_ADDR"), "{err}");
    }

    #[test]
    fn the_environment_wins_over_the_file_which_wins_over_the_defaults() {
        let toml = file(
            "data_dir = \"/srv/file\"\n[http]\naddr = \"127.0.0.1:7001\"\nmax_body_bytes = 5000\n\
             [ingest]\nwriters = 3\n",
        );
        let env = [
            ("HEADEND_HTTP_ADDR", "127.0.0.1:7002"),
            ("HEADEND_INGEST__WRITERS", "5"),
            // Both spellings of one key: the `__` one wins.
            ("HEADEND_LOG__FILTER", "debug"),
            ("HEADEND_LOG", "warn"),
        ];
        let config = load(Some(toml.path()), &env).unwrap();
        assert_eq!(
            config.http.addr,
            ([127, 0, 0, 1], 7002).into(),
            "env > file"
        );
        assert_eq!(config.http.max_body_bytes, 5000, "file > defaults");
        assert_eq!(config.data_dir, PathBuf::from("/srv/file"));
        assert_eq!(config.ingest.writers, 5, "the `__` rule");
        assert_eq!(config.log.filter, "debug");
        assert_eq!(config.mqtt.addr, Config::default().mqtt.addr, "defaults");
        // The file may come from HEADEND_CONFIG; a file on the command line wins over it.
        let path = toml.path().to_str().unwrap();
        let config = load(None, &[("HEADEND_CONFIG", path)]).unwrap();
        assert_eq!(config.http.max_body_bytes, 5000);
        let other = file("[http]\nmax_body_bytes = 6000\n");
        let config = load(Some(other.path()), &[("HEADEND_CONFIG", path)]).unwrap();
        assert_eq!(config.http.max_body_bytes, 6000);
    }

    #[test]
    fn every_documented_variable_name_sets_its_key() {
        let env = [
            ("HEADEND_DATA_DIR", "/srv/headend"),
            ("HEADEND_HTTP_ADDR", "127.0.0.1:9999"),
            ("HEADEND_METRICS_TOKEN", "0123456789abcdef0123"),
            ("HEADEND_SECURE_COOKIES", "true"),
            ("HEADEND_MQTT_ADDR", "127.0.0.1:1884"),
            ("HEADEND_MQTTS_ADDR", "127.0.0.1:8884"),
            ("HEADEND_MQTT_TLS_CERT", "/etc/headend/server.crt"),
            ("HEADEND_MQTT_TLS_KEY", "/etc/headend/server.key"),
            ("HEADEND_MQTT_EXTERNAL_URL", "mqtt://u:p@broker:1883"),
            ("HEADEND_DATABASE_URL", "postgres://u:p@db/headend"),
            (
                "HEADEND_DATABASE_READ_URL",
                "postgres://u:p@replica/headend",
            ),
            ("HEADEND_INSTANCE", "node-2"),
            ("HEADEND_PG_BINDIR", "/usr/lib/postgresql/17/bin"),
            (
                "HEADEND_JWT_SECRET",
                "a-jwt-secret-of-at-least-32-characters",
            ),
            ("HEADEND_SMTP_PASSWORD", "hunter2"),
            (
                "HEADEND_WEBHOOK_SECRET",
                "a-webhook-secret-of-32-characters-or-more",
            ),
            ("HEADEND_DEFAULT_TIME_ZONE", "Europe/Ljubljana"),
            ("HEADEND_INGEST_WRITERS", "7"),
            ("HEADEND_ENERGY_TOLERANCE_SECS", "61"),
            ("HEADEND_ENERGY_BACKLOG_HORIZON_DAYS", "33"),
            ("HEADEND_ENERGY_MAX_INTERPOLATION_GAP_HOURS", "12"),
            ("HEADEND_LOG", "info,headend=debug"),
            ("HEADEND_LOG_JSON", "true"),
            ("HEADEND_XML_PUSH_ADDR", "0.0.0.0:5100"),
        ];
        let names: Vec<&str> = env.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            NAMES.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            "every kept name is tested here"
        );
        // The SMTP password needs its user: a key by the `__` rule.
        let mut all = env.to_vec();
        all.push(("HEADEND_ALARMS__SMTP_USER", "headend@example.com"));
        let config = load(None, &all).unwrap();
        let defaults = Config::default();
        for ((name, value), (_, key)) in env.iter().zip(NAMES) {
            assert_eq!(
                shown(&config, key).as_deref(),
                Some(*value),
                "{name} sets {key}"
            );
            assert_ne!(shown(&defaults, key).as_deref(), Some(*value), "{name}");
        }
        assert_eq!(
            config.alarms.smtp_user.as_deref(),
            Some("headend@example.com")
        );
        // Each alone, too (a name must not need another to take effect).
        for ((name, value), (_, key)) in env.iter().zip(NAMES) {
            let partner = match *name {
                "HEADEND_MQTT_TLS_CERT" => ("HEADEND_MQTT_TLS_KEY", "/k.pem"),
                "HEADEND_MQTT_TLS_KEY" => ("HEADEND_MQTT_TLS_CERT", "/c.pem"),
                "HEADEND_SMTP_PASSWORD" => ("HEADEND_ALARMS__SMTP_USER", "u@example.com"),
                _ => ("HEADEND_UNRELATED", "x"),
            };
            let config = load(None, &[(*name, *value), partner]).unwrap();
            assert_eq!(shown(&config, key).as_deref(), Some(*value), "{name}");
        }
    }

    #[test]
    fn the_readme_lists_every_kept_name() {
        let readme = include_str!("../../../README.md");
        for (name, _) in NAMES {
            assert!(readme.contains(&format!("`{name}`")), "{name}");
        }
        assert!(readme.contains("`HEADEND_<SECTION>__<KEY>`"));
    }

    #[test]
    fn a_file_reads_as_it_does_with_toml_alone() {
        let sample = concat!(
            include_str!("../../../deploy/headend.toml"),
            "[[modbus.converters]]\nname = \"c1\"\nhost = \"127.0.0.1\"\nport = 1502\n",
            "devices = [ { unit = 6, model = \"legrand-046-77\" }, ",
            "{ unit = 20, model = \"iskra-bicom\", kind = \"relay\" } ]\n",
            "[database]\nembedded_settings = [[\"fsync\", \"off\"]]\n",
        );
        let toml = file(sample);
        let layered = load(Some(toml.path()), &[]).unwrap();
        let alone: Config = toml::from_str(sample).unwrap();
        assert_eq!(format!("{layered:?}"), format!("{alone:?}"));
        assert_eq!(layered.modbus.converters[0].devices[1].kind, "relay");
    }

    #[test]
    fn text_values_are_taken_verbatim() {
        let token = "12345678901234567";
        let password = "\"[quoted], 007 \"";
        let config = load(
            None,
            &[
                ("HEADEND_METRICS_TOKEN", token),
                ("HEADEND_ALARMS__SMTP_USER", "u"),
                ("HEADEND_SMTP_PASSWORD", password),
                ("HEADEND_DATA_DIR", "007"),
            ],
        )
        .unwrap();
        assert_eq!(config.http.metrics_token, Some(Secret::new(token)));
        assert_eq!(config.alarms.smtp_password, Some(Secret::new(password)));
        assert_eq!(config.data_dir, PathBuf::from("007"));
        // Lists parse as figment's `Env` parses them.
        let config = load(
            None,
            &[(
                "HEADEND_DATABASE__EMBEDDED_SETTINGS",
                "[[fsync, off], [work_mem, 8MB]]",
            )],
        )
        .unwrap();
        assert_eq!(
            config.database.embedded_settings,
            [
                ("fsync".into(), "off".into()),
                ("work_mem".into(), "8MB".into())
            ]
        );
    }

    #[test]
    fn other_headend_variables_are_not_configuration() {
        let config = load(
            None,
            &[
                ("HEADEND_TEST_LOG", "debug"),
                ("HEADEND_BENCH_MESSAGES", "20000"),
                ("HEADEND_DEMO_MEASURE", "1"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        assert_eq!(config.log.filter, Config::default().log.filter);
    }

    /// Where a refused value was written, and its key.
    fn refused(file: Option<&Path>, env: &[(&str, &str)]) -> (String, String) {
        match load(file, env) {
            Err(ConfigError::Value { origin, key, .. }) => (origin, key),
            other => panic!("not refused for a value: {other:?}"),
        }
    }

    fn var(name: &str) -> String {
        format!("environment variable {name}")
    }

    #[test]
    fn a_bad_value_names_its_key_and_where_it_was_written() {
        let toml = file("[mqtt]\naddr = \"nonsense\"\n");
        let in_file = format!("config file {}", toml.path().display());
        let mqtt_addr = "mqtt.addr".to_owned();
        assert_eq!(
            refused(Some(toml.path()), &[]),
            (in_file.clone(), mqtt_addr.clone())
        );
        let err = load(Some(toml.path()), &[]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{in_file} is not valid: mqtt.addr: ")),
            "{err}"
        );
        // The variable that overrides it is the one named, by either spelling.
        for name in ["HEADEND_MQTT__ADDR", "HEADEND_MQTT_ADDR"] {
            assert_eq!(
                refused(Some(toml.path()), &[(name, "nonsense too")]),
                (var(name), mqtt_addr.clone())
            );
        }
        let writers = [("HEADEND_INGEST_WRITERS", "many")];
        let expected = (var("HEADEND_INGEST_WRITERS"), "ingest.writers".to_owned());
        assert_eq!(refused(None, &writers), expected);
        let cookies = [("HEADEND_SECURE_COOKIES", "yes")];
        let expected = (var("HEADEND_SECURE_COOKIES"), "http.secure_cookies".into());
        assert_eq!(refused(None, &cookies), expected);
        // A file that is not TOML, and one that is not there.
        let broken = file("[http\naddr = 1\n");
        let expected = (
            format!("config file {}", broken.path().display()),
            "".into(),
        );
        assert_eq!(refused(Some(broken.path()), &[]), expected);
        let err = load(Some(Path::new("/nonexistent/headend.toml")), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read config file /nonexistent/headend.toml"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_where_they_were_written() {
        let toml = file("[http]\naddr = \"127.0.0.1:8080\"\nadress = \"typo\"\n");
        let in_file = format!("config file {}", toml.path().display());
        // A variable setting another key of the same table must not take the blame.
        let env = [("HEADEND_HTTP_ADDR", "127.0.0.1:1")];
        let expected = (in_file, "http.adress".to_owned());
        assert_eq!(refused(Some(toml.path()), &env), expected);
        let toml = file("colour = \"blue\"\n");
        let expected = (
            format!("config file {}", toml.path().display()),
            "colour".into(),
        );
        assert_eq!(refused(Some(toml.path()), &[]), expected);
        let env = [("HEADEND_HTTP__ADRESS", "x")];
        let expected = (var("HEADEND_HTTP__ADRESS"), "http.adress".to_owned());
        assert_eq!(refused(None, &env), expected);
    }

    #[test]
    fn invalid_combinations_are_still_refused_after_loading() {
        let err = load(None, &[("HEADEND_MQTT_TLS_CERT", "/c.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.tls_key"), "{err}");
        let err = load(None, &[("HEADEND_DEFAULT_TIME_ZONE", "Mars/Olympus")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.default_time_zone"), "{err}");
        assert!(err.contains("unknown time zone"), "{err}");
        let toml = file("[ingest]\ndefault_time_zone = \"Europe/Atlantis\"\n");
        let refused = load(Some(toml.path()), &[]).unwrap_err().to_string();
        assert!(refused.contains("ingest.default_time_zone"), "{refused}");
    }
}
