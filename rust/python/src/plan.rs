//! A model's step, planned once: the `update_` fast path.
//!
//! Python flattens a state tree and its model into a `Plan` (see
//! `python/optimisers/_plan.py`): the containers on the way to each `Leaf`, in
//! pre-order, and per leaf its parameter, state arrays, program and per-leaf
//! scalars, which from then on live here. Each step the plan walks the model,
//! the state tree and the gradient along those paths, checks that everything is
//! still what it was and that every gradient is an array the kernel can read as
//! it is, and only then runs every leaf in one kernel call. Anything it cannot
//! vouch for (a replaced array, a gradient of another dtype or layout, a tree of
//! another shape) makes `step` return `False` having changed nothing, and
//! Python takes its general path, which converts or reports the problem.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use numpy::npyffi::{self, flags, PyArrayObject};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use optimisers_kernels as kernels;
use optimisers_kernels::spare;

use crate::{errors, Arith, Program};

/// What a model node is, which decides how children and gradients are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dict,
    /// A list or a plain tuple.
    Seq,
    NamedTuple,
    /// A dataclass or registered object: children are attributes.
    Object,
}

impl Kind {
    fn from_name(name: &str) -> PyResult<Self> {
        Ok(match name {
            "dict" => Kind::Dict,
            "seq" => Kind::Seq,
            "namedtuple" => Kind::NamedTuple,
            "object" => Kind::Object,
            _ => return Err(PyValueError::new_err(format!("unknown node kind {name:?}"))),
        })
    }
}

enum What {
    Container {
        kind: Kind,
        ty: Py<PyType>,
        /// For dicts, every key the model had; for sequences, their length.
        keys: Vec<Py<PyAny>>,
        len: usize,
    },
    Leaf(usize),
}

struct Node {
    /// Index of the parent node (nodes are in pre-order); the root has none.
    parent: Option<usize>,
    /// The key in the parent: a dict key, an attribute name, or (for
    /// sequences) the same as `index`.
    key: Py<PyAny>,
    /// The position among the parent's children.
    index: usize,
    what: What,
}

/// How the gradient of a container node yields its children this step.
#[derive(Clone, Copy)]
enum GradAccess {
    /// The gradient is a dict: `grad.get(key)`.
    Get,
    /// A list or tuple as long as the model's: `grad[index]`.
    Index,
    /// An object of the model's own type: `getattr(grad, key, None)`.
    Attr,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
}

/// A memory range, in bytes.
type Span = Range<usize>;

/// An array the kernel writes: the object, and where its data was at build.
struct Buffer {
    array: Py<PyAny>,
    data: usize,
}

struct LeafPlan {
    /// The address of the `Leaf` object the state tree holds here (see `Plan::state`).
    leaf: usize,
    x: Buffer,
    descr: usize,
    len: usize,
    dtype: Dtype,
    states: Vec<Buffer>,
    program: Py<Program>,
    scalars: Range<usize>,
    frozen: bool,
    /// Its scalars moved since Python last fetched them.
    moved: AtomicBool,
    /// Where its gradient fell among the plan's `written` last step (see
    /// `overlaps`). Atomics only to be `Sync`, as a `pyclass` must: the plan
    /// is used with the GIL held, and relaxed loads and stores are plain ones.
    hint: AtomicUsize,
}

/// Item `index` of a list or tuple (a named tuple included); None for others.
fn item<'py>(seq: &Bound<'py, PyAny>, index: usize) -> Option<Bound<'py, PyAny>> {
    if let Ok(l) = seq.cast::<PyList>() {
        // The checked `get_item` is a call into CPython per item (about 4 %
        // of a planned step of 1,000 one-element leaves).
        // SAFETY: `index` is within the list, checked just before with the
        // GIL held (the module keeps it on a free-threaded build too: see
        // `_core`), and nothing runs in between that could shorten the list.
        (index < l.len()).then(|| unsafe { l.get_item_unchecked(index) })
    } else {
        seq.cast::<PyTuple>().ok()?.get_item(index).ok()
    }
}

/// The raw fields of an ndarray. The caller has checked `a` is one.
fn fields<'a>(a: &'a Bound<'_, PyAny>) -> &'a npyffi::PyArrayObject_fields {
    // SAFETY: `a` is an ndarray (checked by the caller with `PyArray_Check`), so
    // the object is a `PyArrayObject`; the reference lives no longer than `a`.
    unsafe { &(*a.as_ptr().cast::<PyArrayObject>()).fields }
}

fn is_array(a: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a type check on a live object, with the GIL held.
    unsafe { npyffi::PyArray_CheckExact(a.py(), a.as_ptr()) != 0 }
}

fn element_count(f: &npyffi::PyArrayObject_fields) -> usize {
    let nd = usize::try_from(f.nd).unwrap_or(0);
    if nd == 0 {
        return 1;
    }
    // SAFETY: `dimensions` holds `nd` entries for as long as the array lives.
    let dims = unsafe { std::slice::from_raw_parts(f.dimensions, nd) };
    dims.iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .product()
}

fn dims(f: &npyffi::PyArrayObject_fields) -> &[npyffi::npy_intp] {
    let nd = usize::try_from(f.nd).unwrap_or(0);
    if nd == 0 {
        return &[];
    }
    // SAFETY: as in `element_count`.
    unsafe { std::slice::from_raw_parts(f.dimensions, nd) }
}

/// Whether two arrays have the same shape, compared element by element
/// inline: a slice comparison calls `memcmp`, even for a shape of one.
fn same_shape(a: &npyffi::PyArrayObject_fields, b: &npyffi::PyArrayObject_fields) -> bool {
    let (a, b) = (dims(a), dims(b));
    a.len() == b.len() && a.iter().zip(b).all(|(m, n)| m == n)
}

fn has_flags(f: &npyffi::PyArrayObject_fields, want: i32) -> bool {
    f.flags & want == want
}

const KERNEL_READS: i32 = flags::NPY_ARRAY_C_CONTIGUOUS | flags::NPY_ARRAY_ALIGNED;
const KERNEL_WRITES: i32 = KERNEL_READS | flags::NPY_ARRAY_WRITEABLE;

/// A cached plan of `update_(state, model, grad)` for one state tree and model.
#[pyclass(module = "optimisers._core", weakref)]
pub struct Plan {
    /// The addresses of the state tree and model it was made for. Not
    /// references: the planned `Leaf`s hold the plan, and a plan holding the
    /// trees (or the `Leaf`s) would be a reference cycle, keeping a model alive
    /// until the collector runs. An address cannot be reused while the plan
    /// is valid: a `Leaf` retires its plan when it is freed (`_leaf.py`), and
    /// every step checks the `Leaf`s, containers and arrays it walks to.
    state: usize,
    model: usize,
    nodes: Vec<Node>,
    leaves: Vec<LeafPlan>,
    /// Every leaf's per-leaf scalars, concatenated.
    scalars: Vec<f64>,
    /// The memory the kernel writes (parameters and states), sorted, disjoint.
    written: Vec<Span>,
    /// Bytes of the parameters of leaves not frozen.
    bytes: usize,
    valid: bool,
}

/// One leaf's gradient this step: its data, or `None` for no update.
type Found = Option<usize>;

/// Why the fast path declines a step.
enum Decline {
    /// The model or state tree is not what was planned: the plan is retired.
    Stale,
    /// A gradient is not an array the kernel reads as it is, or its tree does
    /// not mirror the model's: the general path converts it, or says what is wrong.
    Gradient,
}

impl Plan {
    /// The child of model or state container `parent` for `node`.
    fn child<'py>(
        parent: &Bound<'py, PyAny>,
        kind: Kind,
        node: &Node,
    ) -> Option<Bound<'py, PyAny>> {
        let py = parent.py();
        match kind {
            Kind::Dict => match parent.cast::<PyDict>() {
                Ok(d) => d.get_item(node.key.bind(py)).ok().flatten(),
                Err(_) => parent.get_item(node.key.bind(py)).ok(),
            },
            Kind::Seq | Kind::NamedTuple => item(parent, node.index),
            Kind::Object => parent
                .getattr(node.key.bind(py).cast::<PyString>().ok()?)
                .ok(),
        }
    }

    /// How `grad` (not None) gives the children of a container like `model`,
    /// or `None` when the fast path cannot vouch for it.
    fn grad_access(
        grad: &Bound<'_, PyAny>,
        model: &Bound<'_, PyAny>,
        kind: Kind,
        len: usize,
    ) -> Option<GradAccess> {
        if grad.is_exact_instance_of::<PyDict>() {
            if kind == Kind::Seq {
                return None;
            }
            if kind == Kind::Dict {
                // Keys the model lacks are an error unless their value is None.
                let grad = grad.cast::<PyDict>().ok()?;
                let model = model.cast::<PyDict>().ok()?;
                for (k, v) in grad.iter() {
                    if !v.is_none() && !model.contains(k).ok()? {
                        return None;
                    }
                }
            }
            return Some(GradAccess::Get);
        }
        match kind {
            Kind::Dict => None,
            Kind::Seq | Kind::NamedTuple => {
                let seq = grad.is_exact_instance_of::<PyTuple>()
                    || if kind == Kind::Seq {
                        grad.is_exact_instance_of::<PyList>()
                    } else {
                        grad.get_type().is(model.get_type())
                    };
                (seq && grad.len().ok()? == len).then_some(GradAccess::Index)
            }
            Kind::Object => grad
                .get_type()
                .is(model.get_type())
                .then_some(GradAccess::Attr),
        }
    }

    fn grad_child<'py>(
        grad: &Bound<'py, PyAny>,
        access: GradAccess,
        node: &Node,
    ) -> Option<Bound<'py, PyAny>> {
        let py = grad.py();
        let found = match access {
            GradAccess::Get => grad
                .cast::<PyDict>()
                .ok()?
                .get_item(node.key.bind(py))
                .ok()?,
            GradAccess::Index => Some(item(grad, node.index)?),
            GradAccess::Attr => match grad.getattr(node.key.bind(py).cast::<PyString>().ok()?) {
                Ok(v) => Some(v),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => None,
                Err(_) => return None,
            },
        };
        Some(found.unwrap_or_else(|| py.None().into_bound(py)))
    }

    /// The gradient's data if the kernel can read it as it is for `leaf`:
    /// an ndarray of the parameter's dtype and shape, C-contiguous, aligned,
    /// and clear of every array the step writes.
    fn gradient(
        written: &[Span],
        grad: &Bound<'_, PyAny>,
        leaf: &LeafPlan,
        x: &Bound<'_, PyAny>,
    ) -> Option<usize> {
        if !is_array(grad) {
            return None;
        }
        let (g, xf) = (fields(grad), fields(x));
        if !has_flags(g, KERNEL_READS) || !same_shape(g, xf) {
            return None;
        }
        if g.descr as usize != leaf.descr {
            let (gd, xd) = (
                grad.cast::<PyUntypedArray>().ok()?,
                x.cast::<PyUntypedArray>().ok()?,
            );
            if !gd.dtype().is_equiv_to(&xd.dtype()) {
                return None;
            }
        }
        let data = g.data as usize;
        let bytes = leaf.len * leaf.dtype.size();
        if bytes > 0 && overlaps(written, &(data..data + bytes), &leaf.hint) {
            return None;
        }
        Some(data)
    }

    /// Walk the trees; the gradient data of each leaf, or why the fast path
    /// cannot take this step. Each leaf's gradient is put in `held`: the
    /// caller keeps them until the kernel is done with their data.
    fn walk<'py>(
        &mut self,
        state: &Bound<'py, PyAny>,
        model: &Bound<'py, PyAny>,
        grad: &Bound<'py, PyAny>,
        held: &mut Vec<Bound<'py, PyAny>>,
    ) -> Result<Vec<Found>, Decline> {
        use Decline::{Gradient, Stale};
        let n = self.nodes.len();
        // The lists are kept from step to step (see `spare`): a model of
        // thousands of leaves would otherwise allocate and fault in
        // hundreds of KiB each step.
        let mut models = spare::take::<Bound<'static, PyAny>, Bound<'_, PyAny>>(n);
        let mut states = spare::take::<Bound<'static, PyAny>, Bound<'_, PyAny>>(n);
        // A node's gradient and how it yields children (None: no gradient here).
        let mut grads = spare::take::<Option<(Bound<'static, PyAny>, GradAccess)>, _>(n);
        let mut found = spare::take::<Found, _>(self.leaves.len());
        found.resize(self.leaves.len(), None);
        for node in &self.nodes {
            let (m, s, g) = match node.parent {
                None => (model.clone(), state.clone(), Some(grad.clone())),
                Some(p) => {
                    let What::Container { kind, .. } = self.nodes[p].what else {
                        return Err(Stale);
                    };
                    let m = Self::child(&models[p], kind, node).ok_or(Stale)?;
                    let s = Self::child(&states[p], kind, node).ok_or(Stale)?;
                    let g = match &grads[p] {
                        Some((g, access)) => {
                            Some(Self::grad_child(g, *access, node).ok_or(Gradient)?)
                        }
                        None => None,
                    };
                    (m, s, g)
                }
            };
            let g = g.filter(|g| !g.is_none());
            match &node.what {
                What::Container {
                    kind,
                    ty,
                    keys,
                    len,
                } => {
                    if !m.get_type().is(ty.bind(m.py()))
                        || (*kind != Kind::Object && m.len().ok() != Some(*len))
                    {
                        return Err(Stale);
                    }
                    if *kind == Kind::Dict {
                        let d = m.cast::<PyDict>().map_err(|_| Stale)?;
                        for k in keys {
                            if !d.contains(k.bind(m.py())).unwrap_or(false) {
                                return Err(Stale);
                            }
                        }
                    }
                    let g = match g {
                        Some(g) => {
                            let access = Self::grad_access(&g, &m, *kind, *len).ok_or(Gradient)?;
                            Some((g, access))
                        }
                        None => None,
                    };
                    grads.push(g);
                }
                What::Leaf(j) => {
                    let leaf = &self.leaves[*j];
                    if s.as_ptr() as usize != leaf.leaf
                        || !m.is(leaf.x.array.bind(m.py()))
                        || !Self::buffers_unchanged(leaf, &m)
                    {
                        return Err(Stale);
                    }
                    if let Some(g) = g {
                        found[*j] =
                            Some(Self::gradient(&self.written, &g, leaf, &m).ok_or(Gradient)?);
                        held.push(g);
                    }
                    grads.push(None);
                }
            }
            models.push(m);
            states.push(s);
        }
        spare::give::<Bound<'static, PyAny>, _>(models);
        spare::give::<Bound<'static, PyAny>, _>(states);
        spare::give::<Option<(Bound<'static, PyAny>, GradAccess)>, _>(grads);
        Ok(found)
    }

    /// The parameter and state arrays still are where they were, as they were.
    fn buffers_unchanged(leaf: &LeafPlan, x: &Bound<'_, PyAny>) -> bool {
        let f = fields(x);
        let same = |f: &npyffi::PyArrayObject_fields, b: &Buffer| {
            f.data as usize == b.data && has_flags(f, KERNEL_WRITES) && element_count(f) == leaf.len
        };
        f.descr as usize == leaf.descr
            && same(f, &leaf.x)
            && leaf
                .states
                .iter()
                .all(|s| same(fields(s.array.bind(x.py())), s))
    }

    fn run(&mut self, py: Python<'_>, found: &[Found]) -> PyResult<()> {
        let n = self.leaves.len();
        let mut single = spare::take::<kernels::Job<'static, f32>, kernels::Job<'_, f32>>(n);
        let mut double = spare::take::<kernels::Job<'static, f64>, kernels::Job<'_, f64>>(n);
        // Which leaf each job is: the single-precision jobs, then the double.
        let mut index = spare::take::<usize, usize>(n);
        let mut double_index = spare::take::<usize, usize>(n);
        for (j, (leaf, grad)) in self.leaves.iter().zip(found).enumerate() {
            let Some(grad) = *grad else { continue };
            if leaf.frozen {
                continue;
            }
            let program = &leaf.program.get().inner;
            let per_leaf = &self.scalars[leaf.scalars.clone()];
            match leaf.dtype {
                Dtype::F32 => {
                    single.push(job(leaf, grad, program, per_leaf, py));
                    index.push(j);
                }
                Dtype::F64 => {
                    double.push(job(leaf, grad, program, per_leaf, py));
                    double_index.push(j);
                }
            }
        }
        index.extend_from_slice(&double_index);
        spare::give::<usize, _>(double_index);
        errors::released(py, Some(&index), || {
            kernels::exec::step_mixed(&mut single, &mut double, &mut [])
        })?;
        spare::give::<kernels::Job<'static, f32>, _>(single);
        spare::give::<kernels::Job<'static, f64>, _>(double);
        let mut last: Option<Advanced> = None;
        for &j in &index {
            let leaf = &self.leaves[j];
            if leaf.scalars.is_empty() {
                continue;
            }
            leaf.moved.store(true, Relaxed);
            last = Some(Advanced::advance(leaf, &mut self.scalars, last));
        }
        spare::give::<usize, _>(index);
        Ok(())
    }
}

/// The leaf advanced last: its program, and its per-leaf scalars before and
/// after. Leaves of one rule at the same step (most models) advance alike,
/// and then the next one copies its new scalars instead of computing them.
struct Advanced {
    /// The program's object; null when `before` could not hold the scalars.
    program: *mut pyo3::ffi::PyObject,
    before: [f64; Advanced::MOST],
    after: Range<usize>,
}

impl Advanced {
    /// Per-leaf scalars kept for the comparison; a leaf with more is computed.
    const MOST: usize = 8;

    /// Advance `leaf`'s scalars (its range of `scalars`), by copying those of
    /// `last` when they started alike.
    fn advance(leaf: &LeafPlan, scalars: &mut [f64], last: Option<Advanced>) -> Advanced {
        let here = leaf.scalars.clone();
        let program = leaf.program.as_ptr();
        let alike = |last: &Advanced| {
            last.program == program
                && kernels::program::same_scalars(
                    &last.before[..last.after.len()],
                    &scalars[here.clone()],
                )
        };
        if let Some(last) = last.filter(alike) {
            scalars.copy_within(last.after.clone(), here.start);
            return Advanced {
                after: here,
                ..last
            };
        }
        let kept = here.len() <= Self::MOST;
        let mut before = [0.0; Self::MOST];
        if kept {
            before[..here.len()].copy_from_slice(&scalars[here.clone()]);
        }
        let rule = leaf.program.get();
        rule.element
            .advance(&rule.inner, &mut scalars[here.clone()]);
        Advanced {
            program: if kept { program } else { std::ptr::null_mut() },
            before,
            after: here,
        }
    }
}

/// The kernel job of one leaf, on slices made from the arrays' data.
fn job<'a, T>(
    leaf: &LeafPlan,
    grad: usize,
    program: &'a kernels::Program,
    per_leaf: &'a [f64],
    py: Python<'_>,
) -> kernels::Job<'a, T> {
    let n = leaf.len;
    // The parameter's shape now (`walk` checked its size is still `n`).
    let shape = kernels::Shape::of(dims(fields(leaf.x.array.bind(py))));
    // SAFETY: `Plan::build` checked that every buffer here is a C-contiguous,
    // aligned, writeable array of `T` with `n` elements, and that the parameter
    // and state arrays of all leaves are pairwise disjoint; `walk` checked that
    // they are unchanged this step (same objects, data, flags and size) and that
    // the gradient, which is only read, overlaps none of them. The plan holds a
    // reference to each parameter and state array, and `step` to each gradient
    // until the kernel returns, so the memory outlives the call, and NumPy
    // cannot move the data of an array that is referenced elsewhere. Zero-length
    // arrays get empty slices, whatever their data pointer.
    unsafe {
        let writable = |data: usize| -> &'a mut [T] {
            if n == 0 {
                &mut []
            } else {
                std::slice::from_raw_parts_mut(data as *mut T, n)
            }
        };
        kernels::Job {
            x: writable(leaf.x.data),
            shape,
            grad: if n == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(grad as *const T, n)
            },
            states: leaf.states.iter().map(|s| writable(s.data)).collect(),
            program,
            per_leaf,
            update: None,
        }
    }
}

/// Whether `span` overlaps one of `written` (sorted, disjoint). The only
/// candidate is the first written span that ends after `span` starts; `hint`
/// is where it was for this leaf's gradient last step, and is moved to where it
/// is now. Gradients tend to come back to the same place between the same
/// written spans, and then two comparisons confirm the spot: a binary search of
/// thousands of spans was half of the walk of a model of 4,000 small leaves.
fn overlaps(written: &[Span], span: &Span, hint: &AtomicUsize) -> bool {
    let h = hint.load(Relaxed);
    let still = h <= written.len()
        && (h == 0 || written[h - 1].end <= span.start)
        && (h == written.len() || written[h].end > span.start);
    let i = if still {
        h
    } else {
        written.partition_point(|w| w.end <= span.start)
    };
    hint.store(i, Relaxed);
    written.get(i).is_some_and(|w| w.start < span.end)
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// A node as Python describes it: `(parent, key, index, kind, type, keys, len,
/// leaf)`, `parent` -1 for the root; `kind` one of "dict" (with all its `keys`),
/// "seq", "namedtuple" (with their `len`), "object", or "leaf" with `leaf` its
/// index into the leaves.
type PyNode<'py> = (
    isize,
    Bound<'py, PyAny>,
    usize,
    String,
    Option<Bound<'py, PyType>>,
    Vec<Bound<'py, PyAny>>,
    usize,
    usize,
);

/// A leaf as Python describes it: `(leaf, x, states, program, per_leaf, frozen)`.
type PyLeaf<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Vec<Bound<'py, PyAny>>,
    Bound<'py, Program>,
    Vec<f64>,
    bool,
);

#[pymethods]
impl Plan {
    /// A plan for `state` and `model` from their flattened description, or
    /// None when some array is not one the kernel can write in place (not a
    /// C-contiguous, aligned, writeable float32/float64 array of the right
    /// size, or overlapping another).
    #[staticmethod]
    fn build(
        state: &Bound<'_, PyAny>,
        model: &Bound<'_, PyAny>,
        nodes: Vec<PyNode<'_>>,
        leaves: Vec<PyLeaf<'_>>,
    ) -> PyResult<Option<Plan>> {
        let mut plan = Plan {
            state: state.as_ptr() as usize,
            model: model.as_ptr() as usize,
            nodes: Vec::with_capacity(nodes.len()),
            leaves: Vec::with_capacity(leaves.len()),
            scalars: Vec::new(),
            written: Vec::new(),
            bytes: 0,
            valid: true,
        };
        for (parent, key, index, kind, ty, keys, len, leaf) in nodes {
            let parent = usize::try_from(parent).ok();
            if parent.is_some_and(|p| p >= plan.nodes.len()) {
                return Err(PyValueError::new_err("a node's parent must come before it"));
            }
            let what = if kind == "leaf" {
                if leaf >= leaves.len() {
                    return Err(PyValueError::new_err("a leaf node's index is out of range"));
                }
                What::Leaf(leaf)
            } else {
                let ty =
                    ty.ok_or_else(|| PyValueError::new_err("a container node needs its type"))?;
                What::Container {
                    kind: Kind::from_name(&kind)?,
                    ty: ty.unbind(),
                    keys: keys.into_iter().map(Bound::unbind).collect(),
                    len,
                }
            };
            plan.nodes.push(Node {
                parent,
                key: key.unbind(),
                index,
                what,
            });
        }
        for (leaf, x, states, program, per_leaf, frozen) in leaves {
            let Some(leaf_plan) = plan.leaf(&leaf, &x, &states, program, &per_leaf, frozen)? else {
                return Ok(None);
            };
            if !leaf_plan.frozen {
                plan.bytes += leaf_plan.len * leaf_plan.dtype.size();
            }
            plan.leaves.push(leaf_plan);
        }
        plan.written.sort_by_key(|s| s.start);
        if plan.written.windows(2).any(|w| w[0].end > w[1].start) {
            return Ok(None);
        }
        Ok(Some(plan))
    }

    /// One step. `True` when done; `False`, with nothing changed, when a
    /// gradient needs the general path; `None`, with nothing changed, when this
    /// plan does not fit these trees (retired, made for others, or stale now):
    /// the caller plans again.
    fn step(
        &mut self,
        py: Python<'_>,
        state: &Bound<'_, PyAny>,
        model: &Bound<'_, PyAny>,
        grad: &Bound<'_, PyAny>,
    ) -> PyResult<Option<bool>> {
        if !self.valid
            || self.state != state.as_ptr() as usize
            || self.model != model.as_ptr() as usize
        {
            return Ok(None);
        }
        // The walk of thousands of leaves outlasts the helpers' spin.
        kernels::exec::expect_step(self.bytes);
        // The gradients are the caller's: until the kernel is done with their
        // data, this step holds them. The walk may run Python code (an
        // attribute, a key's `__eq__`), and the kernel runs without the GIL,
        // so the caller's tree may let go of one meanwhile.
        let mut held = spare::take::<Bound<'static, PyAny>, Bound<'_, PyAny>>(self.leaves.len());
        let stepped = match self.walk(state, model, grad, &mut held) {
            Ok(found) => {
                let ran = self.run(py, &found);
                spare::give::<Found, _>(found);
                ran.map(|()| Some(true))
            }
            Err(Decline::Gradient) => Ok(Some(false)),
            Err(Decline::Stale) => {
                self.valid = false;
                Ok(None)
            }
        };
        spare::give::<Bound<'static, PyAny>, _>(held);
        stepped
    }

    /// Leaf `slot`'s per-leaf scalars if they moved since last asked, else None.
    fn moved(&self, slot: usize) -> PyResult<Option<Vec<f64>>> {
        let leaf = self
            .leaves
            .get(slot)
            .ok_or_else(|| PyValueError::new_err(format!("no leaf {slot} in this plan")))?;
        let moved = leaf.moved.swap(false, Relaxed);
        Ok(moved.then(|| self.scalars[leaf.scalars.clone()].to_vec()))
    }

    /// False once `invalidate` was called: `step` then always declines.
    #[getter]
    fn valid(&self) -> bool {
        self.valid
    }

    /// Stop using this plan (a `Leaf` of it changed); `moved` still answers.
    fn invalidate(&mut self) {
        self.valid = false;
    }

    #[getter]
    fn leaves(&self) -> usize {
        self.leaves.len()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for node in &self.nodes {
            visit.call(&node.key)?;
            if let What::Container { ty, keys, .. } = &node.what {
                visit.call(ty)?;
                for k in keys {
                    visit.call(k)?;
                }
            }
        }
        for leaf in &self.leaves {
            visit.call(&leaf.x.array)?;
            for s in &leaf.states {
                visit.call(&s.array)?;
            }
            visit.call(&leaf.program)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.valid = false;
        self.nodes.clear();
        // Keep the scalars: a Leaf may still ask for them.
        for leaf in &mut self.leaves {
            leaf.states.clear();
        }
        self.written.clear();
    }
}

impl Plan {
    /// Check one leaf's arrays and record them; `None` if the kernel cannot
    /// write them in place.
    fn leaf(
        &mut self,
        leaf: &Bound<'_, PyAny>,
        x: &Bound<'_, PyAny>,
        states: &[Bound<'_, PyAny>],
        program: Bound<'_, Program>,
        per_leaf: &[f64],
        frozen: bool,
    ) -> PyResult<Option<LeafPlan>> {
        let py = x.py();
        let inner = &program.get().inner;
        if states.len() != inner.states() || per_leaf.len() != inner.per_leaf() {
            return Err(PyValueError::new_err(
                "a leaf's state arrays and scalars do not fit its program",
            ));
        }
        if inner.states_before_last_norm() > 0 || !is_array(x) {
            return Ok(None);
        }
        let dtype = {
            let xd = x.cast::<PyUntypedArray>()?.dtype();
            match program.get().element {
                Arith::Single if xd.is_equiv_to(&numpy::dtype::<f32>(py)) => Dtype::F32,
                Arith::Double if xd.is_equiv_to(&numpy::dtype::<f64>(py)) => Dtype::F64,
                _ => return Ok(None),
            }
        };
        let xf = fields(x);
        let len = element_count(xf);
        let bytes = len * dtype.size();
        let mut buffers = Vec::with_capacity(states.len() + 1);
        for a in std::iter::once(x).chain(states) {
            if !is_array(a) {
                return Ok(None);
            }
            let f = fields(a);
            let right_dtype = f.descr == xf.descr
                || a.cast::<PyUntypedArray>()?
                    .dtype()
                    .is_equiv_to(&x.cast::<PyUntypedArray>()?.dtype());
            if !right_dtype || !has_flags(f, KERNEL_WRITES) || element_count(f) != len {
                return Ok(None);
            }
            let data = f.data as usize;
            if bytes > 0 {
                self.written.push(data..data + bytes);
            }
            buffers.push(Buffer {
                array: a.clone().unbind(),
                data,
            });
        }
        let x_buffer = buffers.remove(0);
        let start = self.scalars.len();
        self.scalars.extend_from_slice(per_leaf);
        Ok(Some(LeafPlan {
            leaf: leaf.as_ptr() as usize,
            x: x_buffer,
            descr: xf.descr as usize,
            len,
            dtype,
            states: buffers,
            program: program.unbind(),
            scalars: start..self.scalars.len(),
            frozen,
            moved: AtomicBool::new(false),
            hint: AtomicUsize::new(0),
        }))
    }
}

/// `update_`'s planned step: the plan that `plans` (`_plan.py`'s registry:
/// `id(state)` → (weak reference to the plan, key paths)) holds for `state`
/// takes the step, as `Plan.step` does; `None` when there is none, it is
/// gone, or it no longer fits. Done in Python, three calls deep, the lookup
/// made a step of `Descent` on the 6-array MLP 1.05-1.09x as long.
#[pyfunction]
fn step_planned(
    py: Python<'_>,
    plans: &Bound<'_, PyDict>,
    state: &Bound<'_, PyAny>,
    model: &Bound<'_, PyAny>,
    grad: &Bound<'_, PyAny>,
) -> PyResult<Option<bool>> {
    // `id(state)` is the object's address.
    let Some(entry) = plans.get_item(state.as_ptr() as usize)? else {
        return Ok(None);
    };
    let plan = entry.cast::<PyTuple>()?.get_item(0)?.call0()?;
    let Ok(plan) = plan.cast::<Plan>() else {
        return Ok(None); // the weak reference is dead
    };
    plan.try_borrow_mut()?.step(py, state, model, grad)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Plan>()?;
    m.add_function(wrap_pyfunction!(step_planned, m)?)
}
