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

/// The one way a heavy call leaves Python: `work` runs with the GIL released
/// (other Python threads run meanwhile), and its error becomes a Python
/// exception, naming jobs by the caller's `index` when given.
pub fn released<R: Send>(
    py: Python<'_>,
    index: Option<&[usize]>,
    work: impl FnOnce() -> Result<R, KernelError> + pyo3::marker::Ungil,
) -> PyResult<R> {
    py.detach(work).map_err(|e| match index {
        Some(index) => with_job(e, index),
        None => to_py(e),
    })
}
