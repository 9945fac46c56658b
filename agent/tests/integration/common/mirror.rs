//! Mirror operations for tests, each on its own thread with a bound, so that libgit2 waiting
//! forever (for credentials, or on a silent remote) fails the test instead of hanging it.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use agent::config::Credentials;
use agent::daemon::{Mirror, MirrorError};

/// How long any one mirror operation may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and fails the test if it takes longer than [`BOUND`].
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(BOUND) {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {BOUND:?}"),
    }
}

/// Opens or clones the mirror `name` of `url` under `state`, bounded.
pub fn clone(
    state: &Path,
    name: &str,
    url: &str,
    credentials: Option<Credentials>,
) -> Result<Mirror, MirrorError> {
    let (state, name, url) = (state.to_path_buf(), name.to_string(), url.to_string());
    bounded("clone", move || {
        Mirror::open_or_clone_with(&state, &name, &url, credentials.as_ref())
    })
}
