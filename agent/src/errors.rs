//! The process exit codes of every `agent` command, in one table, and the error a command
//! reports at its edge (the last thing it prints before it exits). Each command's error type
//! implements [`CommandError`] where it is defined (the daemon's in `crate::server`).
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success: the run succeeded, every file is valid, the daemon stopped cleanly |
//! | 1 | failure: the run failed or was cancelled, some file is invalid (`validate`), the daemon could not start or failed, the server refused or could not be reached |
//! | 2 | invalid input: usage error, invalid workflow or config file, parameters, secrets or directories; nothing was run |

/// Exit code: success.
pub(crate) const EXIT_OK: i32 = 0;
/// Exit code: the run failed or was cancelled, some file is invalid (`validate`), or the
/// command failed (the daemon could not start, the server could not be reached).
pub(crate) const EXIT_FAILED: i32 = 1;
/// Exit code: usage error, invalid workflow file or parameters; nothing was run.
pub(crate) const EXIT_INVALID: i32 = 2;

/// The error a command ends with: what it prints, and the exit code it maps to.
pub(crate) trait CommandError: std::fmt::Display {
    /// The exit code (from the table above).
    fn exit_code(&self) -> i32;
}

/// Prints `err` as the command's last word on stderr (`error: ...`) and returns its exit code.
pub(crate) fn report(err: &dyn CommandError) -> i32 {
    eprintln!("error: {err}");
    err.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the documented codes the acceptance tests and scripts rely on.
    #[test]
    fn the_table() {
        assert_eq!((EXIT_OK, EXIT_FAILED, EXIT_INVALID), (0, 1, 2));
    }
}
