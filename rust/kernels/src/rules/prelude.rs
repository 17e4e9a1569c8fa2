//! What a chain does to the gradient before its last rule, when that is only
//! a norm's factor and rules that keep no state: `ClipGrad`, then
//! `WeightDecay`, then `SignDecay`, each at most once (the order they are
//! usually chained in). The last rule's loop runs it element by element
//! (`Rule::descend_after`), so that such a chain is one pass over memory and
//! its few extra operations overlap the last rule's own (Adam's division and
//! root), where a block per rule made every rule a pass of its own.
//!
//! Each part is its rule's own `update`. A part that is absent is skipped, not
//! computed as an identity (`d + 0 x` is not `d` when `x` is infinite, nor
//! when `d` is `-0`), so the result is the bits of the rules run one by one.
//!
//! LLVM keeps `Prelude`'s tests of which parts are present inside the vector
//! loop, where they cost a third of Adam's time in float32 in cache. So the
//! usual shapes (a norm's factor alone, `ClipGrad`, `WeightDecay`, or both)
//! run as [`Parts`], with the parts compiled in (`Prelude::with_parts`), and
//! only the rarer ones test at run time.

use crate::float::Float;
use crate::rules::clip_grad::ClipGrad;
use crate::rules::sign_decay::SignDecay;
use crate::rules::weight_decay::WeightDecay;
use crate::rules::{Bound, Rule};

/// What happens to each gradient before the last rule of a chain.
pub trait Before<T>: Copy {
    /// The gradient `d` of parameter `x`, as the last rule receives it.
    fn apply(&self, x: T, d: T) -> T;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Prelude<T> {
    /// A norm's factor (`ClipNorm`), applied first.
    scale: Option<T>,
    clip: Option<ClipGrad<T>>,
    decay: Option<WeightDecay<T>>,
    sign: Option<SignDecay<T>>,
}

impl<T: Float> Prelude<T> {
    /// `scale`, then the rules `before` in order, if they fit a prelude.
    pub fn of<'r>(scale: Option<T>, before: impl IntoIterator<Item = &'r Bound<T>>) -> Option<Self>
    where
        T: 'r,
    {
        let mut prelude = Self {
            scale,
            ..Self::default()
        };
        // Each part at most once, in the order clip, decay, sign: the next
        // rule may only take a part after those already taken.
        let mut next = 0;
        for rule in before {
            let part = match *rule {
                Bound::ClipGrad(r) if next <= 0 => {
                    prelude.clip = Some(r);
                    0
                }
                Bound::WeightDecay(r) if next <= 1 => {
                    prelude.decay = Some(r);
                    1
                }
                Bound::SignDecay(r) if next <= 2 => {
                    prelude.sign = Some(r);
                    2
                }
                _ => return None,
            };
            next = part + 1;
        }
        Some(prelude)
    }

    /// Call `run` with this prelude as [`Parts`] when its shape is one of the
    /// usual ones, else as itself.
    #[inline(always)]
    pub fn with_parts<R: WithParts<T>>(&self, run: R) -> R::Output {
        let unused = Parts::<T, false, false, false>::NONE;
        match (self.scale, self.clip, self.decay, self.sign) {
            (None, None, None, None) => run.run(&unused),
            (Some(scale), None, None, None) => run.run(&Parts::<T, true, false, false> {
                scale,
                ..unused.cast()
            }),
            (None, Some(clip), None, None) => run.run(&Parts::<T, false, true, false> {
                clip,
                ..unused.cast()
            }),
            (None, None, Some(decay), None) => run.run(&Parts::<T, false, false, true> {
                decay,
                ..unused.cast()
            }),
            (None, Some(clip), Some(decay), None) => run.run(&Parts::<T, false, true, true> {
                clip,
                decay,
                ..unused.cast()
            }),
            _ => run.run(self),
        }
    }
}

impl<T: Float> Before<T> for Prelude<T> {
    #[inline(always)]
    fn apply(&self, x: T, mut d: T) -> T {
        if let Some(s) = self.scale {
            d = d * s;
        }
        if let Some(r) = self.clip {
            d = r.update(x, d, []);
        }
        if let Some(r) = self.decay {
            d = r.update(x, d, []);
        }
        if let Some(r) = self.sign {
            d = r.update(x, d, []);
        }
        d
    }
}

/// What [`Prelude::with_parts`] calls: generic over the prelude's type, which
/// a closure cannot be.
pub trait WithParts<T> {
    type Output;
    fn run<P: Before<T>>(self, before: &P) -> Self::Output;
}

/// A prelude whose present parts (a norm's factor, `ClipGrad`, `WeightDecay`,
/// in that order) are fixed when compiled: no test per element. The fields of
/// absent parts are never read.
#[derive(Clone, Copy, Debug)]
pub struct Parts<T, const SCALE: bool, const CLIP: bool, const DECAY: bool> {
    scale: T,
    clip: ClipGrad<T>,
    decay: WeightDecay<T>,
}

/// The prelude of a rule alone: nothing.
pub type Nothing<T> = Parts<T, false, false, false>;

impl<T: Float> Nothing<T> {
    pub const NONE: Self = Self {
        scale: T::ONE,
        clip: ClipGrad { delta: T::ZERO },
        decay: WeightDecay { lambda: T::ZERO },
    };

    /// The same (unused) values, as another shape.
    #[inline(always)]
    fn cast<const S: bool, const C: bool, const D: bool>(self) -> Parts<T, S, C, D> {
        Parts {
            scale: self.scale,
            clip: self.clip,
            decay: self.decay,
        }
    }
}

impl<T: Float, const SCALE: bool, const CLIP: bool, const DECAY: bool> Before<T>
    for Parts<T, SCALE, CLIP, DECAY>
{
    #[inline(always)]
    fn apply(&self, x: T, mut d: T) -> T {
        if SCALE {
            d = d * self.scale;
        }
        if CLIP {
            d = self.clip.update(x, d, []);
        }
        if DECAY {
            d = self.decay.update(x, d, []);
        }
        d
    }
}
