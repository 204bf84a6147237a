//! The wall clock in UTC, for result files' names and reports (shared by the bench
//! binaries through `#[path]`).

/// Now in UTC as (`YYYY-MM-DD`, `HH:MM:SS`).
pub fn now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    (
        t.format("%Y-%m-%d").to_string(),
        t.format("%H:%M:%S").to_string(),
    )
}

/// Today's date in UTC as `YYYY-MM-DD`.
#[allow(dead_code)] // not every binary names files by date alone
pub fn today() -> String {
    now().0
}
