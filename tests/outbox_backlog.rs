//! A backlog longer than the slice the dispatcher reads at a time (a first cycle over a large scope
//! queues tens of thousands of notifications): one pass delivers all of it in order, a failure
//! holds back what follows until its retry is due, and a removed sink's whole backlog is dropped.

mod outbox_harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use npm_watchdog::alerts::{Message, Notification, Sink, SinkError, Status};
use npm_watchdog::finding::{Finding, Severity};
use outbox_harness::Outbox;

/// Well past the dispatcher's slice of 256 rows.
const BACKLOG: usize = 1000;

/// Records the subject of each notification it accepts; refuses (to be retried) the send numbered
/// `fail_at` (1-based) once.
struct Recording {
    seen: Mutex<Vec<String>>,
    fail_at: Mutex<Option<usize>>,
    calls: Mutex<usize>,
}

#[async_trait::async_trait]
impl Sink for Recording {
    fn name(&self) -> &str {
        "recording"
    }

    async fn deliver(&self, m: &Message) -> Result<(), SinkError> {
        let mut calls = self.calls.lock().expect("calls");
        *calls += 1;
        let mut fail_at = self.fail_at.lock().expect("fail_at");
        if *fail_at == Some(*calls) {
            *fail_at = None;
            return Err(SinkError::new("receiver busy"));
        }
        let mut seen = self.seen.lock().expect("seen");
        seen.extend(m.notes.iter().map(|n| n.finding.subject.clone()));
        Ok(())
    }
}

fn note(i: usize) -> Notification {
    let now = Utc::now();
    Notification::change(
        Status::Firing,
        Finding {
            check: "publish-untrusted".into(),
            subject_key: format!("pkg-{i:05}@1.0.0"),
            subject: format!("version pkg-{i:05}@1.0.0"),
            severity: Severity::Critical,
            summary: "published without a trusted publisher".into(),
            why: "w".into(),
            fix: "f".into(),
            dod: None,
        },
        now,
        now,
    )
}

fn subjects(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("version pkg-{i:05}@1.0.0")).collect()
}

#[tokio::test]
async fn a_backlog_longer_than_a_slice_is_delivered_in_order_and_held_at_a_failure() {
    let sink = Arc::new(Recording {
        seen: Mutex::new(Vec::new()),
        fail_at: Mutex::new(Some(600)),
        calls: Mutex::new(0),
    });
    let outbox = Outbox::new(
        vec![Arc::clone(&sink) as Arc<dyn Sink>],
        tempfile::tempdir().expect("tempdir"),
    );
    outbox.queue((0..BACKLOG).map(note).collect(), &["recording"]);
    // A sink the configuration no longer has: its whole backlog is dropped, not sent elsewhere.
    outbox.queue((0..BACKLOG).map(note).collect(), &["removed"]);

    outbox.pass(Duration::ZERO).await;
    // The 600th send failed: the 599 before it went out in order, nothing after it yet.
    assert_eq!(*sink.seen.lock().expect("seen"), subjects(0..599));
    assert_eq!(outbox.waiting("recording"), (BACKLOG - 599) as i64);
    assert_eq!(outbox.count("recording", "failed"), 1);
    assert_eq!(outbox.waiting("removed"), 0);
    assert_eq!(outbox.count("removed", "dropped"), BACKLOG as u64);

    // Once its retry is due, the rest follows in one pass, the failed one first.
    outbox.pass(Duration::from_secs(3600)).await;
    assert_eq!(*sink.seen.lock().expect("seen"), subjects(0..BACKLOG));
    assert_eq!(outbox.waiting("recording"), 0);
    assert_eq!(outbox.count("recording", "sent"), BACKLOG as u64);
}

/// A sink that holds every delivery until it is let go, as a receiver that never answers would.
struct Stuck {
    release: tokio::sync::Semaphore,
    started: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Sink for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }

    async fn deliver(&self, _: &Message) -> Result<(), SinkError> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let permit = self.release.acquire().await;
        drop(permit);
        Ok(())
    }
}

/// Each sink drains its own queue: a sink stuck on a delivery holds back only itself. The other one
/// gets this cycle's message and the next one while the first is still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sink_does_not_hold_back_another() {
    let stuck = Arc::new(Stuck {
        release: tokio::sync::Semaphore::new(0),
        started: std::sync::atomic::AtomicUsize::new(0),
    });
    let quick = Arc::new(Recording {
        seen: Mutex::new(Vec::new()),
        fail_at: Mutex::new(None),
        calls: Mutex::new(0),
    });
    let outbox = Outbox::new(
        vec![
            Arc::clone(&stuck) as Arc<dyn Sink>,
            Arc::clone(&quick) as Arc<dyn Sink>,
        ],
        tempfile::tempdir().expect("tempdir"),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loop_ = tokio::spawn(Arc::clone(&outbox.dispatcher).run(stopped));
    let seen = |n: usize| {
        let quick = Arc::clone(&quick);
        let stuck = Arc::clone(&stuck);
        testkit::peers::wait_until_async(
            "the quick sink's deliveries",
            Duration::from_secs(10),
            move || {
                let got = quick.seen.lock().expect("seen").len();
                let waiting = stuck.started.load(std::sync::atomic::Ordering::SeqCst) >= 1;
                (got >= n && waiting).then_some(())
            },
        )
    };
    outbox.queue(vec![note(0)], &["stuck", "recording"]);
    outbox.dispatcher.wake();
    seen(1).await;
    outbox.queue(vec![note(1)], &["stuck", "recording"]);
    outbox.dispatcher.wake();
    seen(2).await;
    assert_eq!(*quick.seen.lock().expect("seen"), subjects(0..2));
    assert_eq!(
        stuck.started.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the stuck sink is still on its first message"
    );
    assert_eq!(outbox.waiting("stuck"), 2);
    stuck.release.add_permits(10);
    let _ = stop.send(true);
    loop_.await.expect("the loop ends");
    assert_eq!(
        outbox.waiting("stuck"),
        0,
        "delivered before the loop stopped"
    );
}

/// A backlog is delivered highest severity first: a critical finding queued behind a thousand
/// warnings reaches the sink first, and the warnings keep their order after it.
#[tokio::test]
async fn a_critical_message_overtakes_a_backlog_of_warnings() {
    let sink = Arc::new(Recording {
        seen: Mutex::new(Vec::new()),
        fail_at: Mutex::new(None),
        calls: Mutex::new(0),
    });
    let outbox = Outbox::new(
        vec![Arc::clone(&sink) as Arc<dyn Sink>],
        tempfile::tempdir().expect("tempdir"),
    );
    let warning = |i| {
        let mut n = note(i);
        std::sync::Arc::make_mut(&mut n.finding).severity = Severity::Warning;
        n
    };
    outbox.queue((0..BACKLOG).map(warning).collect(), &["recording"]);
    outbox.queue(vec![note(BACKLOG)], &["recording"]);
    outbox.pass(Duration::ZERO).await;
    let seen = sink.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), BACKLOG + 1);
    assert_eq!(
        seen[0],
        format!("version pkg-{BACKLOG:05}@1.0.0"),
        "critical first"
    );
    assert_eq!(
        seen[1..],
        subjects(0..BACKLOG),
        "the warnings in their order"
    );
}

/// A receiver that refuses (for good) any message with a subject longer than 150 characters, as
/// an SMTP server refuses an over-long line.
struct Picky {
    accepted: Mutex<Vec<String>>,
    calls: Mutex<usize>,
}

#[async_trait::async_trait]
impl Sink for Picky {
    fn name(&self) -> &str {
        "picky"
    }

    async fn deliver(&self, m: &Message) -> Result<(), SinkError> {
        *self.calls.lock().expect("calls") += 1;
        if m.notes
            .iter()
            .any(|n| n.finding.subject.chars().count() > 150)
        {
            return Err(SinkError::rejected("500 line too long"));
        }
        let mut accepted = self.accepted.lock().expect("accepted");
        accepted.extend(m.notes.iter().map(|n| n.finding.subject.clone()));
        Ok(())
    }
}

/// A message refused for good for its size is sent again once in its reduced form (names cut, the
/// counts kept) instead of being lost; a small message refused again is rejected as before.
#[tokio::test]
async fn a_message_refused_for_its_size_goes_out_reduced() {
    let sink = Arc::new(Picky {
        accepted: Mutex::new(Vec::new()),
        calls: Mutex::new(0),
    });
    let outbox = Outbox::new(
        vec![Arc::clone(&sink) as Arc<dyn Sink>],
        tempfile::tempdir().expect("tempdir"),
    );
    let mut long = note(0);
    std::sync::Arc::make_mut(&mut long.finding).subject =
        format!("token 0 ({})", "n".repeat(1_000));
    outbox.queue(vec![long], &["picky"]);
    outbox.pass(Duration::ZERO).await;
    let accepted = sink.accepted.lock().expect("accepted").clone();
    assert_eq!(accepted.len(), 1, "delivered, not lost");
    assert!(accepted[0].starts_with("token 0 (nnn"), "{accepted:?}");
    assert!(
        accepted[0].contains("…(+"),
        "cut, saying how much: {accepted:?}"
    );
    assert_eq!(outbox.count("picky", "reduced"), 1);
    assert_eq!(outbox.count("picky", "rejected"), 0);
    assert_eq!(outbox.waiting("picky"), 0);
    assert_eq!(*sink.calls.lock().expect("calls"), 2);
}
