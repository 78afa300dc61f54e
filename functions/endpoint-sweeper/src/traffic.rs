//! Invocations per variant, from GetMetricData: over the last window for every endpoint, and
//! since the idle mark for those marked long enough ago to be deleted.
//!
//! One query per variant (SageMaker publishes per EndpointName *and* VariantName; a query on the
//! endpoint alone returns nothing and would make every endpoint look idle), up to 500 queries and
//! 100,800 datapoints a call. What could not be read is `None`, never zero: unreadable is not idle.

use std::collections::HashMap;

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, StatusCode};
use lifecycle::error::Error;
use time::OffsetDateTime;

/// GetMetricData's limit of queries per call.
pub const METRIC_BATCH: usize = 500;
/// GetMetricData's limit of datapoints per call.
const MAX_DATAPOINTS: i64 = 100_800;
/// The period of a since-the-mark query: hourly sums are kept for 455 days.
const HOUR: i64 = 3600;

/// Invocations of one (endpoint, variant): `None` when the metric could not be read.
pub type Invocations = HashMap<(String, String), Option<f64>>;

/// Invocations per variant over the window, in batches of [`METRIC_BATCH`] queries, as one sum
/// per query (the window is the period). Returns the calls made.
pub async fn over_window(
    cw: &aws_sdk_cloudwatch::Client,
    variants: &[(String, String)],
    now: OffsetDateTime,
    window_minutes: i64,
) -> (Invocations, usize) {
    let start = now - time::Duration::minutes(window_minutes);
    read(cw, variants, start, now, window_minutes * 60, METRIC_BATCH).await
}

/// Invocations per variant since each endpoint's idle mark (hourly sums, added up): an
/// endpoint is deleted only if it had none over the whole time since it was marked.
pub async fn since_mark(
    cw: &aws_sdk_cloudwatch::Client,
    marked: &[(String, String, OffsetDateTime)],
    now: OffsetDateTime,
) -> (Invocations, usize) {
    // One call per distinct mark time (marks made by one run share it).
    let mut by_start: HashMap<i64, Vec<(String, String)>> = HashMap::new();
    for (endpoint, variant, since) in marked {
        by_start
            .entry(since.unix_timestamp())
            .or_default()
            .push((endpoint.clone(), variant.clone()));
    }
    let (mut out, mut calls) = (Invocations::new(), 0);
    for (start, variants) in by_start {
        // CloudWatch wants a range of at least a minute; a younger mark reads a little before it
        // (more traffic, never less: kept, not deleted, on doubt).
        let start = OffsetDateTime::from_unix_timestamp(start)
            .unwrap_or(now)
            .min(now - time::Duration::minutes(1));
        let points = ((now - start).whole_seconds() / HOUR + 1).max(1);
        let batch = ((MAX_DATAPOINTS / points) as usize).clamp(1, METRIC_BATCH);
        let (read, n) = read(cw, &variants, start, now, HOUR, batch).await;
        out.extend(read);
        calls += n;
    }
    (out, calls)
}

async fn read(
    cw: &aws_sdk_cloudwatch::Client,
    variants: &[(String, String)],
    start: OffsetDateTime,
    end: OffsetDateTime,
    period_seconds: i64,
    batch: usize,
) -> (Invocations, usize) {
    let mut out = HashMap::new();
    let mut calls = 0;
    for chunk in variants.chunks(batch) {
        let queries = chunk
            .iter()
            .enumerate()
            .map(|(i, (endpoint, variant))| query(i, endpoint, variant, period_seconds))
            .collect::<Vec<_>>();
        let (sums, failed, n) = sums(cw, queries, start, end).await;
        calls += n;
        for (i, key) in chunk.iter().enumerate() {
            // A query missing from the answer, or not answered in full, was not read. A complete
            // answer without datapoints is zero invocations.
            let value = match sums.get(&format!("q{i}")) {
                Some((sum, true)) if !failed => Some(*sum),
                _ => None,
            };
            out.insert(key.clone(), value);
        }
    }
    (out, calls)
}

fn query(i: usize, endpoint: &str, variant: &str, period_seconds: i64) -> MetricDataQuery {
    let dimension = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
    let metric = Metric::builder()
        .namespace("AWS/SageMaker")
        .metric_name("Invocations")
        .dimensions(dimension("EndpointName", endpoint))
        .dimensions(dimension("VariantName", variant))
        .build();
    MetricDataQuery::builder()
        .id(format!("q{i}"))
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(period_seconds as i32)
                .stat("Sum")
                .build(),
        )
        .return_data(true)
        .build()
}

/// Per query id: the sum over every page, and whether every page answered it in full; whether a
/// call failed; how many calls it took.
async fn sums(
    cw: &aws_sdk_cloudwatch::Client,
    queries: Vec<MetricDataQuery>,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> (HashMap<String, (f64, bool)>, bool, usize) {
    let ts = |t: OffsetDateTime| aws_smithy_types::DateTime::from_secs(t.unix_timestamp());
    let mut sums: HashMap<String, (f64, bool)> = HashMap::new();
    let mut token: Option<String> = None;
    let mut calls = 0;
    loop {
        calls += 1;
        let res = cw
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(ts(start))
            .end_time(ts(end))
            .set_next_token(token.clone())
            .send()
            .await;
        let page = match res {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %Error::aws("GetMetricData", e), "invocations unreadable: those variants are not judged idle");
                return (sums, true, calls);
            }
        };
        token = page.next_token().map(str::to_string);
        for r in page.metric_data_results() {
            let entry = sums
                .entry(r.id().unwrap_or_default().to_string())
                .or_insert((0.0, true));
            entry.0 += r.values().iter().sum::<f64>();
            // PartialData means "more on the next page"; on the last page it means "not all".
            let complete = match r.status_code() {
                Some(StatusCode::Complete) | None => true,
                Some(StatusCode::PartialData) => token.is_some(),
                _ => false,
            };
            entry.1 &= complete;
        }
        if token.is_none() {
            return (sums, false, calls);
        }
    }
}

#[cfg(test)]
mod tests {
    //! GetMetricData answers moto never gives: partial and failed results, and pages. Mocked.
    use super::*;
    use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
    use aws_sdk_cloudwatch::types::MetricDataResult;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn result(id: &str, status: StatusCode, values: &[f64]) -> MetricDataResult {
        MetricDataResult::builder()
            .id(id)
            .status_code(status)
            .set_values(Some(values.to_vec()))
            .build()
    }

    fn variants(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("ep-{i}"), "AllTraffic".to_string()))
            .collect()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_772_344_800).unwrap()
    }

    #[tokio::test]
    async fn only_a_complete_answer_counts_and_no_datapoints_is_zero() {
        let answer = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
            GetMetricDataOutput::builder()
                .metric_data_results(result("q0", StatusCode::Complete, &[]))
                .metric_data_results(result("q1", StatusCode::PartialData, &[3.0]))
                .metric_data_results(result("q2", StatusCode::InternalError, &[]))
                .metric_data_results(result("q3", StatusCode::Complete, &[2.0, 5.0]))
                .build()
        });
        let cw = mock_client!(aws_sdk_cloudwatch, [&answer]);
        let (inv, calls) = over_window(&cw, &variants(5), now(), 60).await;
        let get = |i: usize| inv[&(format!("ep-{i}"), "AllTraffic".to_string())];
        assert_eq!(get(0), Some(0.0), "complete, no datapoints: zero");
        assert_eq!(get(1), None, "partial on the last page: not read");
        assert_eq!(get(2), None, "failed: not read");
        assert_eq!(get(3), Some(7.0));
        assert_eq!(get(4), None, "missing from the answer: not read");
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn pages_add_up_and_a_failed_call_reads_nothing() {
        let first = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
            GetMetricDataOutput::builder()
                .metric_data_results(result("q0", StatusCode::PartialData, &[4.0]))
                .next_token("more")
                .build()
        });
        let second = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
            GetMetricDataOutput::builder()
                .metric_data_results(result("q0", StatusCode::Complete, &[1.0]))
                .build()
        });
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&first, &second]);
        let (inv, calls) = over_window(&cw, &variants(1), now(), 60).await;
        assert_eq!(
            inv[&("ep-0".to_string(), "AllTraffic".to_string())],
            Some(5.0)
        );
        assert_eq!(calls, 2);

        // 600 variants: two batches, both refused.
        let denied = || {
            mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_error(|| {
                aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataError::unhandled(
                    "AccessDenied",
                )
            })
        };
        let (a, b) = (denied(), denied());
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&a, &b]);
        let (inv, calls) = over_window(&cw, &variants(600), now(), 60).await;
        assert_eq!(calls, 2);
        assert_eq!(inv.len(), 600);
        assert!(inv.values().all(Option::is_none), "unreadable is not idle");
    }

    #[tokio::test]
    async fn a_long_mark_keeps_each_call_under_the_datapoint_limit() {
        // Marked 30 days ago: 721 hourly points a query, so at most 139 queries a call.
        let ok = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
            .then_output(|| GetMetricDataOutput::builder().build());
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&ok]);
        let since = now() - time::Duration::days(30);
        let marked: Vec<_> = (0..300)
            .map(|i| (format!("ep-{i}"), "AllTraffic".to_string(), since))
            .collect();
        let (inv, calls) = since_mark(&cw, &marked, now()).await;
        assert_eq!(calls, 3, "300 queries at 139 a call");
        assert_eq!(inv.len(), 300);
        assert!(
            inv.values().all(Option::is_none),
            "not in the answer: not read"
        );
    }
}
