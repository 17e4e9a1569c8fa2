//! `_core.gather` and `_core.scatter`: the copies of `destructure`,
//! `Restructure` and `Restructure.flatten`. Extract, call with the GIL
//! released, convert; the work is in `optimisers_kernels::flat`.

use numpy::prelude::*;
use numpy::{PyArrayDyn, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use optimisers_kernels::flat::{self, Dst, Piece, Src};

use crate::errors;

/// A borrowed float32 or float64 array, read-only.
enum Readonly<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

/// A borrowed float32 or float64 array, writable.
enum Readwrite<'py> {
    F32(PyReadwriteArrayDyn<'py, f32>),
    F64(PyReadwriteArrayDyn<'py, f64>),
}

fn context(what: &str) -> impl Fn(PyErr) -> PyErr + '_ {
    move |e| PyValueError::new_err(format!("{what}: {e}"))
}

fn readonly<'py>(a: &Bound<'py, PyAny>, what: &str) -> PyResult<Readonly<'py>> {
    if let Ok(a) = a.cast::<PyArrayDyn<f32>>() {
        return Ok(Readonly::F32(
            a.try_readonly().map_err(|e| context(what)(e.into()))?,
        ));
    }
    if let Ok(a) = a.cast::<PyArrayDyn<f64>>() {
        return Ok(Readonly::F64(
            a.try_readonly().map_err(|e| context(what)(e.into()))?,
        ));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a float32 or float64 NumPy array"
    )))
}

fn readwrite<'py>(a: &Bound<'py, PyAny>, what: &str) -> PyResult<Readwrite<'py>> {
    if let Ok(a) = a.cast::<PyArrayDyn<f32>>() {
        return Ok(Readwrite::F32(
            a.try_readwrite().map_err(|e| context(what)(e.into()))?,
        ));
    }
    if let Ok(a) = a.cast::<PyArrayDyn<f64>>() {
        return Ok(Readwrite::F64(
            a.try_readwrite().map_err(|e| context(what)(e.into()))?,
        ));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a float32 or float64 NumPy array"
    )))
}

impl Readonly<'_> {
    fn src(&self, what: &str) -> PyResult<Src<'_>> {
        let contiguous = |e: numpy::AsSliceError| PyValueError::new_err(format!("{what}: {e}"));
        Ok(match self {
            Readonly::F32(a) => Src::F32(a.as_slice().map_err(contiguous)?),
            Readonly::F64(a) => Src::F64(a.as_slice().map_err(contiguous)?),
        })
    }
}

impl Readwrite<'_> {
    fn dst(&mut self, what: &str) -> PyResult<Dst<'_>> {
        let contiguous = |e: numpy::AsSliceError| PyValueError::new_err(format!("{what}: {e}"));
        Ok(match self {
            Readwrite::F32(a) => Dst::F32(a.as_slice_mut().map_err(contiguous)?),
            Readwrite::F64(a) => Dst::F64(a.as_slice_mut().map_err(contiguous)?),
        })
    }
}

/// A piece as Python passes it: the source is an array, or an int (that many zeros).
enum Given<'py> {
    Array(Readonly<'py>),
    Zeros(usize),
}

/// Write each piece `(offset, src, add)` into the C-contiguous float32 or
/// float64 array `out` at `offset` (element units, in `out` read flat),
/// converting its dtype; `src` is a C-contiguous float32 or float64 array, or
/// an int n for n zeros. With `add` the piece is added to what an earlier
/// piece over the same range wrote. Pieces cover equal or disjoint ranges;
/// elements no piece covers are left as they were.
#[pyfunction]
fn gather<'py>(
    py: Python<'py>,
    out: &Bound<'py, PyAny>,
    pieces: Vec<(usize, Bound<'py, PyAny>, bool)>,
) -> PyResult<()> {
    let mut out = readwrite(out, "out")?;
    let mut given = Vec::with_capacity(pieces.len());
    for (i, (offset, src, add)) in pieces.into_iter().enumerate() {
        let g = if let Ok(n) = src.extract::<usize>() {
            Given::Zeros(n)
        } else {
            Given::Array(readonly(&src, &format!("piece {i}"))?)
        };
        given.push((offset, g, add));
    }
    let mut borrowed = Vec::with_capacity(given.len());
    for (i, (offset, g, add)) in given.iter().enumerate() {
        let src = match g {
            Given::Zeros(n) => Src::Zeros(*n),
            Given::Array(a) => a.src(&format!("piece {i}"))?,
        };
        borrowed.push(Piece {
            offset: *offset,
            src,
            add: *add,
        });
    }
    let out = out.dst("out")?;
    errors::released(py, None, || flat::gather(out, &borrowed))
}

/// Copy `flat[offset : offset + part.size]` into each `(offset, part)`,
/// converting to the part's dtype. `flat` and every part are C-contiguous
/// float32 or float64 arrays, the parts writable and apart from `flat`.
#[pyfunction]
fn scatter<'py>(
    py: Python<'py>,
    flat: &Bound<'py, PyAny>,
    parts: Vec<(usize, Bound<'py, PyAny>)>,
) -> PyResult<()> {
    let flat = readonly(flat, "flat")?;
    let mut borrowed = Vec::with_capacity(parts.len());
    for (i, (offset, part)) in parts.into_iter().enumerate() {
        borrowed.push((offset, readwrite(&part, &format!("part {i}"))?));
    }
    let mut dsts = Vec::with_capacity(borrowed.len());
    for (i, (offset, part)) in borrowed.iter_mut().enumerate() {
        dsts.push((*offset, part.dst(&format!("part {i}"))?));
    }
    let src = flat.src("flat")?;
    errors::released(py, None, || flat::scatter(src, dsts))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gather, m)?)?;
    m.add_function(wrap_pyfunction!(scatter, m)?)
}
