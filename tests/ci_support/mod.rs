//! What the CI provider tests share that needs npm-watchdog's own types: a request recorder in
//! place of the metrics. (The fakes of the providers' APIs are in the test kit, `testkit::fake_ci`.)

use std::sync::{Arc, Mutex};

/// Counts requests as the daemon's metrics would: `(provider, endpoint, outcome)`.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<(String, String, String)>>>);

impl npm_watchdog::ci::CiObserver for Recorder {
    fn request(&self, provider: &str, endpoint: &str, outcome: &str) {
        let mut seen = self.0.lock().expect("recorder");
        seen.push((provider.into(), endpoint.into(), outcome.into()));
    }
}

impl Recorder {
    pub fn seen(&self) -> Vec<(String, String, String)> {
        self.0.lock().expect("recorder").clone()
    }
}
