//! A leaf's shape as the kernels see it: a stack of matrices, so that a rule
//! or a reduction can treat a 2-d leaf as a matrix (its rows and columns).

/// `matrices` matrices of `rows × cols` elements, in C order: the last two
/// dimensions of an n-d array, the ones before stacked. A vector is one
/// row, a scalar one element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub matrices: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Shape {
    /// The shape of an array of these dimensions (a negative one counts as 0).
    #[must_use]
    pub fn of<N: Copy + TryInto<usize>>(dims: &[N]) -> Self {
        let size = |n: N| n.try_into().unwrap_or(0);
        match *dims {
            [] => Self::flat(1),
            [n] => Self::flat(size(n)),
            [ref stacked @ .., rows, cols] => Self {
                matrices: stacked.iter().map(|&n| size(n)).product(),
                rows: size(rows),
                cols: size(cols),
            },
        }
    }

    /// One row of `n` elements.
    #[must_use]
    pub fn flat(n: usize) -> Self {
        Self {
            matrices: 1,
            rows: 1,
            cols: n,
        }
    }

    /// Its number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.matrices * self.rows * self.cols
    }

    /// Whether it holds no element.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_two_dimensions_are_the_matrix() {
        let shape = |matrices, rows, cols| Shape {
            matrices,
            rows,
            cols,
        };
        assert_eq!(Shape::of::<usize>(&[]), shape(1, 1, 1));
        assert_eq!(Shape::of(&[7usize]), shape(1, 1, 7));
        assert_eq!(Shape::of(&[3usize, 4]), shape(1, 3, 4));
        assert_eq!(Shape::of(&[2usize, 5, 3, 4]), shape(10, 3, 4));
        assert_eq!(Shape::of(&[2usize, 0, 4]).len(), 0);
        assert_eq!(Shape::of(&[3isize, 4]), shape(1, 3, 4));
    }
}
