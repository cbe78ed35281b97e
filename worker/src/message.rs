//! Messages between the pipeline stages, and the wall clock they are
//! stamped with. The floor of the module graph: it imports only the types
//! it carries (codec records, feature vectors), never a stage.

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
