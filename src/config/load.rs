//! Reading a configuration: the file, its TOML checked key by key so that
//! every unknown key and wrong type is reported with its line, the typed
//! [`Config`], then [`validate`](super::validate)'s checks and the secrets
//! named by `*_env` keys, each problem placed on its line.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::schema::{
    AuthConfig, Config, CredentialMode, CredentialsConfig, LogConfig, NotifyConfig, ServerConfig,
    SmtpUrl, StoreBackend, TokensConfig, UiConfig, UpstreamConfig, default_admin_groups,
};
use super::{ConfigError, Problem, Warning};
use crate::secret::Secret;

/// A file that passed [`Config::check`], with what is allowed but risky.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Config,
    /// The file's name, for messages.
    pub source_name: String,
    /// Settings that work but are risky, each on its line (or its table's,
    /// when the key is left at its default).
    pub warnings: Vec<Problem>,
}

impl Checked {
    /// The warnings as printed: `file:line: warning: [table] key: message`.
    pub fn warning_lines(&self) -> impl Iterator<Item = Warning<'_>> {
        self.warnings.iter().map(|problem| Warning {
            source_name: &self.source_name,
            problem,
        })
    }
}

/// The environment a check reads secrets from.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Secrets named by `*_env` keys, read from the environment.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub lookup_password: Option<Secret>,
    pub identity_secret: Option<Secret>,
    pub service_password: Option<Secret>,
    pub service_token: Option<Secret>,
    pub postgres_url: Option<Secret>,
    /// `[notify] smtp_url_env`'s URL, read.
    pub smtp_url: Option<SmtpUrl>,
    pub webhook_secret: Option<Secret>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (name, src) = read_source(path)?;
        Config::from_toml(&name, &src)
    }

    /// Parses and validates TOML text, collecting every problem.
    pub fn from_toml(source_name: &str, src: &str) -> Result<Config, ConfigError> {
        Config::parse(source_name, src, None).map(|checked| checked.config)
    }

    /// Reads a file as `check-config` and `serve` do: every problem of
    /// [`Config::from_toml`] and every missing secret together, plus warnings.
    pub fn check_file(path: &Path, env: Env<'_>) -> Result<Checked, ConfigError> {
        let (name, src) = read_source(path)?;
        Config::check(&name, &src, env)
    }

    /// [`Config::check_file`] on text.
    pub fn check(source_name: &str, src: &str, env: Env<'_>) -> Result<Checked, ConfigError> {
        Config::parse(source_name, src, Some(env))
    }

    fn parse(source_name: &str, src: &str, env: Option<Env<'_>>) -> Result<Checked, ConfigError> {
        let fail = |problems| ConfigError {
            source_name: source_name.to_string(),
            problems,
        };
        let doc = DeTable::parse(src).map_err(|e| {
            let line = e.span().map(|s| line_of(src, s.start));
            fail(vec![Problem::of_table(
                "",
                line,
                format!("not valid TOML: {}", e.message()),
            )])
        })?;
        let file = File {
            src,
            doc: doc.get_ref(),
        };
        let (mut problems, config) = file.typed();
        let Some(config) = config else {
            return Err(fail(problems));
        };
        let later = config.semantic_problems().into_iter();
        let missing = env.and_then(|env| config.secrets_with(env).err());
        problems.extend(
            later
                .chain(missing.into_iter().flatten())
                .map(|p| file.place(p)),
        );
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let warnings = config
            .warnings()
            .into_iter()
            .map(|p| file.place_or_table(p))
            .collect();
        Ok(Checked {
            config,
            source_name: source_name.to_string(),
            warnings,
        })
    }

    /// Which environment variable each secret comes from, with its key.
    fn secret_vars(&self) -> Vec<((&'static str, &'static str), &str)> {
        let u = &self.upstream;
        let c = &u.credentials;
        let mut v = Vec::new();
        if !u.lookup_password_env.is_empty() {
            v.push((
                ("upstream", "lookup_password_env"),
                u.lookup_password_env.as_str(),
            ));
        }
        if !c.secret_env.is_empty() {
            v.push((
                ("upstream.credentials", "secret_env"),
                c.secret_env.as_str(),
            ));
        }
        if c.mode == CredentialMode::Basic && !c.password_env.is_empty() {
            v.push((
                ("upstream.credentials", "password_env"),
                c.password_env.as_str(),
            ));
        }
        if c.mode == CredentialMode::Bearer && !c.token_env.is_empty() {
            v.push((("upstream.credentials", "token_env"), c.token_env.as_str()));
        }
        if self.tokens.backend == StoreBackend::Postgres && !self.tokens.postgres_url_env.is_empty()
        {
            v.push((
                ("tokens", "postgres_url_env"),
                self.tokens.postgres_url_env.as_str(),
            ));
        }
        let n = &self.notify;
        if !n.smtp_url_env.is_empty() {
            v.push((("notify", "smtp_url_env"), n.smtp_url_env.as_str()));
        }
        if !n.webhook_secret_env.is_empty() {
            v.push((
                ("notify", "webhook_secret_env"),
                n.webhook_secret_env.as_str(),
            ));
        }
        v
    }

    /// Reads the secrets named by `*_env` keys through `env` (the process
    /// environment in production). Every missing or unusable variable is a
    /// problem of its key.
    pub fn secrets_with(&self, env: Env<'_>) -> Result<Secrets, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut found = HashMap::new();
        for ((table, key), var) in self.secret_vars() {
            let unusable = match env(var) {
                Some(v) if v.is_empty() => "is empty",
                Some(v) if v.bytes().any(|b| b < 0x20 || b == 0x7f) => {
                    "contains control characters"
                }
                Some(v) => {
                    found.insert(key, Secret::new(v));
                    continue;
                }
                None => "is not set",
            };
            let message = format!("environment variable {var} {unusable}");
            problems.push(Problem::at(table, key, message));
        }
        // The mail server's URL must be one: said now, not at the first notice.
        let smtp_url = match found.remove("smtp_url_env") {
            Some(url) => match SmtpUrl::parse(url.expose()) {
                Ok(parsed) => Some(parsed),
                Err(why) => {
                    let var = &self.notify.smtp_url_env;
                    problems.push(Problem::at(
                        "notify",
                        "smtp_url_env",
                        format!("environment variable {var} {why}"),
                    ));
                    None
                }
            },
            None => None,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Secrets {
            lookup_password: found.remove("lookup_password_env"),
            identity_secret: found.remove("secret_env"),
            service_password: found.remove("password_env"),
            service_token: found.remove("token_env"),
            postgres_url: found.remove("postgres_url_env"),
            smtp_url,
            webhook_secret: found.remove("webhook_secret_env"),
        })
    }

    /// [`Config::secrets_with`] on the process environment.
    pub fn secrets(&self) -> Result<Secrets, Vec<Problem>> {
        self.secrets_with(&|var| std::env::var(var).ok())
    }
}

/// A configuration file's name (for messages) and text.
fn read_source(path: &Path) -> Result<(String, String), ConfigError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => Ok((name, src)),
        Err(e) => Err(ConfigError {
            source_name: name,
            problems: vec![Problem::of_table(
                "",
                None,
                format!("cannot read the file: {e}"),
            )],
        }),
    }
}

/// The text of a file and its TOML document, for finding lines.
struct File<'a, 'i> {
    src: &'a str,
    doc: &'a DeTable<'i>,
}

impl File<'_, '_> {
    /// The document as a [`Config`], with every unknown key and wrong type
    /// reported. Keys already reported are dropped first, so a config (and
    /// the checks after this) still comes out of the rest; `None` when even
    /// that fails.
    fn typed(&self) -> (Vec<Problem>, Option<Config>) {
        let (mut problems, bad_keys) = self.check_keys_and_types();
        let mut clean = self.doc.clone();
        for (section, key) in &bad_keys {
            remove_key(&mut clean, section, key);
        }
        let groups_given =
            lookup_table(&clean, "auth").is_some_and(|t| t.get("admin_groups").is_some());
        match Config::deserialize(toml::de::Deserializer::from(Spanned::new(0..0, clean))) {
            Ok(mut config) => {
                if !groups_given {
                    config.auth.admin_groups = default_admin_groups(config.upstream.product);
                }
                (problems, Some(config))
            }
            Err(e) => {
                let line = e.span().map(|s| line_of(self.src, s.start));
                problems.push(Problem::of_table("", line, e.message()));
                (problems, None)
            }
        }
    }

    /// Checks each key on its own, so that one file yields all its unknown
    /// keys and type errors instead of the first only. Also returns the
    /// offending `(table, key)` pairs (table "" for the top level).
    fn check_keys_and_types(&self) -> (Vec<Problem>, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let mut bad = Vec::new();
        let known_top: Vec<&str> = SECTIONS
            .iter()
            .filter(|(n, _)| !n.contains('.'))
            .map(|(n, _)| *n)
            .collect();
        for (key, value) in self.doc.iter() {
            let name: &str = key.get_ref();
            let line = Some(self.line_at(key.span().start));
            if !known_top.contains(&name) {
                problems.push(Problem::of_table(
                    "",
                    line,
                    format!(
                        "unknown table or key `{name}` (known tables: {})",
                        known_top.join(", ")
                    ),
                ));
                bad.push((String::new(), name.to_string()));
            } else if !value.get_ref().is_table() {
                let message = format!("`{name}` must be a table, [{name}]");
                problems.push(Problem::of_table(name, line, message));
                bad.push((String::new(), name.to_string()));
            }
        }
        for (section, check) in SECTIONS {
            let Some(table) = lookup_table(self.doc, section) else {
                continue;
            };
            let nested: Vec<&str> = SECTIONS
                .iter()
                .filter_map(|(n, _)| n.strip_prefix(section).and_then(|r| r.strip_prefix('.')))
                .collect();
            for (key, value) in table.iter() {
                let name: &str = key.get_ref();
                if nested.contains(&name) && value.get_ref().is_table() {
                    continue;
                }
                let mut single = DeTable::new();
                single.insert(key.clone(), value.clone());
                let Err(e) = check(single) else {
                    continue;
                };
                let message = e.message();
                let mut problem = match message.strip_prefix("unknown field") {
                    Some(rest) => {
                        let expected = rest
                            .split_once(", expected")
                            .map(|(_, r)| r.trim())
                            .unwrap_or("");
                        let message =
                            format!("unknown key `{name}` in [{section}] (expected {expected})");
                        Problem::of_table(section, None, message)
                    }
                    None => Problem::at(section, name, message),
                };
                problem.line = Some(self.line_at(key.span().start));
                problems.push(problem);
                bad.push((section.to_string(), name.to_string()));
            }
        }
        (problems, bad)
    }

    /// `problem` on the line of its key, when the key is in the file.
    fn place(&self, mut problem: Problem) -> Problem {
        if problem.line.is_none() {
            problem.line = self.line_of_key(&problem.table, &problem.key);
        }
        problem
    }

    /// [`File::place`], or on its table's line when the key is left at its
    /// default (a warning may be about a key that is not in the file).
    fn place_or_table(&self, problem: Problem) -> Problem {
        let mut problem = self.place(problem);
        if problem.line.is_none() {
            let (parent, name) = problem
                .table
                .rsplit_once('.')
                .unwrap_or(("", &problem.table));
            problem.line = self.line_of_key(parent, name);
        }
        problem
    }

    /// The line of `key` in `table` (dotted; "" for the top level).
    fn line_of_key(&self, table: &str, key: &str) -> Option<usize> {
        let t = match table {
            "" => self.doc,
            dotted => lookup_table(self.doc, dotted)?,
        };
        let (k, _) = t.get_key_value(key)?;
        Some(self.line_at(k.span().start))
    }

    fn line_at(&self, offset: usize) -> usize {
        line_of(self.src, offset)
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

type CheckFn = fn(DeTable<'_>) -> Result<(), toml::de::Error>;

fn check_as<T: DeserializeOwned>(table: DeTable<'_>) -> Result<(), toml::de::Error> {
    T::deserialize(toml::de::Deserializer::from(Spanned::new(0..0, table))).map(|_| ())
}

/// The tables of the file and the type that checks each; a nested table is
/// checked on its own, not as a key of its parent.
const SECTIONS: &[(&str, CheckFn)] = &[
    ("server", check_as::<ServerConfig>),
    ("upstream", check_as::<UpstreamConfig>),
    ("upstream.credentials", check_as::<CredentialsConfig>),
    ("tokens", check_as::<TokensConfig>),
    ("auth", check_as::<AuthConfig>),
    ("log", check_as::<LogConfig>),
    ("ui", check_as::<UiConfig>),
    ("notify", check_as::<NotifyConfig>),
];

fn remove_key(doc: &mut DeTable<'_>, section: &str, key: &str) {
    let mut table = doc;
    if !section.is_empty() {
        for part in section.split('.') {
            match table.get_mut(part).map(|v| v.get_mut()) {
                Some(DeValue::Table(t)) => table = t,
                _ => return,
            }
        }
    }
    table.remove(key);
}

fn lookup_table<'a, 'i>(doc: &'a DeTable<'i>, dotted: &str) -> Option<&'a DeTable<'i>> {
    let mut table = doc;
    for part in dotted.split('.') {
        match table.get(part).map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => table = t,
            _ => return None,
        }
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml("empty", "").unwrap();
        assert_eq!(c.server.listen.port(), 8443);
        assert_eq!(c.tokens.prefix, "tg");
        assert_eq!(c.auth.admin_groups, vec!["jira-administrators".to_string()]);
    }

    #[test]
    fn admin_groups_default_by_product_and_an_explicit_list_wins() {
        let groups = |src: &str| Config::from_toml("f", src).unwrap().auth.admin_groups;
        assert_eq!(
            groups("[upstream]\nproduct = \"confluence\"\n"),
            vec!["confluence-administrators".to_string()]
        );
        assert_eq!(
            groups("[upstream]\nproduct = \"jira\"\n"),
            vec!["jira-administrators".to_string()]
        );
        assert_eq!(
            groups(
                "[upstream]\nproduct = \"confluence\"\n[auth]\nadmin_groups = [\"wiki-admins\"]\n"
            ),
            vec!["wiki-admins".to_string()]
        );
        assert!(groups("[auth]\nadmin_groups = []\n").is_empty());
    }

    #[test]
    fn a_missing_secret_is_reported_with_every_other_problem() {
        let src = "[upstream]\nurl = \"https://jira:99999\"\nbogus = 1\n[upstream.credentials]\nsecret_header_name = \"X-S\"\nsecret_env = \"UNSET_VAR\"\n";
        let err = Config::check("f", src, &|_| None).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(text.contains("f:2: [upstream] url:"), "{text}");
        assert!(text.contains("f:3: unknown key `bogus`"), "{text}");
        assert!(
            text.contains(
                "f:6: [upstream.credentials] secret_env: environment variable UNSET_VAR is not set"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_empty_or_unprintable_secret_is_a_problem_of_its_key() {
        let mut c = Config::default();
        c.upstream.lookup_user = "svc".into();
        c.upstream.lookup_password_env = "P".into();
        for (value, says) in [("", "is empty"), ("a\nb", "contains control characters")] {
            let problems = c.secrets_with(&|_| Some(value.into())).unwrap_err();
            assert_eq!(
                problems,
                [Problem::at(
                    "upstream",
                    "lookup_password_env",
                    format!("environment variable P {says}")
                )]
            );
        }
        let secrets = c.secrets_with(&|_| Some("pw".into())).unwrap();
        assert_eq!(secrets.lookup_password.unwrap().expose(), "pw");
    }

    #[test]
    fn every_problem_reported_with_its_line() {
        let src = "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\nidle_timeout_ms = \"x\"\n[upstream]\nurl = \"ftp://x\"\n";
        let err = Config::from_toml("f.toml", src).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(
            text.contains("f.toml:3: unknown key `bogus` in [server]"),
            "{text}"
        );
        assert!(
            text.contains("f.toml:4: [server] idle_timeout_ms: invalid type"),
            "{text}"
        );
        assert!(
            text.contains("f.toml:6: [upstream] url: \"ftp://x\": scheme \"ftp\""),
            "{text}"
        );
        let keys: Vec<(&str, &str)> = err
            .problems
            .iter()
            .map(|p| (p.table.as_str(), p.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("server", ""),
                ("server", "idle_timeout_ms"),
                ("upstream", "url")
            ]
        );
    }

    #[test]
    fn nested_table_keys_checked() {
        let err = Config::from_toml(
            "f",
            "[upstream.credentials]\nmode = \"magic\"\nextra = true\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("f:2: [upstream.credentials] mode: unknown variant `magic`"),
            "{text}"
        );
        assert!(
            text.contains("f:3: unknown key `extra` in [upstream.credentials]"),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_is_not_toml_or_has_a_stray_key_is_told_so() {
        let err = Config::from_toml("f", "[server\n").unwrap_err();
        assert!(err.to_string().starts_with("f:1: not valid TOML:"), "{err}");
        let err = Config::from_toml("f", "\nlisten = 1\n[log]\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f:2: unknown table or key `listen` (known tables: server,"),
            "{err}"
        );
        let err = Config::from_toml("f", "log = 1\n").unwrap_err();
        assert_eq!(err.to_string(), "f:1: `log` must be a table, [log]");
    }
}
