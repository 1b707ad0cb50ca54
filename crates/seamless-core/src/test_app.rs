//! A small application for the library's own unit tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::{App, AppConfig, BoxError, Identity, Metrics};

/// Answers `GET /` with `message`; `size` sizes its state and is restart-only.
pub(crate) struct TestApp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct TestConfig {
    pub(crate) message: String,
    pub(crate) size: u32,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            message: "hello\n".into(),
            size: 1,
        }
    }
}

impl AppConfig for TestConfig {
    fn restart_only(&self, running: &Self) -> Vec<&'static str> {
        if self.size == running.size {
            vec![]
        } else {
            vec!["size"]
        }
    }
}

/// Counts the routers built from it: once at start, once per applied reload.
#[derive(Debug, Default)]
pub(crate) struct Routers(pub(crate) AtomicU64);

impl App for TestApp {
    const IDENTITY: Identity = Identity {
        name: "example",
        version: "1.0.0",
        description: "",
    };
    type Config = TestConfig;
    type State = Routers;

    async fn state(_: &TestConfig, _: &mut Metrics) -> Result<Routers, BoxError> {
        Ok(Routers::default())
    }

    fn router(state: &Arc<Routers>, config: &TestConfig) -> Router {
        state.0.fetch_add(1, Ordering::Relaxed);
        let message = config.message.clone();
        Router::new()
            .route("/", get(move || async move { message }))
            .route(
                "/sleep",
                get(|| async { tokio::time::sleep(std::time::Duration::from_secs(3600)).await }),
            )
    }
}
