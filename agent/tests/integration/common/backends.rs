//! Runs a store test on each backend: the embedded SQLite file and PostgreSQL (a fresh
//! database on the test server of `agent::store::test_pg`).

use agent::store::Db;

/// A fresh, empty store on one backend.
pub struct Fresh {
    /// `sqlite` or `postgres`.
    pub name: &'static str,
    dir: tempfile::TempDir,
    url: Option<String>,
}

impl Fresh {
    /// A new connection to this store.
    pub fn open(&self) -> Db {
        match &self.url {
            None => Db::open_in_dir(self.dir.path()).expect("open the SQLite store"),
            Some(url) => Db::connect_postgres(url).expect("connect to the PostgreSQL store"),
        }
    }
}

/// A fresh SQLite store and a fresh PostgreSQL store.
pub fn fresh() -> [Fresh; 2] {
    [
        Fresh {
            name: "sqlite",
            dir: tempfile::tempdir().expect("tempdir"),
            url: None,
        },
        Fresh {
            name: "postgres",
            dir: tempfile::tempdir().expect("tempdir"),
            url: Some(agent::store::test_pg::database_url()),
        },
    ]
}

/// Runs `test` on a fresh store of each backend; a failure names the backend it failed on.
pub fn on_each_backend(test: impl Fn(&Fresh)) {
    for backend in fresh() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&backend)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("on the {} store: {message}", backend.name);
        }
    }
}
