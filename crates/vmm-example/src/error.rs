//! What can go wrong in the VMM's launch.

/// An error of the VMM's launch, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The IGVM file was refused, or could not be measured.
    #[error("IGVM image: {0}")]
    Image(#[from] cc_image::Error),
    /// The plan built from the image was refused (a region outside the VMM's memslots, ...).
    #[error("populate plan: {0}")]
    Plan(#[from] cc_populate::PlanError),
    /// The populate run stopped; the report says what was done and where it stopped.
    #[error("populate: {0}")]
    Populate(Box<cc_populate::RunError>),
    /// The SEV-SNP launch refused a step (on a host without SEV-SNP:
    /// [`sev_backend::Error::NotSupported`]).
    #[error("SEV-SNP: {0}")]
    Sev(#[from] sev_backend::Error),
    /// A `KVM_MEMORY_ENCRYPT_OP` command the VMM issued itself failed.
    #[error("{cmd}: {}, firmware status {fw_error:#x}", std::io::Error::from_raw_os_error(*errno))]
    Command {
        /// The command.
        cmd: &'static str,
        /// The ioctl's errno.
        errno: i32,
        /// The firmware status the kernel reported (0: none).
        fw_error: u32,
    },
    /// A system call of the VMM failed.
    #[error("{op}: {}", std::io::Error::from_raw_os_error(*errno))]
    Os {
        /// What was being done.
        op: String,
        /// The errno.
        errno: i32,
    },
    /// The page-per-call loop cannot populate a page: its role has no SEV-SNP page type, or
    /// the kernel answered success without populating it.
    #[error("page at {gpa:#x}: {reason}")]
    Page {
        /// The page's address.
        gpa: u64,
        /// Why.
        reason: String,
    },
    /// The VMM's guest_memfd handle could not be lent.
    #[error("guest_memfd: {0}")]
    Gmem(#[from] gmem::Error),
    /// The VMM's guest memory could not be made or accessed.
    #[error("guest memory: {0}")]
    Memory(String),
}

impl From<cc_populate::RunError> for Error {
    fn from(e: cc_populate::RunError) -> Self {
        Error::Populate(Box::new(e))
    }
}

impl Error {
    /// Whether the host cannot launch SEV-SNP guests at all (no `KVM_X86_SNP_VM`, no
    /// `/dev/sev`): what every launch on a machine without SEV-SNP ends in.
    pub fn is_not_supported(&self) -> bool {
        matches!(self, Error::Sev(sev_backend::Error::NotSupported { .. }))
    }
}
