//! tokengate: an API-token authentication gateway in front of Jira and Confluence.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod secret;
pub mod token;
pub mod store;
pub mod error;
pub mod net;
pub mod proxy;
pub mod server;
pub mod metrics;
pub mod auth;
