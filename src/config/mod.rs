//! `proxy.toml`: what it may say and its defaults ([`schema`]), how a file
//! and the secrets it names are read ([`load`]), and the checks that
//! `tokengate check-config` and start-up share ([`validate`]).
//!
//! Reading collects *every* problem of a file (unknown key, wrong type, bad
//! value, and with [`Config::check`] a missing secret), each a [`Problem`]
//! with its table, key and line, so an operator fixes a file in one round.
//! Secrets never live in the file: keys ending in `_env` name an environment
//! variable, read by [`Config::secrets`].

mod load;
mod schema;
mod validate;

use std::fmt;

pub use crate::header_names::normalize_header_name;
pub use load::{Checked, Env, Secrets};
pub use schema::{
    AuthConfig, Config, CredentialMode, CredentialsConfig, LogConfig, LogFormat, NotifyConfig,
    Product, ServerConfig, SmtpTls, SmtpUrl, StoreBackend, TokensConfig, UiConfig, UpstreamConfig,
    UpstreamUrl, default_admin_groups, parse_cidr,
};

/// One thing wrong with a configuration (or, among [`Checked::warnings`],
/// risky about it): what the file-reading commands print, one a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The table, dotted (`upstream.credentials`); empty for the file as a whole.
    pub table: String,
    /// The key of `table` the message is about; empty when it is about the
    /// table or the file itself (an unknown key is its table's problem:
    /// tokengate has no such key).
    pub key: String,
    /// The line in the file, when there is a file and the key is in it.
    pub line: Option<usize>,
    /// What is wrong, without the table and key.
    pub message: String,
}

impl Problem {
    /// A problem with the value of `[table] key`; its line is looked up in
    /// the file, if there is one.
    pub fn at(table: &str, key: &str, message: impl Into<String>) -> Problem {
        Problem {
            table: table.into(),
            key: key.into(),
            line: None,
            message: message.into(),
        }
    }

    /// A problem of a whole table (`table` empty: the whole file), said in
    /// full by `message`.
    pub fn of_table(table: &str, line: Option<usize>, message: impl Into<String>) -> Problem {
        Problem {
            table: table.into(),
            key: String::new(),
            line,
            message: message.into(),
        }
    }

    /// `file:line: ` (or `file: `) and `tag` before the problem, as
    /// compilers and editors print one.
    fn write_located(&self, f: &mut fmt::Formatter<'_>, file: &str, tag: &str) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{file}:{line}: {tag}{self}"),
            None => write!(f, "{file}: {tag}{self}"),
        }
    }
}

/// `[table] key: message`, or the message alone for a table or the file.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "[{}] {}: {}", self.table, self.key, self.message)
        }
    }
}

impl std::error::Error for Problem {}

/// Problems said on one line, `; ` between them: for a log line or an
/// error that has no file to point into.
pub fn one_line(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

/// One problem a line, each `file:line: ...`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            p.write_located(f, &self.source_name, "")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A warning as `check-config` and `serve` print it: `file:line: warning: ...`.
pub struct Warning<'a> {
    source_name: &'a str,
    problem: &'a Problem,
}

impl fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.problem.write_located(f, self.source_name, "warning: ")
    }
}
