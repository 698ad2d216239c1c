use std::path::PathBuf;
use std::time::Duration;

/// What went wrong in the sandbox, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    CommandTimeout { command: String, timeout: Duration },
    #[error("could not start `{command}`: {source} (is it installed? run `cargo xtask setup`)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("daemon {name} exited ({status}); last log lines:\n{log_tail}")]
    DaemonDied {
        name: String,
        status: String,
        log_tail: String,
    },
    #[error("unexpected output from `{command}`: {detail}")]
    Parse { command: String, detail: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Io { path, source }
}
