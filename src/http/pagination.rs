//! Cursor pagination written once: a backend supplies "fetch one page", this collects pages
//! until the limit is reached or the platform has no more.

use crate::error::Result;

/// Collects items page by page. `page(cursor)` returns the page's items and the cursor of the
/// next page (`None` when there is none). Stops once `limit` items are collected. `page` is a
/// plain closure returning a future, so the whole stays `Send` inside `#[async_trait]`.
pub async fn collect<T, C, F, Fut>(limit: Option<usize>, first: C, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(C) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<C>)>>,
{
    let mut out = Vec::new();
    let mut cursor = Some(first);
    while let Some(c) = cursor.take() {
        let (items, next) = page(c).await?;
        let empty = items.is_empty();
        out.extend(items);
        if let Some(l) = limit {
            if out.len() >= l {
                out.truncate(l);
                break;
            }
        }
        if empty {
            break;
        }
        cursor = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_at_limit_and_at_last_page() {
        let data: Vec<u32> = (0..25).collect();
        let fetch = |offset: usize| {
            let page: Vec<u32> = data.iter().skip(offset).take(10).copied().collect();
            let next = (offset + 10 < data.len()).then_some(offset + 10);
            async move { Ok((page, next)) }
        };
        assert_eq!(collect(None, 0, fetch).await.unwrap().len(), 25);
        assert_eq!(
            collect(Some(12), 0, fetch).await.unwrap(),
            (0..12).collect::<Vec<_>>()
        );
    }
}
