//! Compact storage for user ids.
//!
//! Discord ids are 17–20 ASCII digits, and a leaderboard holds up to millions of
//! them, so an id of up to [`INLINE_CAPACITY`] bytes lives inside the entry (24 bytes
//! in all) and only longer ones take a heap allocation.

use std::fmt;

/// Longest id stored without a heap allocation.
pub const INLINE_CAPACITY: usize = 22;

/// A user id: valid UTF-8, stored inline when short.
#[derive(Clone, PartialEq, Eq)]
pub enum UserId {
    /// Short id: `len` bytes of `bytes` are used.
    Inline {
        /// Number of bytes used.
        len: u8,
        /// Storage; bytes past `len` are zero.
        bytes: [u8; INLINE_CAPACITY],
    },
    /// Long id.
    Heap(Box<str>),
}

impl UserId {
    /// Copies `id` into a new `UserId`.
    pub fn new(id: &str) -> Self {
        let src = id.as_bytes();
        if src.len() <= INLINE_CAPACITY {
            let mut bytes = [0u8; INLINE_CAPACITY];
            bytes[..src.len()].copy_from_slice(src);
            UserId::Inline {
                len: src.len() as u8,
                bytes,
            }
        } else {
            UserId::Heap(id.into())
        }
    }

    /// The id's UTF-8 bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            UserId::Inline { len, bytes } => &bytes[..*len as usize],
            UserId::Heap(s) => s.as_bytes(),
        }
    }

    /// The id as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            // Inline ids are only built from a `&str` prefix that ends on its own
            // length, so the bytes are valid UTF-8; re-checking keeps this safe code.
            UserId::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            UserId::Heap(s) => s,
        }
    }

    /// Heap bytes owned beyond the inline representation.
    pub fn heap_bytes(&self) -> usize {
        match self {
            UserId::Inline { .. } => 0,
            UserId::Heap(s) => s.len(),
        }
    }
}

impl Default for UserId {
    fn default() -> Self {
        UserId::Inline {
            len: 0,
            bytes: [0; INLINE_CAPACITY],
        }
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_24_bytes() {
        assert_eq!(std::mem::size_of::<UserId>(), 24);
    }

    #[test]
    fn round_trips_short_long_and_non_ascii() {
        for s in [
            "",
            "123456789012345678",
            "1234567890123456789012",
            "12345678901234567890123",
            "ü\"\\{}",
            "user with a very long identifier that spills to the heap",
        ] {
            let id = UserId::new(s);
            assert_eq!(id.as_str(), s);
            assert_eq!(id.as_bytes(), s.as_bytes());
            assert_eq!(id.heap_bytes() > 0, s.len() > INLINE_CAPACITY, "{s}");
        }
    }

    #[test]
    fn equal_ids_compare_equal_across_representations() {
        assert_eq!(UserId::new("abc"), UserId::new("abc"));
        assert_ne!(UserId::new("abc"), UserId::new("abd"));
    }
}
