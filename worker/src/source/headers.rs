//! Input headers read through librdkafka's C API, bounded.

use rdkafka::message::BorrowedMessage;

/// Header budget of a dead-letter copy: at most this many bytes of input
/// headers are carried (keys and values); the rest is dropped and flagged.
pub const DEAD_LETTER_HEADER_BYTES: usize = 16 * 1024;

/// The record's headers as raw bytes, read through librdkafka's C API:
/// rdkafka 0.38's `Headers::iter` panics on a key that is not UTF-8. Keys
/// are carried lossily (invalid bytes become U+FFFD), values as bytes, at
/// most `budget` bytes in all; the flag says whether any were dropped.
pub fn raw_headers(m: &BorrowedMessage<'_>, budget: usize) -> (Vec<(String, Vec<u8>)>, bool) {
    use rdkafka::bindings as rd;
    let mut out = Vec::new();
    let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is a live message for the borrow's lifetime; the
    // headers it returns are owned by the message and only read here.
    let err = unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut hdrs) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return (out, false);
    }
    // SAFETY: `hdrs` is non-null and valid while `m` is.
    let n = unsafe { rd::rd_kafka_header_cnt(hdrs) };
    let mut used = 0usize;
    let mut dropped = false;
    for i in 0..n {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: index within `rd_kafka_header_cnt`; out-pointers are locals.
        let e = unsafe { rd::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) };
        if e != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: librdkafka header names are NUL-terminated.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value: &[u8] = if value.is_null() {
            &[]
        } else {
            // SAFETY: `value` points at `size` bytes owned by the message.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }
        };
        if used + key.len() + value.len() > budget {
            dropped = true;
            continue;
        }
        used += key.len() + value.len();
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    (out, dropped)
}
