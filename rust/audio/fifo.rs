//! A fixed-capacity sample FIFO for the audio front end's carry-over buffers, allocated once.

/// A ring of f32 samples; pushes beyond the capacity are refused, never grown.
#[derive(Debug)]
pub(crate) struct Fifo {
    buf: Box<[f32]>,
    head: usize,
    len: usize,
}

impl Fifo {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0.0; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    /// Append as much of `src` as fits; returns how many samples were taken.
    pub(crate) fn push(&mut self, src: &[f32]) -> usize {
        let cap = self.buf.len();
        let n = src.len().min(cap - self.len);
        let tail = (self.head + self.len) % cap.max(1);
        let first = n.min(cap - tail);
        self.buf[tail..tail + first].copy_from_slice(&src[..first]);
        self.buf[..n - first].copy_from_slice(&src[first..n]);
        self.len += n;
        n
    }

    /// Move up to `dst.len()` samples into `dst`; returns how many.
    pub(crate) fn pop(&mut self, dst: &mut [f32]) -> usize {
        let cap = self.buf.len();
        let n = dst.len().min(self.len);
        let first = n.min(cap - self.head);
        dst[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
        dst[first..n].copy_from_slice(&self.buf[..n - first]);
        self.head = if cap == 0 { 0 } else { (self.head + n) % cap };
        self.len -= n;
        n
    }

    /// Empty the FIFO, then fill it with `n` zeros (at most the capacity).
    pub(crate) fn reset_to_zeros(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.head = 0;
        self.buf[..n].fill(0.0);
        self.len = n;
    }
}

#[cfg(test)]
mod tests {
    use super::Fifo;

    #[test]
    fn wraps_and_refuses_what_does_not_fit() {
        let mut f = Fifo::new(5);
        assert_eq!(f.push(&[1.0, 2.0, 3.0]), 3);
        let mut out = [0.0; 2];
        assert_eq!(f.pop(&mut out), 2);
        assert_eq!(out.to_vec(), [1.0, 2.0]);
        assert_eq!(f.push(&[4.0, 5.0, 6.0, 7.0, 8.0]), 4);
        let mut out = [0.0; 8];
        assert_eq!(f.pop(&mut out), 5);
        assert_eq!(&out[..5], &[3.0, 4.0, 5.0, 6.0, 7.0]);
        f.reset_to_zeros(9);
        assert_eq!(f.pop(&mut out), 5);
        assert_eq!(&out[..5], &[0.0; 5]);
    }
}
