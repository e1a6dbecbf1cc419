//! The Redis publisher's outbox through the C ABI: its identity, the batches put
//! for Redis and not yet acknowledged, and the baseline (bytes of the binding's
//! own format: what Redis holds from this publisher). Kept in the journal when the
//! processor has one, so a reopened processor resumes them. The library does not
//! read the bytes; the numbers grow by one per batch, across reopenings.

use super::processor;
use crate::ffi::{bytes_arg, copy_out, eh_status, guard, out_arg, str_arg, write_out};

/// The publisher's identity: the one kept (in the journal, if any), or, the first
/// time, `proposed` (1 to 256 bytes), which is kept (and logged) from then on.
/// Copied out as `eh_leaderboard_publisher_id` copies it (`*needed` always set;
/// `buf` written when `cap >= *needed`). In a forked child the inherited identity
/// is gone: propose a new one.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle or `needed`, a proposal of a bad
/// length when none is kept), `EH_IO` (the journal could not log it),
/// `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_publisher_id(
    p: *const super::eh_processor,
    proposed: *const u8,
    proposed_len: usize,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_processor_publisher_id", || {
        // SAFETY: per the module contract.
        let (processor, proposed) =
            unsafe { (processor(p)?, str_arg(proposed, proposed_len, "proposed")?) };
        out_arg(needed, "needed")?;
        let id = processor.publisher_id(proposed)?;
        copy_out(&id, buf, cap, needed)
    })
}

/// Puts a batch (`len` bytes) in the outbox under the next number, written to
/// `*number`. Logged before it is put: on `EH_IO` nothing was.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle or `number`), `EH_IO`,
/// `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_outbox_put(
    p: *const super::eh_processor,
    batch: *const u8,
    len: usize,
    number: *mut u64,
) -> eh_status {
    guard("eh_processor_outbox_put", || {
        // SAFETY: per the module contract.
        let (processor, batch) = unsafe { (processor(p)?, bytes_arg(batch, len, "batch")?) };
        let number = out_arg(number, "number")?;
        let n = processor.outbox_put(batch)?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { write_out(number, n) };
        Ok(())
    })
}

/// The oldest batch waiting: its number in `*number` (0 when none waits) and its
/// bytes copied out as `eh_processor_publisher_id` copies (`*needed` always set).
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle or out-param), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_outbox_pending(
    p: *const super::eh_processor,
    number: *mut u64,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_processor_outbox_pending", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let number = out_arg(number, "number")?;
        let (n, bytes) = processor.outbox_pending()?.unwrap_or_default();
        copy_out(&bytes, buf, cap, needed)?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { write_out(number, n) };
        Ok(())
    })
}

/// Acknowledges batch `number` (Redis applied it; older ones too) and keeps
/// `baseline` (`len` bytes) as the baseline. Logged first: on `EH_IO` nothing
/// changed.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle), `EH_IO`, `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_outbox_ack(
    p: *const super::eh_processor,
    number: u64,
    baseline: *const u8,
    len: usize,
) -> eh_status {
    guard("eh_processor_outbox_ack", || {
        // SAFETY: per the module contract.
        let (processor, baseline) =
            unsafe { (processor(p)?, bytes_arg(baseline, len, "baseline")?) };
        processor.outbox_ack(number, baseline)
    })
}

/// The daily history's part of waiting batch `number` (what the history had
/// gathered for Redis when the batch was put: activations and heat deltas, in the
/// format of the Python publisher's scripts; empty when nothing), copied out as
/// `eh_processor_publisher_id` copies. Only with `publish_history` set.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle or `needed`; no batch waits under
/// `number`), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_outbox_history(
    p: *const super::eh_processor,
    number: u64,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_processor_outbox_history", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        out_arg(needed, "needed")?;
        let bytes = processor.outbox_community(number)?.ok_or_else(|| {
            crate::error::Error::invalid(format!("no batch waits under number {number}"))
        })?;
        copy_out(&bytes, buf, cap, needed)
    })
}

/// The kept baseline (empty at first), copied out as `eh_processor_publisher_id`
/// copies.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle or `needed`), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_outbox_baseline(
    p: *const super::eh_processor,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_processor_outbox_baseline", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        copy_out(processor.outbox_baseline()?, buf, cap, needed)
    })
}

/// Why the journal stopped being written or its last sync failed
/// (`journal_failing` in the stats), copied out as `eh_processor_publisher_id`
/// copies; `*needed` is 0 when nothing failed.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle or `needed`), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_journal_error(
    p: *const super::eh_processor,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_processor_journal_error", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        copy_out(
            processor.journal_error()?.unwrap_or_default(),
            buf,
            cap,
            needed,
        )
    })
}
