//! The one error type of `ccpop`: every failure a person can cause is one line.
//!
//! (`Display` is written out rather than derived with thiserror, so the crate needs no
//! dependency beyond those the workspace gave it.)

use std::fmt;

/// Everything `ccpop` fails with. `main` prints `ccpop: <message>` on one line and exits with
/// [`Error::exit_code`].
#[derive(Debug)]
pub enum Error {
    /// The KVM device cannot be opened.
    NoKvm {
        /// The device path (`/dev/kvm`).
        device: String,
        /// Why.
        why: String,
    },
    /// KVM lacks a capability the demo needs.
    KvmLacks {
        /// What the demo needs.
        need: &'static str,
        /// What the kernel answered.
        answer: String,
        /// The running kernel's release.
        release: String,
    },
    /// A KVM ioctl failed.
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The ioctl's error.
        source: kvm_ioctls::Error,
    },
    /// A guest_memfd operation failed.
    Gmem {
        /// What was being done.
        what: String,
        /// gmem's error.
        source: gmem::Error,
    },
    /// A plan was refused.
    Plan(cc_populate::PlanError),
    /// Populating stopped.
    Run(String),
    /// The check guest failed to run.
    Check(guest_check::Error),
    /// A file could not be read.
    Io {
        /// The file (or what was being allocated).
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Something about the arguments that clap cannot check.
    Usage(String),
    /// A platform library refused the input (its message names the range or field).
    Platform(String),
    /// The guest saw other bytes than were populated.
    Mismatch(String),
    /// `ccpop diff`: the traces differ (the first difference).
    Differ(String),
    /// `ccpop check`: what was signed is not the launch expected (the first difference).
    NoMatch(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::KvmLacks {
                need,
                answer,
                release,
            } => write!(
                f,
                "`ccpop demo` needs {need}, which this kernel ({release}) does not offer: \
                 {answer}; run it in the KVM lab instead: bash lab/run --kernel 7.3 (lab/README.md)"
            ),
            Error::NoKvm { device, why } => write!(
                f,
                "{device} cannot be opened ({why}): `ccpop demo` needs KVM on this machine"
            ),
            Error::Kvm { what, source } => write!(f, "{what}: {source}"),
            Error::Gmem { what, source } => write!(f, "{what}: {source}"),
            Error::Plan(e) => write!(f, "plan refused: {e}"),
            Error::Run(e) => write!(f, "populating stopped: {e}"),
            Error::Check(e) => write!(f, "check guest: {e}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Usage(m) | Error::Platform(m) => f.write_str(m),
            Error::Mismatch(m) => write!(f, "verification failed: {m}"),
            Error::Differ(m) => write!(f, "the traces differ: {m}"),
            Error::NoMatch(m) => write!(f, "not the expected launch: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<cc_populate::PlanError> for Error {
    fn from(e: cc_populate::PlanError) -> Error {
        Error::Plan(e)
    }
}

impl From<guest_check::Error> for Error {
    fn from(e: guest_check::Error) -> Error {
        Error::Check(e)
    }
}

impl Error {
    /// The process exit code: 1 for a verification mismatch, 2 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Mismatch(_) | Error::Differ(_) | Error::NoMatch(_) => 1,
            _ => 2,
        }
    }

    /// A gmem error while doing `what`.
    pub fn gmem(what: impl Into<String>, source: gmem::Error) -> Error {
        Error::Gmem {
            what: what.into(),
            source,
        }
    }
}

/// The message on one line: any line breaks a library put in become `; `.
pub fn one_line(e: &Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_codes_follow_the_kind() {
        let e = Error::Usage("first\n  second\n\nthird".into());
        assert_eq!(one_line(&e), "first; second; third");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(Error::Mismatch("x".into()).exit_code(), 1);
        let io = Error::Io {
            path: "/no/such".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(io.to_string(), "/no/such: entity not found");
    }
}
