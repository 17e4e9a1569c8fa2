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

use crate::float::Float;
use crate::rules::clip_grad::ClipGrad;
use crate::rules::sign_decay::SignDecay;
use crate::rules::weight_decay::WeightDecay;
use crate::rules::{Bound, Rule};

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

    /// Whether it leaves the gradient as it is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.scale.is_none() && self.clip.is_none() && self.decay.is_none() && self.sign.is_none()
    }

    /// The gradient `d` of parameter `x`, as the last rule receives it.
    #[inline(always)]
    pub fn apply(&self, x: T, mut d: T) -> T {
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
