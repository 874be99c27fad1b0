#![allow(dead_code)]
//! What the registry-client integration tests share: a client with fast retries, the fake's
//! credential, and checks that an error never holds the token.

use std::time::Duration;

use npm_watchdog::credential::{Credential, Source};
use npm_watchdog::metrics::Metrics;
use npm_watchdog::registry::{RegistryClient, RegistryError, RetryPolicy};
use secrecy::SecretString;
use url::Url;

use testkit::fake_registry::TOKEN;

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        retry_after_cap: Duration::from_secs(2),
    }
}

pub fn client_with(url: &str, retry: RetryPolicy, timeout: Duration) -> (RegistryClient, Metrics) {
    let metrics = Metrics::new();
    let client = RegistryClient::new(
        Url::parse(url).expect("registry url"),
        timeout,
        retry,
        metrics.clone(),
    )
    .expect("client");
    (client, metrics)
}

pub fn client(url: &str) -> (RegistryClient, Metrics) {
    client_with(url, fast_retry(), Duration::from_secs(5))
}

pub fn cred_with(secret: &str) -> Credential {
    Credential::new(
        SecretString::from(secret.to_string()),
        Source::TokenFile("/run/npm-watchdog/token".into()),
    )
}

pub fn cred() -> Credential {
    cred_with(TOKEN)
}

/// The error's Display and Debug, after checking neither holds the credential.
pub fn text(err: &RegistryError) -> String {
    assert_secret_absent(err, TOKEN);
    err.to_string()
}

pub fn assert_secret_absent(err: &RegistryError, secret: &str) {
    testkit::secrets::assert_absent(
        &[secret],
        [("Display", err.to_string()), ("Debug", format!("{err:?}"))],
    );
}

pub fn metric_line(metrics: &Metrics, endpoint: &str, code: &str) -> Option<u64> {
    let prefix =
        format!("npm_watchdog_registry_requests_total{{code=\"{code}\",endpoint=\"{endpoint}\"}} ");
    metrics.render().lines().find_map(|l| {
        l.strip_prefix(&prefix)
            .map(|v| v.trim().parse().expect("counter value"))
    })
}
