//! Optimisation rules of Optimisers.jl as fused, multi-threaded SIMD kernels.
//!
//! The crate knows nothing of Python. A caller describes a rule or chain once
//! as a [`Program`], then each step hands [`step`] a batch of [`Job`]s (a
//! parameter, its gradient, its state arrays, its per-leaf scalars) and every
//! job is updated in place, in one pass over memory per elementwise segment.

pub mod bandwidth;
pub mod error;
pub mod exec;
pub mod flat;
pub mod float;
pub mod norm;
pub mod program;
pub mod reduction;
pub mod rules;
pub mod shape;
pub mod simd;
pub mod spare;
pub mod threads;
pub mod tuning;

pub use error::KernelError;
pub use exec::{step, Job, States};
pub use float::{Float, Half};
pub use program::{Program, Step};
pub use reduction::{Input, Makes, Reduction, Scope};
pub use rules::Kind;
pub use shape::Shape;
