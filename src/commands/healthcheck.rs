//! `npm-watchdog healthcheck`: ask the running daemon's `/healthz`, so a container image needs no curl
//! for its HEALTHCHECK. Exit 0 healthy, 1 not.

use super::{Outcome, EXIT_FINDINGS, EXIT_OK};
use crate::runtime::Runtime;

/// A wildcard listen address is reached on loopback.
pub async fn healthcheck(rt: &Runtime) -> Outcome {
    let mut addr = rt.config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/healthz");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build();
    let result = match client {
        Ok(c) => c.get(&url).send().await.map(|r| r.status()),
        Err(e) => Err(e),
    };
    match result {
        Ok(status) if status.is_success() => Outcome {
            code: EXIT_OK,
            stdout: format!("ok: {url} answered {}\n", status.as_u16()).into(),
        },
        Ok(status) => Outcome {
            code: EXIT_FINDINGS,
            stdout: format!("unhealthy: {url} answered {}\n", status.as_u16()).into(),
        },
        Err(e) => Outcome {
            code: EXIT_FINDINGS,
            stdout: format!(
                "unhealthy: {url}: {}\n",
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    "no answer".to_string()
                }
            )
            .into(),
        },
    }
}
