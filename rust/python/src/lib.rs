//! `optimisers._core`: the `PyO3` face of the kernel crate. Extract, call, convert;
//! no maths here. Errors cross into Python in `errors`.

use numpy::prelude::*;
use numpy::{Element, PyArrayDyn, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::collections::HashMap;

use optimisers_kernels as kernels;
use optimisers_kernels::{Float, Kind, Step};

mod bench;
mod errors;
mod flat;
mod plan;

use errors::to_py;

/// The element type a program computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arith {
    Single,
    Double,
    /// float16 arithmetic on float32 buffers (for float16 parameters).
    Half,
}

/// A rule or chain as the kernels run it, built once per rule and dtype.
#[pyclass(module = "optimisers._core", frozen)]
struct Program {
    inner: kernels::Program,
    element: Arith,
}

#[pymethods]
impl Program {
    /// `steps`: a list of `(name, hyper)` pairs, `hyper` a dict of floats by
    /// hyper-parameter name: a rule of `_core.rules()` or a reduction of
    /// `_core.reductions()`, e.g. `("ClipNorm", {"omega": ω, "p": p, "throw": 0 or 1})`.
    /// `dtype`: "float32", "float64", or "float16", whose jobs (given as
    /// float32 buffers) compute in float16 arithmetic.
    #[new]
    fn new(steps: Vec<(String, HashMap<String, f64>)>, dtype: &str) -> PyResult<Self> {
        let element = match dtype {
            "float32" => Arith::Single,
            "float64" => Arith::Double,
            "float16" => Arith::Half,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "no kernel for dtype {dtype:?}"
                )))
            }
        };
        let steps = steps
            .into_iter()
            .map(|(name, hyper)| {
                let hyper: Vec<(String, f64)> = hyper.into_iter().collect();
                Step::named(&name, &hyper).map_err(to_py)
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self {
            inner: kernels::Program::new(steps).map_err(to_py)?,
            element,
        })
    }

    #[getter]
    fn half(&self) -> bool {
        self.element == Arith::Half
    }

    /// A leaf's per-leaf scalars after a step, and whether the update went
    /// through (false when an `AccumGrad` held it back).
    fn advance(&self, mut per_leaf: Vec<f64>) -> PyResult<(Vec<f64>, bool)> {
        if per_leaf.len() != self.inner.per_leaf() {
            return Err(PyValueError::new_err(format!(
                "the program takes {} per-leaf scalars, got {}",
                self.inner.per_leaf(),
                per_leaf.len()
            )));
        }
        let through = self.element.advance(&self.inner, &mut per_leaf);
        Ok((per_leaf, through))
    }

    /// State arrays per leaf, in step order.
    #[getter]
    fn states(&self) -> usize {
        self.inner.states()
    }

    /// Per-leaf scalars per leaf, in step order.
    #[getter]
    fn per_leaf(&self) -> usize {
        self.inner.per_leaf()
    }

    /// Leading state arrays that a failing norm may leave advanced.
    #[getter]
    fn states_before_last_norm(&self) -> usize {
        self.inner.states_before_last_norm()
    }

    fn __repr__(&self) -> String {
        format!("Program({:?})", self.inner.steps())
    }
}

impl Arith {
    fn advance(self, program: &kernels::Program, per_leaf: &mut [f64]) -> bool {
        match self {
            Arith::Single => program.advance::<f32>(per_leaf),
            Arith::Double => program.advance::<f64>(per_leaf),
            Arith::Half => program.advance::<kernels::Half>(per_leaf),
        }
    }
}

/// One job as Python passes it: the tuple `(program, x, grad, states,
/// per_leaf, update)`, `update` an output array for the update, or `None` to
/// subtract it from `x`. Read into a `PyJob` at once.
#[derive(FromPyObject)]
struct JobTuple<'py>(
    PyRef<'py, Program>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Vec<Bound<'py, PyAny>>,
    Vec<f64>,
    Option<Bound<'py, PyAny>>,
);

/// One job, its parts named.
struct PyJob<'py> {
    program: PyRef<'py, Program>,
    x: Bound<'py, PyAny>,
    grad: Bound<'py, PyAny>,
    states: Vec<Bound<'py, PyAny>>,
    per_leaf: Vec<f64>,
    update: Option<Bound<'py, PyAny>>,
}

impl<'py> From<JobTuple<'py>> for PyJob<'py> {
    fn from(JobTuple(program, x, grad, states, per_leaf, update): JobTuple<'py>) -> Self {
        Self {
            program,
            x,
            grad,
            states,
            per_leaf,
            update,
        }
    }
}

struct Borrowed<'py, T: Element> {
    x: PyReadwriteArrayDyn<'py, T>,
    grad: PyReadonlyArrayDyn<'py, T>,
    states: Vec<PyReadwriteArrayDyn<'py, T>>,
    program: PyRef<'py, Program>,
    per_leaf: Vec<f64>,
    update: Option<PyReadwriteArrayDyn<'py, T>>,
}

fn borrow<'py, T: Element>(index: usize, job: PyJob<'py>) -> PyResult<Borrowed<'py, T>> {
    let PyJob {
        program,
        x,
        grad,
        states,
        per_leaf,
        update,
    } = job;
    let array = |what: &str, a: &Bound<'py, PyAny>| -> PyResult<Bound<'py, PyArrayDyn<T>>> {
        a.cast::<PyArrayDyn<T>>().cloned().map_err(|_| {
            PyTypeError::new_err(format!(
                "job {index}: {what} is not an array of the parameter's dtype"
            ))
        })
    };
    let context = |e: PyErr| PyValueError::new_err(format!("job {index}: {e}"));
    Ok(Borrowed {
        x: array("the parameter", &x)?
            .try_readwrite()
            .map_err(|e| context(e.into()))?,
        grad: array("the gradient", &grad)?
            .try_readonly()
            .map_err(|e| context(e.into()))?,
        states: states
            .iter()
            .map(|s| {
                array("a state array", s)?
                    .try_readwrite()
                    .map_err(|e| context(e.into()))
            })
            .collect::<PyResult<_>>()?,
        program,
        per_leaf,
        update: update
            .map(|u| {
                array("the update buffer", &u)?
                    .try_readwrite()
                    .map_err(|e| context(e.into()))
            })
            .transpose()?,
    })
}

fn kernel_jobs<'b, T: Element + Float>(
    borrowed: &'b mut [(usize, Borrowed<'_, T>)],
) -> PyResult<Vec<kernels::Job<'b, T>>> {
    let mut jobs = Vec::with_capacity(borrowed.len());
    for (i, b) in borrowed.iter_mut() {
        let contiguous = |e: numpy::AsSliceError| PyValueError::new_err(format!("job {i}: {e}"));
        let shape = kernels::Shape::of(b.x.shape());
        jobs.push(kernels::Job {
            x: b.x.as_slice_mut().map_err(contiguous)?,
            shape,
            grad: b.grad.as_slice().map_err(contiguous)?,
            states: b
                .states
                .iter_mut()
                .map(|s| s.as_slice_mut().map_err(contiguous))
                .collect::<PyResult<_>>()?,
            program: &b.program.inner,
            per_leaf: &b.per_leaf,
            update: b
                .update
                .as_mut()
                .map(|u| u.as_slice_mut().map_err(contiguous))
                .transpose()?,
        });
    }
    Ok(jobs)
}

/// Apply one optimisation step to every job, in place, with the GIL released.
/// Jobs may mix float32 and float64 parameters (and float16 ones, as float32
/// buffers with a `half` program); each job's arrays share its dtype.
#[pyfunction]
fn step<'py>(py: Python<'py>, jobs: Vec<JobTuple<'py>>) -> PyResult<()> {
    let (mut single, mut double, mut half) = (Vec::new(), Vec::new(), Vec::new());
    let (f32_dtype, f64_dtype) = (numpy::dtype::<f32>(py), numpy::dtype::<f64>(py));
    for (i, job) in jobs.into_iter().map(PyJob::from).enumerate() {
        let dtype = job
            .x
            .cast::<numpy::PyUntypedArray>()
            .map(numpy::PyUntypedArrayMethods::dtype)
            .map_err(|_| {
                PyTypeError::new_err(format!("job {i}: the parameter is not a NumPy array"))
            })?;
        if dtype.is_equiv_to(&f32_dtype) {
            let to = if job.program.element == Arith::Half {
                &mut half
            } else {
                &mut single
            };
            to.push((i, borrow::<f32>(i, job)?));
        } else if dtype.is_equiv_to(&f64_dtype) {
            double.push((i, borrow::<f64>(i, job)?));
        } else {
            return Err(PyTypeError::new_err(format!(
                "job {i}: no kernel for dtype {dtype}"
            )));
        }
    }
    // Kernel errors number the jobs single, then double, then half.
    let index: Vec<usize> = single
        .iter()
        .map(|(i, _)| *i)
        .chain(double.iter().map(|(i, _)| *i))
        .chain(half.iter().map(|(i, _)| *i))
        .collect();
    let mut single = kernel_jobs(&mut single)?;
    let mut double = kernel_jobs(&mut double)?;
    let mut half: Vec<_> = kernel_jobs(&mut half)?
        .into_iter()
        .map(kernels::Job::into_half)
        .collect();
    errors::released(py, Some(&index), || {
        kernels::exec::step_mixed(&mut single, &mut double, &mut half)
    })
}

/// The registered elementwise rules: `(name, hyper, per_leaf, states)` each,
/// `hyper` the names of its hyper-parameters.
#[pyfunction]
fn rules(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyTuple>>> {
    Kind::ALL
        .iter()
        .map(|k| {
            PyTuple::new(
                py,
                [
                    k.name().into_pyobject(py)?.into_any(),
                    PyTuple::new(py, k.hyper())?.into_any(),
                    k.per_leaf().into_pyobject(py)?.into_any(),
                    k.states().into_pyobject(py)?.into_any(),
                ],
            )
        })
        .collect()
}

/// The registered reductions (steps that scale the update by a factor made
/// of whole arrays' norms): `(name, hyper)` each, `hyper` the names of its
/// hyper-parameters.
#[pyfunction]
fn reductions() -> Vec<(&'static str, Vec<&'static str>)> {
    kernels::reduction::REGISTRY
        .iter()
        .map(|&(name, hyper)| (name, hyper.to_vec()))
        .collect()
}

#[pyfunction]
fn get_num_threads() -> usize {
    kernels::threads::num_threads()
}

#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    kernels::threads::set_num_threads(n).map_err(to_py)
}

/// The instruction set in use: "avx512", "avx2" or "baseline".
#[pyfunction]
fn get_isa() -> &'static str {
    kernels::simd::active().name()
}

#[pyfunction]
fn set_isa(name: &str) -> PyResult<()> {
    let isa = kernels::simd::Isa::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown instruction set {name:?}")))?;
    kernels::simd::set_active(isa).map_err(to_py)
}

#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    kernels::simd::available()
        .into_iter()
        .map(kernels::simd::Isa::name)
        .collect()
}

/// `gil_used`: the plan's walk reads containers and array fields with the
/// GIL as its only guard, so a free-threaded interpreter keeps the GIL on
/// while this module is loaded.
#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Program>()?;
    m.add_function(wrap_pyfunction!(step, m)?)?;
    m.add_function(wrap_pyfunction!(rules, m)?)?;
    m.add_function(wrap_pyfunction!(reductions, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_isa, m)?)?;
    m.add_function(wrap_pyfunction!(set_isa, m)?)?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    bench::register(m)?;
    flat::register(m)?;
    plan::register(m)?;
    errors::register(m)
}
