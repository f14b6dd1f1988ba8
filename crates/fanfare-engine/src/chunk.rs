//! What a connection's writer hands its socket: a list of byte slices, most of them shared
//! with every other viewer of the same event, written with one vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Bytes to write, in order, without copying them into one buffer.
#[derive(Debug, Default)]
pub struct Chunk {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `part` (shared, not copied); empty parts are skipped.
    pub fn push(&mut self, part: Bytes) {
        if part.is_empty() {
            return;
        }
        self.remaining += part.len();
        self.parts.push_back(part);
    }

    /// Puts `part` before everything else (the HTTP chunk-size line, the response head).
    pub fn push_front(&mut self, part: Bytes) {
        if part.is_empty() {
            return;
        }
        self.remaining += part.len();
        self.parts.push_front(part);
    }

    /// Appends an owned buffer.
    pub fn push_vec(&mut self, part: Vec<u8>) {
        self.push(Bytes::from(part));
    }

    pub fn len(&self) -> usize {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Every byte in one buffer (for tests and the HTTP-library fallback path).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.remaining);
        for part in &self.parts {
            out.extend_from_slice(part);
        }
        Bytes::from(out)
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map(|part| &part[..]).unwrap_or(&[])
    }

    fn advance(&mut self, mut count: usize) {
        assert!(count <= self.remaining, "advanced past the end of a chunk");
        self.remaining -= count;
        while count > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if count < front.len() {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, part) in dst.iter_mut().zip(self.parts.iter()) {
            *slot = IoSlice::new(part);
            filled += 1;
        }
        filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_walks_across_parts() {
        let mut chunk = Chunk::new();
        chunk.push(Bytes::from_static(b"ab"));
        chunk.push(Bytes::new());
        chunk.push(Bytes::from_static(b"cde"));
        chunk.push_front(Bytes::from_static(b"<"));
        assert_eq!(chunk.len(), 6);
        assert_eq!(&chunk.to_bytes()[..], b"<abcde");
        chunk.advance(2);
        assert_eq!(chunk.chunk(), b"b");
        chunk.advance(2);
        assert_eq!(chunk.chunk(), b"de");
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(chunk.chunks_vectored(&mut slices), 1);
        chunk.advance(2);
        assert!(chunk.is_empty());
    }
}
