//! Library-owned result blocks: fixed-width rows of 8-byte fields followed by the
//! rows' strings, in one `u64` allocation the caller releases with a `_free`.
//!
//! Layout: a header word holding the block's length in words (so freeing never
//! trusts caller-visible fields), then `n` rows of `W` words, then the strings back
//! to back, each followed by a NUL. The last two words of each row are the string's
//! offset (from the strings' start) and length; the caller fills the others.

use std::ffi::c_void;

/// A packed block; the public result structs copy these fields.
pub(crate) struct Packed {
    pub len: usize,
    pub rows: *const u64,
    pub ids: *const u8,
    pub size: usize,
    pub owner: *mut c_void,
}

/// Packs `rows` (the first `W - 2` words of each) and their strings.
pub(crate) fn pack<const W: usize>(rows: &[([u64; W], &str)]) -> Packed {
    let id_bytes: usize = rows.iter().map(|(_, id)| id.len() + 1).sum();
    let size = rows.len() * W * 8 + id_bytes;
    let total_words = 1 + size.div_ceil(8);
    let mut block: Box<[u64]> = vec![0u64; total_words].into_boxed_slice();
    block[0] = total_words as u64;
    let mut id_offset = 0usize;
    for (i, (fields, id)) in rows.iter().enumerate() {
        let words = &mut block[1 + i * W..1 + (i + 1) * W];
        words[..W - 2].copy_from_slice(&fields[..W - 2]);
        words[W - 2] = id_offset as u64;
        words[W - 1] = id.len() as u64;
        id_offset += id.len() + 1;
    }
    let ids_start = 8 + rows.len() * W * 8;
    {
        // SAFETY: the block is `block.len() * 8 >= 8 + size` initialised bytes; u8
        // has alignment 1 and every bit pattern is a valid u64, so viewing the words
        // as bytes for the copy is sound; the view ends before `block` is used again.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(block.as_mut_ptr().cast::<u8>(), block.len() * 8)
        };
        let mut at = ids_start;
        for (_, id) in rows {
            bytes[at..at + id.len()].copy_from_slice(id.as_bytes());
            // The NUL terminator is already there: the block starts zeroed.
            at += id.len() + 1;
        }
    }
    let base = Box::into_raw(block).cast::<u64>();
    Packed {
        len: rows.len(),
        rows: base.wrapping_add(1),
        ids: base.cast::<u8>().wrapping_add(ids_start),
        size,
        owner: base.cast::<c_void>(),
    }
}

/// Frees a block made by [`pack`]; `owner` NULL is a no-op.
pub(crate) fn free(owner: *mut c_void) {
    if owner.is_null() {
        return;
    }
    let base = owner.cast::<u64>();
    // SAFETY: `owner` is the start of a `[u64]` block made by `pack`, whose first
    // word is the block's length in words; callers clear their `owner` field before
    // calling, so each block is freed once.
    let words = unsafe { base.read() } as usize;
    let slice = std::ptr::slice_from_raw_parts_mut(base, words);
    // SAFETY: as above: the same pointer and length Box::into_raw produced.
    drop(unsafe { Box::from_raw(slice) });
}

/// The body of the `_free` of a result list struct holding one block made by
/// [`pack`] (fields `len`, `rows`, `ids`, `size` and `owner`): `$list` is the
/// caller's pointer, NULL or a list this library filled; NULL, a zeroed struct and
/// a second call are no-ops. Frees the block (panics kept inside, reported under
/// `$name`) and zeroes the struct.
macro_rules! release_list {
    ($name:literal, $list:expr) => {{
        // SAFETY: the `_free`'s contract: the caller passes NULL or a list filled
        // by this library, not used by another thread during the call.
        if let Some(list) = unsafe { $list.as_mut() } {
            let owner = std::mem::replace(&mut list.owner, std::ptr::null_mut());
            list.len = 0;
            list.rows = std::ptr::null();
            list.ids = std::ptr::null();
            list.size = 0;
            if !owner.is_null() {
                $crate::ffi::guard_free($name, || $crate::ffi::rows::free(owner));
            }
        }
    }};
}
pub(crate) use release_list;
