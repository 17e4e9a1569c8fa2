//! The one error type of the kernel crate; the binding maps it to Python exceptions.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum KernelError {
    /// A program was described wrongly: unknown rule, wrong number of hyper-parameters.
    Program(String),
    /// A job's arrays or scalars do not fit its program.
    Shape { job: usize, message: String },
    /// `ClipNorm(throw = true)` met an infinite or NaN norm.
    NonFiniteNorm { job: usize, p: f64, norm: f64 },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Program(message) => write!(f, "{message}"),
            KernelError::Shape { job, message } => write!(f, "job {job}: {message}"),
            KernelError::NonFiniteNorm { job, p, norm } => {
                write!(f, "job {job}: gradient has {p}-norm {norm}")
            }
        }
    }
}

impl std::error::Error for KernelError {}
