//! One builder for the configuration file of a daemon under test, shared by every test that starts
//! the binary. It starts from what all of them set (the registry, its credential file, the state
//! file) and takes the rest as TOML merged in, so a test names only what it is about.

use std::path::Path;

use toml::{Table, Value};

pub struct TestConfig(Table);

impl TestConfig {
    /// `[registry] url, token_file` and `[state] path`.
    pub fn new(registry_url: &str, token_file: &Path, state: &Path) -> Self {
        let mut t = TestConfig(Table::new());
        t.set("registry.url", registry_url);
        t.set("registry.token_file", token_file.display().to_string());
        t.set("state.path", state.display().to_string());
        t
    }

    /// `[server] listen = "127.0.0.1:<port>"`.
    pub fn listen(mut self, port: u16) -> Self {
        self.set("server.listen", format!("127.0.0.1:{port}"));
        self
    }

    /// No retries: a fault the test injects is seen at once.
    pub fn no_retries(mut self) -> Self {
        self.set("registry.retries", 0);
        self
    }

    /// Verdaccio has no `/-/user/<name>/package` route, so the daemon cannot list the packages of
    /// the credential's account there: the tests against it name their packages (or none).
    pub fn not_own_account(mut self) -> Self {
        self.set("watch.own_account", false);
        self
    }

    /// Merge TOML text in: tables key by key, everything else replaced.
    pub fn with(mut self, toml_text: &str) -> Self {
        let extra: Table = toml::from_str(toml_text)
            .unwrap_or_else(|e| panic!("test config TOML does not parse: {e}\n{toml_text}"));
        merge(&mut self.0, extra);
        self
    }

    /// Set one key by its dotted path (`registry.retries`).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("a key");
        let mut table = &mut self.0;
        for p in parts {
            table = table
                .entry(p)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{p} is not a table"));
        }
        table.insert(last.to_string(), value.into());
    }

    pub fn text(&self) -> String {
        toml::to_string(&self.0).expect("test config serializes")
    }

    /// Write it to `path` and return the path.
    pub fn write(&self, path: &Path) -> std::path::PathBuf {
        std::fs::write(path, self.text())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_path_buf()
    }
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}
