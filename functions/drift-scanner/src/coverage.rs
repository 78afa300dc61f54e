//! The coverage gap: how much of the catalog the adapter has never seen.
//!
//! [`Tally`] is pure and merges, so each parallel scan segment keeps its own and the results add
//! up. [`scan`] reads only the two attributes it needs, in `segments` parallel segments, page by
//! page: memory stays flat whatever the table's size.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use lifecycle::error::{Error, Result};
use serde::Serialize;
use time::OffsetDateTime;

use crate::dates::parse_created;

/// How many missed titles the record keeps (the newest ones).
pub const SAMPLE: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    pub items: u64,
    /// Created after the cutoff: the adapter never saw them.
    pub after_cutoff: u64,
    /// No creation attribute.
    pub missing_date: u64,
    /// A creation attribute that is not a time.
    pub bad_date: u64,
    /// The newest items after the cutoff: (created, title).
    #[serde(skip)]
    pub newest: Vec<(OffsetDateTime, String)>,
}

impl Tally {
    pub fn add(
        &mut self,
        item: &HashMap<String, AttributeValue>,
        created: &str,
        title: &str,
        cutoff: OffsetDateTime,
    ) {
        self.items += 1;
        let Some(value) = item.get(created) else {
            self.missing_date += 1;
            return;
        };
        let Some(at) = parse_created(value) else {
            self.bad_date += 1;
            return;
        };
        if at > cutoff {
            self.after_cutoff += 1;
            let title = item
                .get(title)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_else(|| "(untitled)".into());
            self.keep(at, title);
        }
    }

    fn keep(&mut self, at: OffsetDateTime, title: String) {
        if self.newest.len() < SAMPLE {
            self.newest.push((at, title));
        } else if let Some(oldest) = self.newest.iter_mut().min_by_key(|(t, _)| *t)
            && at > oldest.0
        {
            *oldest = (at, title);
        }
    }

    pub fn merge(mut self, other: Tally) -> Tally {
        self.items += other.items;
        self.after_cutoff += other.after_cutoff;
        self.missing_date += other.missing_date;
        self.bad_date += other.bad_date;
        for (at, title) in other.newest {
            self.keep(at, title);
        }
        self
    }

    /// Items after the cutoff over all items, in percent; items without a readable date count in
    /// the denominator (they are in the catalog) but not as new.
    pub fn gap_pct(&self) -> f64 {
        if self.items == 0 {
            0.0
        } else {
            100.0 * self.after_cutoff as f64 / self.items as f64
        }
    }

    /// The sample of missed titles, newest first.
    pub fn sample(&self) -> Vec<String> {
        let mut v = self.newest.clone();
        v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        v.into_iter().map(|(_, t)| t).collect()
    }
}

/// Scans the table in `segments` parallel segments, reading only the creation and title
/// attributes.
pub async fn scan(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    created: &str,
    title: &str,
    segments: i32,
    page_size: Option<i32>,
    cutoff: OffsetDateTime,
) -> Result<Tally> {
    let tasks = (0..segments).map(|segment| async move {
        let mut tally = Tally::default();
        let mut pages = ddb
            .scan()
            .table_name(table)
            .segment(segment)
            .total_segments(segments)
            .set_limit(page_size)
            .projection_expression("#c, #t")
            .expression_attribute_names("#c", created)
            .expression_attribute_names("#t", title)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::aws("Scan", e))?;
            for item in page.items() {
                tally.add(item, created, title, cutoff);
            }
        }
        Ok::<_, Error>(tally)
    });
    // Concurrent on one task: the runtime is single-threaded and the work is waiting on DynamoDB.
    let tallies = futures_util::future::try_join_all(tasks).await?;
    Ok(tallies.into_iter().fold(Tally::default(), Tally::merge))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dates::parse_cutoff;

    fn item(created: Option<&str>, title: &str) -> HashMap<String, AttributeValue> {
        let mut m = HashMap::from([("title".to_string(), AttributeValue::S(title.into()))]);
        if let Some(c) = created {
            m.insert("created_at".into(), AttributeValue::S(c.into()));
        }
        m
    }

    #[test]
    fn new_missing_and_bad_dates_are_all_counted() {
        let cutoff = parse_cutoff("2025-09-01").unwrap();
        let mut a = Tally::default();
        for (c, t) in [
            (Some("2025-08-01"), "old"),
            (Some("2026-03-01"), "Chainsaw Man 17"),
            (None, "no date"),
            (Some("soon"), "bad date"),
        ] {
            a.add(&item(c, t), "created_at", "title", cutoff);
        }
        let mut b = Tally::default();
        b.add(
            &item(Some("2026-03-05T10:00:00Z"), "Frieren 14"),
            "created_at",
            "title",
            cutoff,
        );
        let t = a.merge(b);
        assert_eq!(
            (t.items, t.after_cutoff, t.missing_date, t.bad_date),
            (5, 2, 1, 1)
        );
        assert_eq!(t.gap_pct(), 40.0);
        assert_eq!(t.sample(), ["Frieren 14", "Chainsaw Man 17"]);
        assert_eq!(Tally::default().gap_pct(), 0.0);
    }

    #[test]
    fn the_sample_keeps_the_newest_titles_only() {
        let cutoff = parse_cutoff("2025-09-01").unwrap();
        let mut t = Tally::default();
        for day in 1..=28 {
            t.add(
                &item(Some(&format!("2026-02-{day:02}")), &format!("t{day:02}")),
                "created_at",
                "title",
                cutoff,
            );
        }
        let sample = t.sample();
        assert_eq!(sample.len(), SAMPLE);
        assert_eq!(sample[0], "t28");
        assert_eq!(sample[SAMPLE - 1], "t09");
    }
}
