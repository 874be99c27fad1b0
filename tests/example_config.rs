//! `config/npm-watchdog.example.toml` is the reference for every configuration key. These tests keep it
//! honest against the config structs themselves:
//! - it loads as it is (a file that does not load is no example);
//! - it names every key the structs accept, written or as a `# key = value` comment, and names no key
//!   they do not accept (a typo in a commented-out example would go unnoticed by loading);
//! - the keys that have a default are written, uncommented, with exactly that default.
//!
//! The accepted keys are not a hand-kept list: they come from serializing `Config::default()` and one
//! config with every field set (built with struct literals, so a new field fails to compile here until
//! it is set, and then fails the test until the example documents it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use figment::providers::Env;
use npm_watchdog::alerts::alertmanager::AlertmanagerSinkConfig;
use npm_watchdog::alerts::email::EmailSinkConfig;
use npm_watchdog::alerts::pagerduty::PagerDutySinkConfig;
use npm_watchdog::alerts::slack::SlackSinkConfig;
use npm_watchdog::alerts::webhook::WebhookSinkConfig;
use npm_watchdog::alerts::GroupDim;
use npm_watchdog::ci::circleci::CircleciConfig;
use npm_watchdog::ci::github::GithubConfig;
use npm_watchdog::ci::gitlab::GitlabConfig;
use npm_watchdog::config::{
    load_with_env, AlertsConfig, AllowCiSecret, AllowToken, CiConfig, Config, HumanDuration,
    HumanSize, PolicyConfig, RegistryConfig, Schedule, ScheduleConfig, ServerConfig, StateConfig,
    WatchConfig,
};
use npm_watchdog::finding::Severity;
use npm_watchdog::secret::SecretUrl;
use toml::{Table, Value};
use url::Url;

/// Tables whose keys are names the user chooses (package names), not config keys: their entries are
/// all named `<table>.*`.
const NAME_KEYED_TABLES: &[&str] = &["policy.expected_publishers"];

/// Keys with a default that the example sets to something else, and why. Sinks have no default (the
/// default is none); the example shows one of each so that their shape is documented and checked
/// by loading. The defaults of the keys inside a sink are checked by `sink_defaults_are_written`.
const NOT_DEFAULT_IN_EXAMPLE: &[&str] = &[
    "alerts.email",
    "alerts.webhook",
    "alerts.pagerduty",
    "alerts.slack",
    "alerts.alertmanager",
    "ci.github",
    "ci.circleci",
    "ci.gitlab",
];

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/npm-watchdog.example.toml")
}

fn example_text() -> String {
    let path = example_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn load_example() -> Config {
    let path = example_path();
    match load_with_env(
        Some(&path),
        Env::prefixed("NPM_WATCHDOG_EXAMPLE_UNUSED_").split("__"),
        &npm_watchdog::checks::ids(),
    ) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("the example config does not load: {e}"),
    }
}

fn to_table(config: &Config) -> Table {
    match Value::try_from(config) {
        Ok(Value::Table(t)) => t,
        Ok(other) => panic!("a config serializes to a table, got {other}"),
        Err(e) => panic!("serialize config: {e}"),
    }
}

fn child_path(prefix: &str, key: &str) -> String {
    if NAME_KEYED_TABLES.contains(&prefix) {
        format!("{prefix}.*")
    } else if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn is_table_array(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(Value::is_table)
}

/// Every key path in `table`: sections and tables (`alerts`, `state`), leaves (`registry.url`), keys
/// inside arrays of tables (`alerts.email[].smtp_url`, `policy.allow_tokens[].self`).
fn key_paths(prefix: &str, table: &Table, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = child_path(prefix, key);
        out.insert(path.clone());
        match value {
            Value::Table(t) => key_paths(&path, t, out),
            Value::Array(items) if is_table_array(items) => {
                for item in items.iter().filter_map(Value::as_table) {
                    key_paths(&format!("{path}[]"), item, out);
                }
            }
            _ => {}
        }
    }
}

/// Every key path with its value, down to the values that are not tables (arrays are one value; an
/// empty table is one value too).
fn leaf_values(prefix: &str, table: &Table, out: &mut BTreeMap<String, Value>) {
    for (key, value) in table {
        let path = child_path(prefix, key);
        match value {
            Value::Table(t) if !t.is_empty() => leaf_values(&path, t, out),
            _ => {
                out.insert(path, value.clone());
            }
        }
    }
}

/// One config with every field set, every `Option` `Some`, every list and map non-empty. Struct
/// literals on purpose (no `..Default::default()`): a new field does not compile until it is set here.
fn fully_populated() -> Config {
    let url = |s: &str| Url::parse(s).expect("url");
    Config {
        registry: RegistryConfig {
            url: Some(url("https://registry.npmjs.org/")),
            token_file: Some(PathBuf::from("/run/credentials/x/npm-token")),
            timeout: HumanDuration::secs(5),
            connect_timeout: HumanDuration::secs(3),
            idle_timeout: HumanDuration::secs(20),
            min_throughput: HumanSize(1 << 20),
            concurrency: 4,
            retries: 1,
            max_body: HumanSize(512 << 10),
            max_packument: HumanSize(64_000_000),
            write_interval: HumanDuration::secs(1),
        },
        watch: WatchConfig {
            own_account: false,
            users: vec!["alice".into()],
            orgs: vec!["acme".into()],
            packages: vec!["@acme/widget".into()],
        },
        schedule: ScheduleConfig {
            tokens: Schedule::Every(HumanDuration::secs(60)),
            packages: Schedule::Cron("0 */5 * * * *".into()),
            org: Schedule::Every(HumanDuration::secs(3600)),
            ci: Schedule::Every(HumanDuration::secs(600)),
            max_run: HumanDuration::secs(120),
        },
        policy: PolicyConfig {
            bypass_token_max_age: HumanDuration::secs(3600),
            token_max_lifetime: HumanDuration::secs(7 * 86400),
            token_unused_after: HumanDuration::secs(86400),
            trusted_publishing_since: DateTime::<Utc>::from_timestamp(1_700_000_000, 0)
                .expect("timestamp"),
            write_teams: vec!["release-admins".into()],
            expected_owners: vec!["alice".into()],
            retired_accounts: vec!["carol".into()],
            blind_after: 5,
            allow_tokens: vec![AllowToken {
                key_prefix: "82e393".into(),
                reason: "watchdog read-only credential".into(),
                expires: NaiveDate::from_ymd_opt(2027, 1, 31),
                own: true,
            }],
            expected_publishers: BTreeMap::from([(
                "@acme/widget".to_string(),
                "github:acme/widget:release.yml"
                    .parse()
                    .expect("expected source"),
            )]),
            ci_secret_names: vec!["(?i)^PUBLISH_KEY$".into()],
            allow_ci_secrets: vec![AllowCiSecret {
                place: "gitlab:group:acme".into(),
                name: "NPM_TOKEN".into(),
                reason: "mirror job".into(),
                expires: NaiveDate::from_ymd_opt(2026, 12, 31),
            }],
        },
        alerts: AlertsConfig {
            repeat_interval: HumanDuration::secs(3600),
            send_resolved: false,
            log: true,
            group_by: vec![GroupDim::Check, GroupDim::Severity],
            max_items: 20,
            group_wait: HumanDuration::secs(30),
            email: vec![EmailSinkConfig {
                name: Some("security-mail".into()),
                smtp_url: url("smtps://mail.example.com:465"),
                from: "npm-watchdog@example.com".into(),
                to: vec!["security@example.com".into()],
                username: Some("npm-watchdog".into()),
                password_file: Some(PathBuf::from("/run/credentials/x/smtp-password")),
                min_severity: Severity::Warning,
                timeout: HumanDuration::secs(5),
                checks: vec!["token-created".into()],
                exclude_checks: vec!["token-unused".into()],
                repeat_interval: Some(HumanDuration::secs(3600)),
                group_by: Some(vec![GroupDim::Group]),
                max_items: Some(10),
                group_wait: Some(HumanDuration::secs(20)),
            }],
            webhook: vec![WebhookSinkConfig {
                name: Some("chat".into()),
                url: SecretUrl::new(url("https://hooks.example.com/services/T000/B000/XXXX")),
                secret_file: Some(PathBuf::from("/run/credentials/x/webhook-secret")),
                min_severity: Severity::Critical,
                timeout: HumanDuration::secs(5),
                checks: vec!["token-created".into()],
                exclude_checks: vec!["token-unused".into()],
                repeat_interval: Some(HumanDuration::secs(3600)),
                group_by: Some(vec![GroupDim::Group]),
                max_items: Some(10),
                group_wait: Some(HumanDuration::secs(20)),
            }],
            pagerduty: vec![PagerDutySinkConfig {
                name: Some("pager".into()),
                routing_key_file: PathBuf::from("/run/credentials/x/pagerduty-key"),
                url: url("https://events.example.com/v2/enqueue"),
                timeout: HumanDuration::secs(5),
                min_severity: Severity::Critical,
                checks: vec!["token-created".into()],
                exclude_checks: vec!["token-unused".into()],
                repeat_interval: Some(HumanDuration::secs(3600)),
                group_by: Some(vec![GroupDim::Group]),
                max_items: Some(10),
                group_wait: Some(HumanDuration::secs(20)),
            }],
            slack: vec![SlackSinkConfig {
                name: Some("chat-2".into()),
                url_file: PathBuf::from("/run/credentials/x/slack-url"),
                timeout: HumanDuration::secs(5),
                min_severity: Severity::Warning,
                checks: vec!["token-created".into()],
                exclude_checks: vec!["token-unused".into()],
                repeat_interval: Some(HumanDuration::secs(3600)),
                group_by: Some(vec![GroupDim::Group]),
                max_items: Some(10),
                group_wait: Some(HumanDuration::secs(20)),
            }],
            alertmanager: vec![AlertmanagerSinkConfig {
                name: Some("am".into()),
                urls: vec![url("http://127.0.0.1:9093")],
                resend_interval: HumanDuration::secs(30),
                timeout: HumanDuration::secs(5),
                min_severity: Severity::Warning,
                checks: vec!["token-created".into()],
                exclude_checks: vec!["token-unused".into()],
                repeat_interval: Some(HumanDuration::secs(3600)),
                // Not grouped: Alertmanager groups alerts itself.
                group_by: None,
                max_items: None,
                group_wait: None,
            }],
        },
        ci: CiConfig {
            github: vec![GithubConfig {
                token_file: PathBuf::from("/run/credentials/x/github-token"),
                api_url: url("https://github.example.com/api/v3"),
                repos: vec!["acme/widget".into()],
                orgs: vec!["acme".into()],
            }],
            circleci: vec![CircleciConfig {
                token_file: PathBuf::from("/run/credentials/x/circleci-token"),
                api_url: url("https://circleci.example.com/api/v2"),
                org_slug: Some("gh/acme".into()),
                projects: vec!["gh/acme/widget".into()],
            }],
            gitlab: vec![GitlabConfig {
                token_file: PathBuf::from("/run/credentials/x/gitlab-token"),
                api_url: url("https://gitlab.example.com/api/v4"),
                projects: vec!["acme/widget".into()],
                groups: vec!["acme".into()],
            }],
        },
        server: ServerConfig {
            listen: "127.0.0.1:9999".parse().expect("socket address"),
            external_url: Some(url("https://npm-watchdog.example.com/")),
            package_series: false,
        },
        state: StateConfig {
            path: Some(PathBuf::from("/var/lib/npm-watchdog/state.db")),
        },
    }
}

/// Every key path the config structs accept, from serializing them.
fn accepted_keys() -> BTreeSet<String> {
    let full = fully_populated();
    if let Err(e) = full.validate(&npm_watchdog::checks::ids()) {
        panic!("the fully populated test config is invalid: {e}");
    }
    let mut keys = BTreeSet::new();
    for config in [Config::default(), full] {
        key_paths("", &to_table(&config), &mut keys);
    }
    keys
}

/// The keys an example file names.
struct Named {
    /// Keys TOML sees (sections included).
    written: BTreeSet<String>,
    /// Keys in `# key = value` comments, inside the section they appear in.
    commented: BTreeSet<String>,
    /// Each commented-out entry, parsed, with its section (`policy`, `alerts.email[]`, `` for none).
    entries: Vec<(String, Table)>,
}

/// A comment is a commented-out key when, after `#` and one optional space, it reads `key = value`
/// with a key without spaces (prose such as `# Default: "30s"` does not). Such a line must be valid
/// TOML, so that removing the `#` works.
fn named_keys(text: &str) -> Named {
    let parsed: Table = toml::from_str(text).unwrap_or_else(|e| panic!("example is not TOML: {e}"));
    let mut written = BTreeSet::new();
    key_paths("", &parsed, &mut written);

    let mut commented = BTreeSet::new();
    let mut entries = Vec::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(h) = line.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            section = format!("{}[]", h.trim());
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = h.trim().to_string();
            continue;
        }
        let Some(comment) = line.strip_prefix('#') else {
            continue;
        };
        let comment = comment.strip_prefix(' ').unwrap_or(comment);
        let Some((key, _)) = comment.split_once('=') else {
            continue;
        };
        let key = key.trim_end();
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        let entry: Table = toml::from_str(comment).unwrap_or_else(|e| {
            panic!(
                "example line {}: the commented-out key `{key}` is not valid TOML once uncommented: {e}",
                n + 1
            )
        });
        key_paths(&section, &entry, &mut commented);
        entries.push((section.clone(), entry));
    }
    Named {
        written,
        commented,
        entries,
    }
}

fn list(keys: &BTreeSet<String>) -> String {
    keys.iter()
        .map(|k| format!("  {k}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_loads() {
    load_example();
}

#[test]
fn example_names_every_accepted_key_and_no_other() {
    let accepted = accepted_keys();
    // Sanity: the derivation sees what it must (nested tables, arrays of tables, renamed fields, maps).
    for key in [
        "registry.url",
        "alerts.email[].smtp_url",
        "alerts.webhook[].secret_file",
        "policy.allow_tokens[].self",
        "policy.expected_publishers.*",
        "state.path",
    ] {
        assert!(
            accepted.contains(key),
            "accepted keys lack {key}:\n{}",
            list(&accepted)
        );
    }

    let named = named_keys(&example_text());
    let all_named: BTreeSet<String> = named.written.union(&named.commented).cloned().collect();
    let missing: BTreeSet<String> = accepted.difference(&all_named).cloned().collect();
    let unknown_written: BTreeSet<String> = named.written.difference(&accepted).cloned().collect();
    let unknown_commented: BTreeSet<String> =
        named.commented.difference(&accepted).cloned().collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "it does not name these keys (write them, or show them as `# key = value` in their \
             section):\n{}",
            list(&missing)
        ));
    }
    if !unknown_written.is_empty() {
        problems.push(format!(
            "it writes keys the config does not accept:\n{}",
            list(&unknown_written)
        ));
    }
    if !unknown_commented.is_empty() {
        problems.push(format!(
            "it shows commented-out keys the config does not accept:\n{}",
            list(&unknown_commented)
        ));
    }
    assert!(
        problems.is_empty(),
        "config/npm-watchdog.example.toml: {}",
        problems.join("\n")
    );
}

/// The value at a dotted path of plain keys (`registry.timeout`, `policy.expected_publishers`).
fn value_at<'a>(table: &'a Table, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut value = table.get(segments.next()?)?;
    for segment in segments {
        value = value.as_table()?.get(segment)?;
    }
    Some(value)
}

#[test]
fn keys_with_a_default_are_written_with_it() {
    let mut default = BTreeMap::new();
    leaf_values("", &to_table(&Config::default()), &mut default);
    let example = to_table(&load_example());
    let named = named_keys(&example_text());

    for skip in NOT_DEFAULT_IN_EXAMPLE {
        assert!(
            default.contains_key(*skip),
            "{skip} in the skip list is not a key with a default"
        );
    }
    let mut wrong = Vec::new();
    for (key, want) in &default {
        if NOT_DEFAULT_IN_EXAMPLE.contains(&key.as_str()) {
            continue;
        }
        if !named.written.contains(key) {
            wrong.push(format!("  {key}: not written (default {want})"));
        } else if value_at(&example, key) != Some(want) {
            let got = value_at(&example, key).map_or("nothing".to_string(), Value::to_string);
            wrong.push(format!("  {key}: example has {got}, default is {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the example's keys with defaults differ from Config::default():\n{}",
        wrong.join("\n")
    );
}

/// Removing the `#` of every commented-out example (each one replacing the written value of its key,
/// the `[[…]]` ones going into the first table of their array) gives a config that loads: the examples
/// are valid values, not just valid TOML.
#[test]
fn commented_out_examples_load_when_uncommented() {
    let text = example_text();
    let mut config: Table = toml::from_str(&text).expect("example is TOML");
    let named = named_keys(&text);
    assert!(!named.entries.is_empty(), "no commented-out example found");
    for (section, entry) in &named.entries {
        let mut table = &mut config;
        for segment in section.split('.').filter(|s| !s.is_empty()) {
            let (name, first_of_array) = match segment.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (segment, false),
            };
            let value = table
                .entry(name)
                .or_insert_with(|| Value::Table(Table::new()));
            let value = if first_of_array {
                value
                    .as_array_mut()
                    .and_then(|a| a.first_mut())
                    .unwrap_or_else(|| panic!("[[{section}]] has no written table"))
            } else {
                value
            };
            table = value
                .as_table_mut()
                .unwrap_or_else(|| panic!("section {section} is not a table"));
        }
        table.extend(entry.clone());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("uncommented.toml");
    let rendered = toml::to_string(&config).expect("render");
    std::fs::write(&path, &rendered).expect("write");
    if let Err(e) = load_with_env(
        Some(&path),
        Env::prefixed("NPM_WATCHDOG_EXAMPLE_UNUSED_").split("__"),
        &npm_watchdog::checks::ids(),
    ) {
        panic!("with its commented-out examples uncommented, the example does not load: {e}\n{rendered}");
    }
}

/// A sink's optional keys (`min_severity`, `timeout`) have defaults too: the example's sinks write
/// them with those defaults. The defaults come from deserializing a sink with only its required keys.
#[test]
fn sink_defaults_are_written() {
    let minimal: Config = toml::from_str(
        r#"
[[alerts.email]]
smtp_url = "smtp://127.0.0.1:25"
from = "w@example.com"
to = "a@example.com"
[[alerts.webhook]]
url = "https://hooks.example.com/x"
[[alerts.pagerduty]]
routing_key_file = "/k"
[[alerts.slack]]
url_file = "/u"
[[alerts.alertmanager]]
urls = ["http://127.0.0.1:9093"]
"#,
    )
    .expect("minimal sinks deserialize");
    let raw_example: Table = toml::from_str(&example_text()).expect("example is TOML");
    let loaded = to_table(&load_example());
    let first_sink = |t: &Table, kind: &str| -> Table {
        t.get("alerts")
            .and_then(|a| a.get(kind))
            .and_then(|s| s.get(0))
            .and_then(Value::as_table)
            .cloned()
            .unwrap_or_else(|| panic!("no [[alerts.{kind}]] table"))
    };
    let required: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("email", &["smtp_url", "from", "to"][..]),
        ("webhook", &["url"][..]),
        ("pagerduty", &["routing_key_file"][..]),
        ("slack", &["url_file"][..]),
        ("alertmanager", &["urls"][..]),
    ]);
    let mut wrong = Vec::new();
    for (kind, required) in required {
        let defaults = first_sink(&to_table(&minimal), kind);
        let written = first_sink(&raw_example, kind);
        let example = first_sink(&loaded, kind);
        let defaulted: Vec<(&String, &Value)> = defaults
            .iter()
            .filter(|(k, _)| !required.contains(&k.as_str()))
            .collect();
        assert!(
            !defaulted.is_empty(),
            "a minimal {kind} sink shows no defaulted key"
        );
        for (key, want) in defaulted {
            if !written.contains_key(key) {
                wrong.push(format!(
                    "  alerts.{kind}[].{key}: not written (default {want})"
                ));
            } else if example.get(key) != Some(want) {
                wrong.push(format!(
                    "  alerts.{kind}[].{key}: example has {}, default is {want}",
                    example.get(key).map_or("nothing".into(), Value::to_string)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the example's sinks differ from the sink defaults:\n{}",
        wrong.join("\n")
    );
}

/// The line parser itself: sections, arrays of tables, inline tables, name-keyed tables, and prose
/// that only looks a little like a key.
#[test]
fn named_keys_parser_reads_comments_in_their_section() {
    let named = named_keys(
        r#"
# top = 1
[policy]
# Default: "24h". Valid: a = b
blind_after = 3
# allow_tokens = [{ key_prefix = "82e393", reason = "r", self = true }]
[policy.expected_publishers]
# "@acme/a" = "gitlab:acme/a"
[[alerts.email]]
smtp_url = "smtp://127.0.0.1:25"
#username = "u"
"#,
    );
    let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        named.written,
        want(&[
            "alerts",
            "alerts.email",
            "alerts.email[].smtp_url",
            "policy",
            "policy.blind_after",
            "policy.expected_publishers",
        ])
    );
    assert_eq!(
        named.commented,
        want(&[
            "top",
            "policy.allow_tokens",
            "policy.allow_tokens[].key_prefix",
            "policy.allow_tokens[].reason",
            "policy.allow_tokens[].self",
            "policy.expected_publishers.*",
            "alerts.email[].username",
        ])
    );
}

/// Every TOML example in the user-facing docs is a configuration (or a section of one) that loads as
/// written: a renamed key fails here before a user copies it.
#[test]
fn the_toml_examples_in_the_docs_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for doc in ["README.md", "docs/CONFIGURATION.md", "docs/ALERTING.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect("doc");
        for (n, block) in text.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap_or_default();
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("config.toml");
            std::fs::write(&path, block).expect("write");
            if let Err(e) = load_with_env(
                Some(&path),
                Env::prefixed("NPM_WATCHDOG_EXAMPLE_UNUSED_").split("__"),
                &npm_watchdog::checks::ids(),
            ) {
                panic!("{doc}, TOML example {}: {e}\n{block}", n + 1);
            }
            seen += 1;
        }
    }
    assert!(seen >= 2, "the docs hold TOML examples ({seen} found)");
}
