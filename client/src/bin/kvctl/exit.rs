//! How `kvctl` ends: its exit codes (DESIGN §5) and the failures that map to them. Every
//! subcommand returns these, so they live in a leaf module the subcommands import, not in `main`.

/// How `kvctl` exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Success = 0,
    /// 1: a definite failure: nothing changed, or the answer is "no" (key not found, compare
    /// failed, server refused the request).
    Failure = 1,
    /// 2: the command line is wrong (clap uses the same code for its own errors).
    Usage = 2,
    /// 3: no answer in time: a write may or may not have been applied.
    Unknown = 3,
}

/// Why a command failed: a client error (mapped to an exit code by kind) or anything else.
#[derive(Debug)]
pub enum Failure {
    /// An error from the client library.
    Client(raftkv_client::Error),
    /// A local problem (files, child processes, stdin); exits with 1.
    Other(String),
    /// A flag that cannot be used (e.g. a TLS file that is missing or does not match); exits
    /// with 2.
    Usage(String),
}

impl From<raftkv_client::Error> for Failure {
    fn from(error: raftkv_client::Error) -> Self {
        Failure::Client(error)
    }
}

impl Failure {
    /// The exit code this failure maps to (DESIGN §5).
    pub fn exit(&self) -> Exit {
        use raftkv_client::Error;
        match self {
            Failure::Client(e) if e.is_outcome_unknown() => Exit::Unknown,
            Failure::Client(Error::NoEndpoints | Error::InvalidEndpoint { .. }) => Exit::Usage,
            Failure::Usage(_) => Exit::Usage,
            Failure::Client(_) | Failure::Other(_) => Exit::Failure,
        }
    }

    /// The error kind `--json` output reports.
    pub fn kind(&self) -> &'static str {
        match self.exit() {
            Exit::Unknown => "outcome_unknown",
            Exit::Usage => "usage",
            _ => "failure",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A failed handshake: what went wrong, and the flags that fix it.
            Failure::Client(raftkv_client::Error::Tls(reason)) => write!(
                f,
                "TLS: {reason}; check --cacert/--cert/--key (or RAFTKV_CACERT/RAFTKV_CERT/RAFTKV_KEY)"
            ),
            // A plain client at a TLS port sees HTTP/2 garbage: say what is likely wrong.
            Failure::Client(
                e @ (raftkv_client::Error::Timeout { last_error, .. }
                | raftkv_client::Error::OutcomeUnknown { last_error, .. }),
            ) if last_error.contains("h2 protocol error") => {
                write!(f, "{e} (does the node use TLS? then pass --cacert)")
            }
            Failure::Client(e) => e.fmt(f),
            Failure::Other(message) | Failure::Usage(message) => f.write_str(message),
        }
    }
}
