//! Page walking written once. A backend supplies "fetch the page at this cursor" and says, per
//! page, where the next one starts (if the platform says anything remains); this module decides
//! when to stop, the same way for every platform:
//!
//! - on an empty page;
//! - when the platform says nothing remains (the page's `next` is `None`);
//! - when the platform serves the same page again (the next cursor equals the one just used, or
//!   the page starts and ends with the same items as the previous one): a server that ignores
//!   the cursor or page number must not make jobctl loop forever;
//! - once the caller has enough (a limit, or a visitor that says stop).
//!
//! A short page is *not* an end: platforms cap page sizes below what was asked for (CloudPSS
//! serves at most 50 jobs whatever the request's `limit`), so "fewer than asked" only means
//! "the server's page is smaller".

use crate::error::Result;
use std::future::Future;

/// One page as a backend read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    /// The page's items, in the platform's order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when the platform says nothing remains.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page followed by the page at `next`, when there is one.
    pub fn new(items: Vec<T>, next: Option<C>) -> Self {
        Page { items, next }
    }

    /// The last page.
    pub fn last(items: Vec<T>) -> Self {
        Page { items, next: None }
    }
}

/// Walks pages from `first`: `fetch(cursor)` reads one page, `visit(items)` consumes its items
/// and returns whether to go on. Stops by the rules of this module. `fetch` is a plain closure
/// returning a future, so the whole stays `Send` inside `#[async_trait]` methods.
pub async fn walk<T, C, F, Fut, V>(first: C, mut fetch: F, mut visit: V) -> Result<()>
where
    T: PartialEq + Clone,
    C: PartialEq + Clone,
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<Page<T, C>>>,
    V: FnMut(Vec<T>) -> bool,
{
    let mut cursor = first;
    // First and last item of the previous page: a repeated page has the same ones.
    let mut previous: Option<(T, T)> = None;
    loop {
        let page = fetch(cursor.clone()).await?;
        let ends = match (page.items.first(), page.items.last()) {
            (Some(a), Some(b)) => (a.clone(), b.clone()),
            _ => return Ok(()),
        };
        if previous.as_ref() == Some(&ends) {
            tracing::warn!("the platform served the same page twice; stopping there");
            return Ok(());
        }
        previous = Some(ends);
        if !visit(page.items) {
            return Ok(());
        }
        match page.next {
            Some(next) if next != cursor => cursor = next,
            Some(_) => {
                tracing::warn!("the platform gave the same cursor twice; stopping there");
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

/// Collects items page by page (see [`walk`]) until `limit` items are collected or the pages
/// end.
pub async fn collect<T, C, F, Fut>(limit: Option<usize>, first: C, fetch: F) -> Result<Vec<T>>
where
    T: PartialEq + Clone,
    C: PartialEq + Clone,
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<Page<T, C>>>,
{
    let mut out = Vec::new();
    walk(first, fetch, |items| {
        out.extend(items);
        limit.is_none_or(|l| out.len() < l)
    })
    .await?;
    if let Some(l) = limit {
        out.truncate(l);
    }
    Ok(out)
}

/// The next offset of an offset-paged list whose `total` is the overall count: `None` once
/// `offset + served` reaches it (or, without a total, never: the walk ends on an empty page).
pub fn next_offset(offset: usize, served: usize, total: Option<u64>) -> Option<usize> {
    let next = offset + served;
    match total {
        Some(t) if next as u64 >= t => None,
        _ => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server with `n` items that serves at most `cap` per page, whatever was asked.
    fn capped(
        n: u32,
        cap: usize,
    ) -> impl Fn(usize) -> std::future::Ready<Result<Page<u32, usize>>> {
        move |offset: usize| {
            let items: Vec<u32> = (0..n).skip(offset).take(cap).collect();
            let next = next_offset(offset, items.len(), Some(n as u64));
            std::future::ready(Ok(Page::new(items, next)))
        }
    }

    #[tokio::test]
    async fn short_pages_from_a_capping_server_are_not_the_end() {
        let all = collect(None, 0, capped(120, 50)).await.unwrap();
        assert_eq!(all, (0..120).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn stops_at_the_limit() {
        let some = collect(Some(12), 0, capped(25, 10)).await.unwrap();
        assert_eq!(some, (0..12).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn stops_on_an_empty_page_when_the_platform_gives_no_total() {
        let calls = AtomicUsize::new(0);
        let fetch = |offset: usize| {
            calls.fetch_add(1, Ordering::SeqCst);
            let items: Vec<u32> = (0..7).skip(offset).take(5).collect();
            let next = next_offset(offset, items.len(), None);
            std::future::ready(Ok(Page::new(items, next)))
        };
        assert_eq!(collect(None, 0, fetch).await.unwrap().len(), 7);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "two full pages and one empty"
        );
    }

    #[tokio::test]
    async fn a_server_ignoring_the_cursor_does_not_loop() {
        // Always the first page, always "more to come".
        let fetch = |page: u32| std::future::ready(Ok(Page::new(vec![1, 2, 3], Some(page + 1))));
        assert_eq!(collect(None, 1, fetch).await.unwrap(), vec![1, 2, 3]);
        // The same cursor back.
        let fetch = |c: &'static str| std::future::ready(Ok(Page::new(vec![c], Some(c))));
        assert_eq!(collect(None, "x", fetch).await.unwrap(), vec!["x"]);
    }

    #[tokio::test]
    async fn the_visitor_can_stop_early_and_errors_end_the_walk() {
        let mut seen = 0;
        walk(0, capped(100, 10), |items| {
            seen += items.len();
            seen < 30
        })
        .await
        .unwrap();
        assert_eq!(seen, 30);
        let failing = |_c: u8| {
            std::future::ready(Err::<Page<u8, u8>, _>(crate::error::Error::unavailable(
                "down",
            )))
        };
        assert!(collect(None, 0, failing).await.is_err());
    }
}
