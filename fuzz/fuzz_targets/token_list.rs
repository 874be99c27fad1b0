//! The token-list page parser, fed through the client exactly as the daemon reads a page: the input
//! is the body of every `GET /-/npm/v1/tokens` answer (status 200), served by a minimal HTTP server on
//! loopback, and `RegistryClient::list_tokens` reads it, parses it, follows `urls.next` (the same
//! body again, so a link ends in the "links back" error after at most two requests) and gives each
//! token its short id.
//!
//! The page parser itself is private to the registry module, so the client is the public way in;
//! it also covers what the daemon does with a parsed page (link resolution, the origin check, ids).
//! Errors are expected; a panic anywhere on the way is a crash.

#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use npm_watchdog::credential::{Credential, Source};
use npm_watchdog::registry::{RegistryClient, RetryPolicy};

struct Harness {
    runtime: tokio::runtime::Runtime,
    client: RegistryClient,
    credential: Credential,
    /// What the server answers every request with.
    body: Arc<Mutex<Vec<u8>>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let body = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base = format!("http://{}/", listener.local_addr().expect("local address"));
        let served = Arc::clone(&body);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let served = Arc::clone(&served);
                std::thread::spawn(move || serve(stream, &served));
            }
        });
        let retry = RetryPolicy {
            retries: 0,
            ..RetryPolicy::default()
        };
        let client = RegistryClient::new(
            url::Url::parse(&base).expect("loopback URL"),
            Duration::from_secs(20),
            retry,
            (),
        )
        .expect("client");
        let credential = Credential::new(
            "npm_FuzzToken0123456789".to_string().into(),
            Source::TokenFile("fuzz-token".into()),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Harness {
            runtime,
            client,
            credential,
            body,
        }
    })
}

/// Answer every request on one keep-alive connection with 200 and the current body.
fn serve(mut stream: TcpStream, body: &Mutex<Vec<u8>>) {
    let _ = stream.set_nodelay(true);
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // A GET has no body: the request ends with its blank line.
        while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        let end = pending
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("found above")
            + 4;
        pending.drain(..end);
        let reply = {
            let body = body.lock().unwrap_or_else(|e| e.into_inner());
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            reply.extend_from_slice(&body);
            reply
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    *h.body.lock().unwrap_or_else(|e| e.into_inner()) = data.to_vec();
    let _ = h.runtime.block_on(h.client.list_tokens(&h.credential));
});
