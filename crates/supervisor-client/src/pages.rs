//! Following page tokens of the list calls.

use std::future::Future;

use crate::ClientError;

/// A listing to read page after page: where it starts and how much of it to read.
pub(crate) struct Pages {
    /// The RPC's name, for the message of a protocol violation (`ListTasks`).
    pub call: &'static str,
    /// The page size asked for (0: the server's default).
    pub page_size: u32,
    /// The token of the first page to read (empty: from the start).
    pub page_token: String,
    /// The most items to read (`None`: all).
    pub limit: Option<usize>,
}

impl Pages {
    /// Calls `fetch(page_size, page_token)` for page after page until the last one or
    /// until `limit` items, lowering the page size to fetch no more than `limit`.
    /// Returns the items and the token of the next page, empty when there is none.
    ///
    /// `fetch` returns a page's items and its next page token. A server that returns
    /// the token it was given (which would loop forever) is a protocol violation.
    pub async fn collect<T, F, Fut>(self, mut fetch: F) -> Result<(Vec<T>, String), ClientError>
    where
        F: FnMut(u32, String) -> Fut,
        Fut: Future<Output = Result<(Vec<T>, String), ClientError>>,
    {
        let mut token = self.page_token;
        let mut items = Vec::new();
        loop {
            let mut page_size = self.page_size;
            if let Some(limit) = self.limit {
                let remaining = limit.saturating_sub(items.len());
                if remaining == 0 {
                    return Ok((items, token));
                }
                let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
                page_size = match self.page_size {
                    0 => remaining.min(1000),
                    size => size.min(remaining),
                };
            }
            let (page, next_token) = fetch(page_size, token.clone()).await?;
            items.extend(page);
            if next_token.is_empty() {
                return Ok((items, String::new()));
            }
            if next_token == token {
                return Err(ClientError::Protocol(format!(
                    "{} returned the page token it was given ({token:?})",
                    self.call
                )));
            }
            token = next_token;
        }
    }
}
