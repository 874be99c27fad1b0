//! `account-2fa`: the account's own two-factor mode is not `auth-and-writes`.

use super::{CheckDef, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;
use crate::registry::TfaMode;

pub const CHECK: CheckDef = CheckDef {
    id: "account-2fa",
    group: Group::Tokens,
    source: Source::Profile,
    dod: &[],
    event: false,
    subject: Some("user"),
    evaluate,
};

fn evaluate(snap: &Snapshot, _policy: &PolicyConfig) -> Vec<Finding> {
    let Some(profile) = snap.profile else {
        return Vec::new();
    };
    let (severity, state) = match &profile.tfa {
        TfaMode::AuthAndWrites => return Vec::new(),
        TfaMode::AuthOnly => (
            Severity::Warning,
            "covers login only (auth-only)".to_string(),
        ),
        TfaMode::Disabled => (Severity::Critical, "is disabled".to_string()),
        TfaMode::Pending => (
            Severity::Critical,
            "is still pending, so it is not in force".to_string(),
        ),
        TfaMode::Other(m) => (Severity::Warning, format!("is in an unknown mode `{m}`")),
    };
    let user = profile.name.clone().unwrap_or_else(|| "the account".into());
    vec![Finding {
        check: CHECK.id.into(),
        subject_key: user.clone(),
        subject: format!("account {user}"),
        severity,
        summary: format!("Two-factor authentication for {user} {state}."),
        why: "Without 2FA on writes, a phished password or session is enough to publish, change \
              package settings or create tokens."
            .into(),
        fix: "Enable it for login and writes: `npm profile enable-2fa auth-and-writes` (use a security key \
              where possible)."
            .into(),
        dod: CHECK.dod_box(),
    }]
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{now, policy, registry};
    use super::*;
    use crate::registry::parse_profile;

    fn check(profile_json: &str) -> Vec<Finding> {
        let reg = registry();
        let profile =
            parse_profile(&serde_json::from_str(profile_json).expect("json")).expect("profile");
        let snap = Snapshot {
            profile: Some(&profile),
            ..Snapshot::new(now(), &reg)
        };
        evaluate(&snap, &policy())
    }

    #[test]
    fn modes() {
        assert!(
            check(r#"{"name":"alice","tfa":{"mode":"auth-and-writes","pending":false}}"#)
                .is_empty()
        );
        let got = check(r#"{"name":"alice","tfa":{"mode":"auth-only","pending":false}}"#);
        assert_eq!(got[0].severity, Severity::Warning);
        let got = check(r#"{"name":"alice","email":"a@example.com","tfa":false}"#);
        assert_eq!(
            (got[0].severity, got[0].subject.as_str()),
            (Severity::Critical, "account alice")
        );
        let got = check(r#"{"name":"alice","tfa":{"mode":"auth-and-writes","pending":true}}"#);
        assert_eq!(got[0].severity, Severity::Critical);
    }
}
