//! An in-process daemon (booted through `server::run`, as the binary is) honours
//! `limits.fetch_timeout`: its libgit2 timeouts were only set by the `agent daemon` command,
//! so a daemon booted in-process fetched from a silent remote for ever. Runs in a process of
//! its own: libgit2's timeouts are process-wide.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads `/metrics` with the token; `None` while the daemon is not answering.
async fn metrics(addr: &str) -> Option<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await.ok()?;
    Some(body)
}

#[test]
fn an_in_process_daemon_honours_fetch_timeout() {
    crate::common::in_own_process(
        "server_fetch_timeout::an_in_process_daemon_honours_fetch_timeout",
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(honours_fetch_timeout())
        },
    );
}

async fn honours_fetch_timeout() {
    // A remote that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            let mut c = conn.try_clone().expect("clone");
            held.push(conn);
            // Never answers; reading keeps the connection open until the client gives up.
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "state_dir: state\nlisten: 127.0.0.1:0\napi_token: t\nrepos:\n  - name: silent\n    \
         url: git://127.0.0.1:{port}/silent.git\n    poll_interval: 1s\nlimits:\n  fetch_timeout: 1s\n"
    );
    let config = agent::config::Config::parse_str("agent.yaml", &text, dir.path())
        .unwrap_or_else(|d| panic!("config: {}", d.render()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(agent::server::run(config, async move {
        let _ = stopped.await;
    }));
    let addr_file = agent::state_dir::addr_file(&dir.path().join("state"));
    // Generous: a loaded machine; without the timeout the fetch never fails at all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file)
            && let Some(text) = metrics(addr.trim()).await
        {
            if text.lines().any(|l| {
                l.starts_with("agent_git_fetch_errors_total{repo=\"silent\"} ")
                    && !l.ends_with(" 0")
            }) {
                break;
            }
            last = text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fetch of the silent remote timed out:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(60), daemon)
        .await
        .expect("daemon stops")
        .expect("daemon task");
    assert!(result.is_ok(), "{result:?}");
}
