//! Reference kernels for `benches/`: `_core._copy` and `_core._roofline`.
//! Not part of the public API. Extract, call with the GIL released, convert.

use numpy::{PyArrayDyn, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use optimisers_kernels::bandwidth;
use optimisers_kernels::Float;

use crate::errors;

fn contiguous(what: &str) -> impl Fn(numpy::AsSliceError) -> PyErr + '_ {
    move |e| PyValueError::new_err(format!("{what}: {e}"))
}

/// Copy `src` into `dst` (both C-contiguous `uint8` arrays of one length, e.g.
/// `a.view(numpy.uint8)`) over the thread pool; `stream` uses non-temporal stores.
#[pyfunction]
#[pyo3(signature = (dst, src, stream = true))]
#[allow(clippy::needless_pass_by_value)] // PyO3 hands extracted arguments over by value
fn _copy(
    py: Python<'_>,
    mut dst: PyReadwriteArrayDyn<'_, u8>,
    src: PyReadonlyArrayDyn<'_, u8>,
    stream: bool,
) -> PyResult<()> {
    let d = dst.as_slice_mut().map_err(contiguous("dst"))?;
    let s = src.as_slice().map_err(contiguous("src"))?;
    errors::released(py, None, || bandwidth::copy(d, s, stream))
}

fn writeable<'py, T: Float + numpy::Element>(
    a: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    a.extract()
        .map_err(|_| PyTypeError::new_err(format!("{what} is not a writeable array of x's dtype")))
}

fn roofline<T: Float + numpy::Element>(
    py: Python<'_>,
    arrays: [&Bound<'_, PyAny>; 4],
) -> PyResult<()> {
    let [x, g, m, v] = arrays;
    let (mut x, mut m, mut v) = (
        writeable::<T>(x, "x")?,
        writeable::<T>(m, "m")?,
        writeable::<T>(v, "v")?,
    );
    let g: PyReadonlyArrayDyn<'_, T> = g
        .extract()
        .map_err(|_| PyTypeError::new_err("g is not an array of x's dtype"))?;
    let x = x.as_slice_mut().map_err(contiguous("x"))?;
    let g = g.as_slice().map_err(contiguous("g"))?;
    let m = m.as_slice_mut().map_err(contiguous("m"))?;
    let v = v.as_slice_mut().map_err(contiguous("v"))?;
    errors::released(py, None, || bandwidth::roofline(x, g, m, v))
}

/// Adam's memory traffic with trivial arithmetic over float32 or float64
/// arrays, in place: `m += g; v += g; x -= m + v`.
#[pyfunction]
fn _roofline(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    g: &Bound<'_, PyAny>,
    m: &Bound<'_, PyAny>,
    v: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let arrays = [x, g, m, v];
    if x.cast::<PyArrayDyn<f32>>().is_ok() {
        roofline::<f32>(py, arrays)
    } else if x.cast::<PyArrayDyn<f64>>().is_ok() {
        roofline::<f64>(py, arrays)
    } else {
        Err(PyTypeError::new_err(
            "x must be a float32 or float64 NumPy array",
        ))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_copy, m)?)?;
    m.add_function(wrap_pyfunction!(_roofline, m)?)
}
