//! Origin datacenters as small indexes, and positions as sequences by index.
//!
//! A [`Position`] is a map from origin name to sequence: right for the wire, heavy for a hub
//! that keeps one per video and one per followed video of every connection. The hub interns
//! the few origin names of a topology once and keeps positions as vectors of sequences
//! ([`Seqs`]), converting at the edges.

use std::sync::{Arc, RwLock};

use fanfare_model::Position;

/// The origins the hub has seen, in the order it saw them (their index), and that order's
/// sorting by name (the order ids list them in). Replaced as a whole when an origin is added,
/// which happens a few times in a hub's life.
#[derive(Debug, Default)]
pub(crate) struct OriginView {
    names: Vec<Arc<str>>,
    /// Indexes of `names`, sorted by name.
    sorted: Vec<usize>,
}

impl OriginView {
    pub(crate) fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Indexes in name order.
    pub(crate) fn sorted(&self) -> &[usize] {
        &self.sorted
    }

    pub(crate) fn sorted_names(&self) -> Vec<&str> {
        self.sorted.iter().map(|index| self.name(*index)).collect()
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|known| &**known == name)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Origins {
    view: RwLock<Arc<OriginView>>,
}

impl Origins {
    /// The index of `name`, interning it on first sight.
    pub(crate) fn index(&self, name: &str) -> usize {
        if let Some(index) = self.view().find(name) {
            return index;
        }
        let mut view = self
            .view
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) = view.find(name) {
            return index;
        }
        let mut names = view.names.clone();
        names.push(Arc::from(name));
        let mut sorted: Vec<usize> = (0..names.len()).collect();
        sorted.sort_by(|a, b| names[*a].cmp(&names[*b]));
        let index = names.len() - 1;
        *view = Arc::new(OriginView { names, sorted });
        index
    }

    pub(crate) fn view(&self) -> Arc<OriginView> {
        self.view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// `position` as sequences by index (interning its origins).
    pub(crate) fn seqs(&self, position: &Position) -> Seqs {
        let mut seqs = Seqs::default();
        for (origin, seq) in position.origins() {
            seqs.advance(self.index(origin), seq);
        }
        seqs
    }
}

/// A position by origin index: the last sequence delivered from each origin (0 for none).
#[derive(Debug, Clone, Default)]
pub(crate) struct Seqs(Vec<u64>);

/// Equal when every origin's sequence is: a missing origin is 0.
impl PartialEq for Seqs {
    fn eq(&self, other: &Self) -> bool {
        let len = self.0.len().max(other.0.len());
        (0..len).all(|origin| self.get(origin) == other.get(origin))
    }
}

impl Eq for Seqs {}

impl Seqs {
    pub(crate) fn get(&self, origin: usize) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Records `seq` from `origin`; false (and nothing changes) when it is not newer.
    pub(crate) fn advance(&mut self, origin: usize, seq: u64) -> bool {
        if self.0.len() <= origin {
            self.0.resize(origin + 1, 0);
        }
        if self.0[origin] >= seq {
            return false;
        }
        self.0[origin] = seq;
        true
    }

    /// Raises every origin to at least `other`'s sequence.
    pub(crate) fn raise_to(&mut self, other: &Seqs) {
        for (origin, seq) in other.0.iter().enumerate() {
            self.advance(origin, *seq);
        }
    }

    /// Whether `other` is at or past this position for every origin.
    pub(crate) fn is_covered_by(&self, other: &Seqs) -> bool {
        self.0
            .iter()
            .enumerate()
            .all(|(origin, seq)| *seq <= other.get(origin))
    }

    /// The position on the wire: every origin of `view` (0 where none was delivered).
    pub(crate) fn to_position(&self, view: &OriginView) -> Position {
        let mut position = Position::new();
        for index in view.sorted() {
            position.advance(view.name(*index), self.get(*index));
        }
        position
    }

    /// Writes the position as an `id:` value, `dc1:12,dc2:0`, every origin of `view` in name
    /// order: the same text as [`Position`]'s.
    pub(crate) fn write_id(&self, out: &mut String, view: &OriginView) {
        use std::fmt::Write as _;
        for (place, index) in view.sorted().iter().enumerate() {
            if place > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}:{}", view.name(*index), self.get(*index));
        }
    }

    /// Sequences in name order of `view`'s origins (for a connection position).
    pub(crate) fn in_name_order<'a>(
        &'a self,
        view: &'a OriginView,
    ) -> impl Iterator<Item = u64> + 'a {
        view.sorted().iter().map(|index| self.get(*index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_list_every_known_origin_in_name_order() {
        let origins = Origins::default();
        let dc3 = origins.index("dc3");
        let dc1 = origins.index("dc1");
        assert_eq!(origins.index("dc3"), dc3, "interned once");
        let mut seqs = Seqs::default();
        assert!(seqs.advance(dc3, 7));
        assert!(!seqs.advance(dc3, 7));
        let mut id = String::new();
        seqs.write_id(&mut id, &origins.view());
        assert_eq!(id, "dc1:0,dc3:7");
        assert_eq!(seqs.to_position(&origins.view()).to_string(), id);
        assert_eq!(origins.seqs(&id.parse().unwrap()), {
            let mut expected = Seqs::default();
            expected.advance(dc1, 0);
            expected.advance(dc3, 7);
            expected
        });
    }

    #[test]
    fn coverage_and_raising_are_per_origin() {
        let mut low = Seqs::default();
        low.advance(0, 5);
        let mut high = Seqs::default();
        high.advance(0, 6);
        high.advance(1, 1);
        assert!(low.is_covered_by(&high));
        assert!(!high.is_covered_by(&low));
        low.raise_to(&high);
        assert_eq!(low, high);
    }
}
