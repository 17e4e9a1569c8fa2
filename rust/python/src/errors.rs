//! Where kernel errors become Python exceptions: the one place they cross.

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use optimisers_kernels::KernelError;

create_exception!(
    _core,
    NonFiniteNormError,
    PyValueError,
    "ClipNorm(throw=True) met an infinite or NaN norm; args are (job, p, norm)."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add(
        "NonFiniteNormError",
        m.py().get_type::<NonFiniteNormError>(),
    )
}

pub fn to_py(e: KernelError) -> PyErr {
    match e {
        KernelError::Program(message) => PyValueError::new_err(message),
        KernelError::Shape { .. } => PyValueError::new_err(e.to_string()),
        KernelError::NonFiniteNorm { job, p, norm } => NonFiniteNormError::new_err((job, p, norm)),
    }
}

/// As `to_py`, with the kernel's job number mapped back to the caller's.
pub fn with_job(e: KernelError, index: &[usize]) -> PyErr {
    match e {
        KernelError::NonFiniteNorm { job, p, norm } => to_py(KernelError::NonFiniteNorm {
            job: index[job],
            p,
            norm,
        }),
        KernelError::Shape { job, message } => to_py(KernelError::Shape {
            job: index[job],
            message,
        }),
        KernelError::Program(_) => PyRuntimeError::new_err(e.to_string()),
    }
}
