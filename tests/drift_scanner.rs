//! drift-scanner against the local AWS, through the same handler the Lambda runs.

use lifecycle::ledger::Ledger;
use lifecycle::outcome::Outcome;
use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use drift_scanner::{Config, ScanReport, Scanner, handle};
use integration::scenario::{PASSING, Scenario};
use integration::*;
use lifecycle::Error;
use serde_json::{Value, json};

/// A catalog item: `created` is None for an item without the attribute.
fn product(
    id: usize,
    title: &str,
    created: Option<AttributeValue>,
    padding: usize,
) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("id".to_string(), AttributeValue::S(format!("B{id:07}"))),
        ("title".to_string(), AttributeValue::S(title.to_string())),
        ("price".to_string(), AttributeValue::N("9.99".into())),
    ]);
    if let Some(c) = created {
        item.insert("created_at".into(), c);
    }
    if padding > 0 {
        item.insert("description".into(), AttributeValue::S("x".repeat(padding)));
    }
    item
}

fn date(s: &str) -> Option<AttributeValue> {
    Some(AttributeValue::S(s.to_string()))
}

struct Catalog<'a> {
    fx: &'a Fixture,
    setup: lifecycle::aws::Clients,
    table: String,
    bucket: String,
    /// Training jobs are account-wide: each test has its own adapter.
    adapter: String,
}

impl<'a> Catalog<'a> {
    async fn new(fx: &'a Fixture) -> Self {
        let setup = fx.setup_clients().await;
        let table = format!("{}-products", fx.id);
        let bucket = format!("{}-training", fx.id);
        setup
            .dynamodb
            .create_table()
            .table_name(&table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap();
        setup
            .s3
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        encrypt_bucket(fx, &setup.s3, &bucket).await;
        let adapter = format!("{}-lora", fx.id);
        Self {
            fx,
            setup,
            table,
            bucket,
            adapter,
        }
    }

    async fn put(&self, items: Vec<HashMap<String, AttributeValue>>) {
        for chunk in items.chunks(25) {
            let writes = chunk
                .iter()
                .map(|i| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(i.clone()))
                                .build()
                                .unwrap(),
                        )
                        .build()
                })
                .collect();
            self.setup
                .dynamodb
                .batch_write_item()
                .request_items(&self.table, writes)
                .send()
                .await
                .unwrap();
        }
    }

    /// `old` items from before the September cutoff, `new` ones from 2026 (new releases).
    async fn seed(&self, old: usize, new: usize) {
        let mut items = vec![];
        for i in 0..old {
            items.push(product(
                i,
                &format!("Backlist {i}"),
                date(&format!("2025-0{}-15", 1 + i % 8)),
                0,
            ));
        }
        for i in 0..new {
            let created = format!("2026-0{}-{:02}T09:00:00Z", 1 + i % 3, 1 + i % 28);
            items.push(product(
                old + i,
                &format!("New release {i}"),
                date(&created),
                0,
            ));
        }
        self.put(items).await;
    }

    fn env(&self, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("ADAPTER_NAME", self.adapter.clone()),
            ("PRODUCTS_TABLE", self.table.clone()),
            ("TRAINING_BUCKET", self.bucket.clone()),
            (
                "TRAINING_IMAGE",
                "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:2.1"
                    .into(),
            ),
            ("TRAINING_ROLE_ARN", ROLE_ARN.into()),
            (
                "TRAINING_HYPERPARAMETERS",
                json!({"lora_r": "16", "epochs": "3"}).to_string(),
            ),
            ("LEDGER_TABLE", self.fx.table.clone()),
            ("ENVIRONMENT", "production".into()),
        ];
        for (k, v) in extra {
            env.retain(|(e, _)| e != k);
            env.push((k, v.clone()));
        }
        env
    }

    fn scanner(&self, extra: &[(&'static str, String)]) -> Scanner {
        let env = self.env(extra);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = Config::from_source(&pairs.as_slice()).unwrap();
        Scanner::new(self.fx.clients_for(drift_scanner::FUNCTION), config)
    }

    async fn object(&self, uri: &str) -> String {
        let key = uri.strip_prefix(&format!("s3://{}/", self.bucket)).unwrap();
        let out = self
            .setup
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
    }
}

async fn scan(fx: &Fixture, scanner: &Scanner, request_id: &str) -> Result<ScanReport, Error> {
    handle(
        scanner,
        fx.event(event_file("drift-scanner-schedule.json"), request_id),
    )
    .await
    .map(|r| r.scan().expect("a scan's report"))
}

fn with_cutoff() -> Vec<(&'static str, String)> {
    vec![("TRAINING_CUTOFF", "2025-09-01".into())]
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_threshold_the_catalog_is_exported_and_one_job_starts() {
    // The cutoff comes from the package the endpoint serves.
    let s = Scenario::new("drift").await;
    let mut meta = PASSING.to_vec();
    meta.push(("catalog_snapshot_date", "2025-09-01"));
    let v1 = s.registry().register("Approved", &meta).await;
    s.make_live(&v1, "v1").await;
    let catalog = Catalog::new(&s.fx).await;
    catalog.seed(180, 20).await;
    let scanner = catalog.scanner(&[("ENDPOINT_NAME", s.endpoint.clone())]);

    let r = scan(&s.fx, &scanner, "first").await.unwrap();
    assert_eq!(r.outcome, Outcome::Retraining, "{}", r.reason);
    assert_eq!(
        (
            r.measurement.items,
            r.measurement.after_cutoff,
            r.measurement.gap_pct
        ),
        (200, 20, 10.0)
    );
    assert!(
        r.measurement.cutoff_source.contains(&v1),
        "{}",
        r.measurement.cutoff_source
    );
    assert_eq!(r.measurement.sample.len(), 20);
    assert!(r.measurement.sample[0].starts_with("New release"));

    let export_uri = r.export_uri.clone().unwrap();
    let snapshot = drift_scanner::dates::snapshot_date(time::OffsetDateTime::now_utc());
    assert_eq!(
        export_uri,
        format!(
            "s3://{}/catalog-snapshots/{}/snapshot={snapshot}/catalog-{}.jsonl",
            catalog.bucket,
            catalog.adapter,
            lifecycle::names::fingerprint(&[lifecycle::catalog::DEFAULT_TEMPLATE])
        )
    );
    let body = catalog.object(&export_uri).await;
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200);
    // Seed 000's fine-tuning format; the catalog has no genre, author or synopsis: empty parts.
    assert!(
        lines.iter().all(|l| {
            let text = l["text"].as_str().unwrap();
            l.as_object().unwrap().len() == 1
                && text.starts_with("Title: ")
                && text.ends_with(" Genre:  Author:  Synopsis: ")
        }),
        "{:?}",
        &lines[..2]
    );
    assert!(lines.iter().any(|l| {
        l["text"]
            .as_str()
            .unwrap()
            .starts_with("Title: New release")
    }));

    let job = r.training_job.clone().unwrap();
    let described = s
        .setup
        .sagemaker
        .describe_training_job()
        .training_job_name(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.training_job_status().unwrap().as_str(),
        "InProgress"
    );
    assert_eq!(described.hyper_parameters().unwrap()["lora_r"], "16");
    let tags = s
        .setup
        .sagemaker
        .list_tags()
        .resource_arn(described.training_job_arn().unwrap())
        .send()
        .await
        .unwrap();
    let tag = |k: &str| {
        tags.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .unwrap()
            .to_string()
    };
    assert_eq!(tag("lifecycle:catalog-snapshot-date"), snapshot);
    assert_eq!(tag("lifecycle:catalog-export-uri"), export_uri);

    // Again the same day: nothing new.
    let again = scan(&s.fx, &scanner, "again").await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyStarted, "{}", again.reason);
    assert_eq!(s.fx.count("CreateTrainingJob"), 1);
    assert_eq!(s.fx.count("CreateMultipartUpload"), 1);
    let ledger = s
        .deployer
        .ledger
        .decisions(&format!("adapter#{}", catalog.adapter))
        .await
        .unwrap();
    let outcomes: Vec<&str> = ledger
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retraining", "already_started"]);
    assert_eq!(ledger[0]["evidence"]["after_cutoff"], 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_or_finished_job_for_the_gap_blocks_a_second_one_until_its_adapter_serves() {
    let fx = Fixture::new("driftbusy").await;
    let catalog = Catalog::new(&fx).await;
    catalog.seed(50, 50).await;
    let scanner = catalog.scanner(&with_cutoff());
    let earlier = lifecycle::training::job_name(&catalog.adapter, "2026-01-10");
    lifecycle::training::start(
        &catalog.setup.sagemaker,
        &lifecycle::training::TrainingJob {
            spec: scanner.config.training.clone(),
            name: earlier.clone(),
            adapter: catalog.adapter.clone(),
            snapshot_date: "2026-01-10".into(),
            export_uri: "s3://elsewhere/catalog.jsonl".into(),
            cause: "a test".into(),
        },
    )
    .await
    .unwrap();

    let r = scan(&fx, &scanner, "busy").await.unwrap();
    assert_eq!(r.outcome, Outcome::TrainingInProgress, "{}", r.reason);
    assert!(r.reason.contains(&earlier), "{}", r.reason);
    assert_eq!(fx.count("CreateTrainingJob"), 0);
    assert_eq!(fx.count("CreateMultipartUpload"), 0);

    // Finished: it trained on the catalog of 2026-01-10, newer than the served cutoff; tomorrow's
    // scan must not start another job for the same gap.
    local_aws().control(
        "training-jobs",
        Some(json!({"name": earlier, "status": "Completed"})),
    );
    let r = scan(&fx, &scanner, "finished").await.unwrap();
    assert_eq!(r.outcome, Outcome::AwaitingAdapter, "{}", r.reason);
    assert!(r.reason.contains(&earlier), "{}", r.reason);
    assert_eq!(fx.count("CreateTrainingJob"), 0);

    // Its adapter serves (the cutoff is its snapshot date) and the catalog still outgrew it.
    let served = catalog.scanner(&[("TRAINING_CUTOFF", "2026-01-10".into())]);
    let r = scan(&fx, &served, "served").await.unwrap();
    assert_eq!(r.outcome, Outcome::Retraining, "{}", r.reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn within_the_threshold_nothing_is_exported_or_started() {
    let fx = Fixture::new("driftok").await;
    let catalog = Catalog::new(&fx).await;
    catalog.seed(97, 3).await;
    let r = scan(&fx, &catalog.scanner(&with_cutoff()), "ok")
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::WithinThreshold, "{}", r.reason);
    assert_eq!(r.measurement.gap_pct, 3.0);
    let mutations: Vec<Call> = fx
        .calls()
        .into_iter()
        .filter(|c| c.mutating && c.service != "dynamodb")
        .collect();
    assert_eq!(mutations, vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_dates_are_counted_and_an_empty_catalog_is_a_clear_result() {
    let fx = Fixture::new("driftbad").await;
    let catalog = Catalog::new(&fx).await;
    let r = scan(&fx, &catalog.scanner(&with_cutoff()), "empty")
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::EmptyCatalog, "{}", r.reason);
    assert_eq!(r.measurement.items, 0);

    catalog.seed(10, 0).await;
    catalog
        .put(vec![
            product(100, "No date", None, 0),
            product(101, "Garbled", date("soon-ish"), 0),
            product(
                102,
                "Epoch millis",
                Some(AttributeValue::N("1772344800000".into())),
                0,
            ),
            product(103, "A map", Some(AttributeValue::M(HashMap::new())), 0),
        ])
        .await;
    let r = scan(
        &fx,
        &catalog.scanner(&[
            ("TRAINING_CUTOFF", "2025-09-01".into()),
            ("DRIFT_THRESHOLD_PCT", "50".into()),
        ]),
        "bad",
    )
    .await
    .unwrap();
    assert_eq!(
        (
            r.measurement.items,
            r.measurement.after_cutoff,
            r.measurement.missing_date,
            r.measurement.bad_date
        ),
        (14, 1, 1, 2)
    );
    assert_eq!(r.measurement.sample, ["Epoch millis"]);
    assert!(
        r.reason
            .contains("1 items have no created_at and 2 an unreadable one"),
        "{}",
        r.reason
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cutoff_is_a_clear_error_and_nothing_is_scanned() {
    let s = Scenario::new("nocutoff").await;
    s.with_v1_live().await; // its package has no catalog_snapshot_date
    let catalog = Catalog::new(&s.fx).await;
    catalog.seed(5, 5).await;
    let scanner = catalog.scanner(&[("ENDPOINT_NAME", s.endpoint.clone())]);
    let err = scan(&s.fx, &scanner, "none").await.unwrap_err();
    assert!(matches!(err, Error::InvalidData(_)), "{err}");
    assert!(err.to_string().contains("catalog_snapshot_date"), "{err}");
    assert_eq!(s.fx.count("Scan"), 0);
    assert_eq!(s.fx.count("CreateTrainingJob"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_and_sequential_scans_agree_and_large_exports_go_in_parts() {
    let fx = Fixture::new("driftbig").await;
    let catalog = Catalog::new(&fx).await;
    // About 15 MB: more than two 6 MiB parts.
    let items = (0..1500)
        .map(|i| {
            let created = if i % 3 == 0 {
                "2026-02-01"
            } else {
                "2025-05-01"
            };
            product(i, &format!("Volume {i}"), date(created), 10_000)
        })
        .collect();
    catalog.put(items).await;
    let seq = scan(
        &fx,
        &catalog.scanner(&[
            ("TRAINING_CUTOFF", "2025-09-01".into()),
            ("SCAN_SEGMENTS", "1".into()),
            ("DRY_RUN", "true".into()),
        ]),
        "seq",
    )
    .await
    .unwrap();
    assert_eq!((seq.outcome, seq.dry_run), (Outcome::Retraining, true));
    assert!(
        seq.results
            .iter()
            .all(|r| r.ends_with("dry run, not applied")),
        "{:?}",
        seq.results
    );
    assert_eq!(
        fx.count("CreateMultipartUpload"),
        0,
        "dry run exports nothing"
    );
    // Recorded with the plan it would have applied.
    let recorded = Ledger::new(fx.clients.dynamodb.clone(), fx.table.clone())
        .decisions(&format!("adapter#{}", catalog.adapter))
        .await
        .unwrap();
    let last = recorded.last().unwrap();
    assert_eq!(
        (&last["outcome"], &last["dry_run"]),
        (&json!("retraining"), &json!(true))
    );
    assert_eq!(last["plan"][0]["action"], "export_catalog");
    assert_eq!(last["plan"][1]["action"], "start_training_job");
    let par = scan(
        &fx,
        &catalog.scanner(&[
            ("TRAINING_CUTOFF", "2025-09-01".into()),
            ("SCAN_SEGMENTS", "8".into()),
            (
                "EXPORT_TEMPLATE",
                "Title: {title} Synopsis: {description}".into(),
            ),
        ]),
        "par",
    )
    .await
    .unwrap();
    assert_eq!(
        (seq.measurement.items, seq.measurement.after_cutoff),
        (par.measurement.items, par.measurement.after_cutoff)
    );
    assert_eq!(
        (par.measurement.items, par.measurement.after_cutoff),
        (1500, 500)
    );
    let uri = par.export_uri.unwrap();
    assert!(fx.count("UploadPart") >= 3, "about 15 MB in 6 MiB parts");
    assert!(par.results[0].contains("1500 items"), "{:?}", par.results);
    let body = catalog.object(&uri).await;
    assert!(
        par.results[0].contains(&format!("{} bytes", body.len())),
        "{:?}",
        par.results
    );
    assert_eq!(
        body.lines()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok())
            .count(),
        1500
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn both_schedule_payloads_run_and_anything_else_is_refused_without_calls() {
    let fx = Fixture::new("driftsched").await;
    let catalog = Catalog::new(&fx).await;
    let scanner = catalog.scanner(&with_cutoff());
    let r = handle(&scanner, fx.event(json!({"schedule": "drift-scan"}), "v2"))
        .await
        .unwrap()
        .scan()
        .unwrap();
    assert_eq!(r.outcome, Outcome::EmptyCatalog);
    let before = fx.calls().len();
    for bad in [json!([1]), event_file("model-package-approved.json")] {
        let err = handle(&scanner, fx.event(bad, "bad")).await.unwrap_err();
        assert!(matches!(err, Error::MalformedEvent(_)), "{err}");
    }
    assert_eq!(fx.calls().len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_export_is_aborted_and_starts_no_job() {
    let fx = Fixture::new("driftabort").await;
    let catalog = Catalog::new(&fx).await;
    catalog.seed(10, 10).await;
    let scanner = catalog.scanner(&with_cutoff());
    local_aws().control(
        "faults",
        Some(json!({"throttle_share": 1.0, "operations": ["UploadPart"], "access_key": fx.key})),
    );
    let err = scan(&fx, &scanner, "throttled").await.unwrap_err();
    local_aws().control("faults", Some(json!({"access_key": fx.key})));
    assert!(err.to_string().contains("UploadPart"), "{err}");
    assert!(err.is_retryable(), "S3 SlowDown is worth another try");
    assert_eq!(fx.count("AbortMultipartUpload"), 1);
    assert_eq!(fx.count("CreateTrainingJob"), 0);
    // Recorded like any other failure: the plan, and where it stopped.
    let recorded = Ledger::new(fx.clients.dynamodb.clone(), fx.table.clone())
        .decisions(&format!("adapter#{}", catalog.adapter))
        .await
        .unwrap();
    let last = recorded.last().unwrap();
    assert_eq!(last["outcome"], "retrying");
    assert!(
        last["reason"].as_str().unwrap().contains("UploadPart"),
        "{last}"
    );
    assert!(
        last["results"][0]
            .as_str()
            .unwrap()
            .starts_with("export_catalog: failed"),
        "{last}"
    );

    // Tomorrow's run (or a retry) starts clean.
    let r = scan(&fx, &scanner, "again").await.unwrap();
    assert_eq!(r.outcome, Outcome::Retraining, "{}", r.reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_export_or_training_job_is_recorded_for_a_person_and_fails_the_invocation() {
    let fx = Fixture::new("driftrefused").await;
    let catalog = Catalog::new(&fx).await;
    catalog.seed(10, 10).await;
    let scanner = catalog.scanner(&with_cutoff());
    let ledger = Ledger::new(fx.clients.dynamodb.clone(), fx.table.clone());
    let subject = format!("adapter#{}", catalog.adapter);
    for (operation, status) in [("CreateMultipartUpload", 403), ("CreateTrainingJob", 400)] {
        local_aws().control(
            "faults",
            Some(json!({"error": {"code": "AccessDenied", "status": status}, "operations": [operation],
                        "access_key": fx.key})),
        );
        let err = scan(&fx, &scanner, operation).await.unwrap_err();
        local_aws().control("faults", Some(json!({"access_key": fx.key})));
        assert!(err.to_string().contains(operation), "{err}");
        assert!(!err.is_retryable(), "{err}");
        let last = ledger.decisions(&subject).await.unwrap().pop().unwrap();
        assert_eq!(
            (&last["outcome"], &last["severity"]),
            (&json!("failed"), &json!("needs_person")),
            "{last}"
        );
        assert!(last["expires_at"].is_null(), "kept for the audit");
        // The same plan is not tried again at once (backing off); a person fixed the access.
        ledger.clear_failure(&subject).await.unwrap();
    }
    assert_eq!(fx.count("CreateTrainingJob"), 1, "the refused one only");
}

/// A training job's state-change event, as EventBridge delivers it.
fn job_event(name: &str, status: &str) -> Value {
    let mut e = event_file("training-job-completed.json");
    e["detail"]["TrainingJobName"] = json!(name);
    e["detail"]["TrainingJobStatus"] = json!(status);
    e
}

async fn job_ended(
    fx: &Fixture,
    scanner: &Scanner,
    name: &str,
    status: &str,
    request_id: &str,
) -> lifecycle::pipeline::Summary {
    handle(scanner, fx.event(job_event(name, status), request_id))
        .await
        .unwrap()
        .job()
        .expect("a job's decision")
}

/// v1 serves with the cutoff of 2025-09-01; the catalog has outgrown it; one retraining runs.
async fn retraining_started(s: &Scenario) -> (Catalog<'_>, Scanner, String) {
    let mut meta = PASSING.to_vec();
    meta.push(("catalog_snapshot_date", "2025-09-01"));
    let v1 = s.registry().register("Approved", &meta).await;
    s.make_live(&v1, "v1").await;
    let catalog = Catalog::new(&s.fx).await;
    catalog.seed(180, 20).await;
    let scanner = catalog.scanner(&[("ENDPOINT_NAME", s.endpoint.clone())]);
    let r = scan(&s.fx, &scanner, "scan").await.unwrap();
    assert_eq!(r.outcome, Outcome::Retraining, "{}", r.reason);
    (catalog, scanner, r.training_job.unwrap())
}

/// The versions of the scenario's group, as the registry lists them.
async fn group_packages(
    s: &Scenario,
) -> aws_sdk_sagemaker::operation::list_model_packages::ListModelPackagesOutput {
    s.setup
        .sagemaker
        .list_model_packages()
        .model_package_group_name(&s.group)
        .send()
        .await
        .unwrap()
}

/// The local AWS ends a job as SageMaker would.
fn end_job(name: &str, status: &str, metrics: Value, failure: Option<&str>) {
    local_aws().control(
        "training-jobs",
        Some(
            json!({"name": name, "status": status, "metrics": metrics, "failure_reason": failure}),
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_retraining_becomes_one_candidate_package_with_its_lineage_and_metrics() {
    let s = Scenario::new("loopdone").await;
    let (catalog, scanner, job) = retraining_started(&s).await;
    end_job(&job, "Completed", json!({"validation_loss": 0.29}), None);

    let d = job_ended(&s.fx, &scanner, &job, "Completed", "done").await;
    assert_eq!(d.outcome, Outcome::CandidateAwaitsApproval, "{}", d.reason);
    let packages = group_packages(&s).await;
    assert_eq!(
        packages.model_package_summary_list().len(),
        2,
        "v1 and the candidate"
    );
    let candidate = packages
        .model_package_summary_list()
        .iter()
        .map(|p| p.model_package_arn().unwrap().to_string())
        .find(|a| a.ends_with("/2"))
        .unwrap();
    let pkg = s.registry().package(&candidate).await;
    assert_eq!(
        pkg.model_approval_status().unwrap().as_str(),
        "PendingManualApproval"
    );
    let meta = pkg.customer_metadata_properties().unwrap();
    let snapshot = drift_scanner::dates::snapshot_date(time::OffsetDateTime::now_utc());
    assert_eq!(meta["catalog_snapshot_date"], snapshot);
    assert_eq!(meta["training_job"], job);
    assert!(meta["catalog_export_uri"].starts_with(&format!("s3://{}/", catalog.bucket)));
    assert!(
        meta["retraining_cause"].contains("coverage gap 10.00 pct"),
        "{meta:?}"
    );
    let container = &pkg.inference_specification().unwrap().containers()[0];
    assert!(
        container
            .model_data_url()
            .unwrap()
            .ends_with(&format!("{job}/output/model.tar.gz")),
        "{container:?}"
    );
    // The deployer's gates read the job's metrics from the ModelQuality report.
    let report = pkg
        .model_metrics()
        .and_then(|m| m.model_quality())
        .and_then(|q| q.statistics())
        .and_then(|s| s.s3_uri())
        .unwrap()
        .to_string();
    let stats: Value = serde_json::from_str(&catalog.object(&report).await).unwrap();
    assert_eq!(stats["training_metrics"]["validation_loss"]["value"], 0.29);

    // The same event again: still one package.
    let again = job_ended(&s.fx, &scanner, &job, "Completed", "again").await;
    assert_eq!(again.outcome, Outcome::Duplicate, "{}", again.reason);
    assert_eq!(s.fx.count("CreateModelPackage"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_deliveries_at_once_register_one_package() {
    let s = Scenario::new("looprace").await;
    let (_catalog, scanner, job) = retraining_started(&s).await;
    end_job(&job, "Completed", json!({"validation_loss": 0.3}), None);
    let (a, b) = tokio::join!(
        job_ended(&s.fx, &scanner, &job, "Completed", "a"),
        job_ended(&s.fx, &scanner, &job, "Completed", "b"),
    );
    // Both may have found none and asked to register: SageMaker's ClientToken makes it one.
    assert!(
        a.outcome == Outcome::CandidateAwaitsApproval
            || b.outcome == Outcome::CandidateAwaitsApproval
    );
    let packages = group_packages(&s).await;
    assert_eq!(
        packages.model_package_summary_list().len(),
        2,
        "v1 and one candidate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_retraining_asks_a_person_and_the_next_scan_may_start_another() {
    let s = Scenario::new("loopfail").await;
    let (_catalog, scanner, job) = retraining_started(&s).await;
    end_job(
        &job,
        "Failed",
        json!({}),
        Some("AlgorithmError: CUDA out of memory"),
    );

    let d = job_ended(&s.fx, &scanner, &job, "Failed", "failed").await;
    assert_eq!(d.outcome, Outcome::RetrainingFailed, "{}", d.reason);
    assert_eq!(d.severity, lifecycle::outcome::Severity::NeedsPerson);
    assert!(d.reason.contains("CUDA out of memory"), "{}", d.reason);
    assert_eq!(s.fx.count("CreateModelPackage"), 0);

    // The day is released: the next scan starts a second attempt.
    let r = scan(&s.fx, &scanner, "retry").await.unwrap();
    assert_eq!(r.outcome, Outcome::Retraining, "{}", r.reason);
    assert_eq!(r.training_job.as_deref(), Some(format!("{job}-2").as_str()));
    let again = scan(&s.fx, &scanner, "retry-again").await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyStarted, "{}", again.reason);
    assert_eq!(s.fx.count("CreateTrainingJob"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_teams_job_and_a_foreign_alarm_change_nothing() {
    let s = Scenario::new("loopforeign").await;
    let (_catalog, scanner, _job) = retraining_started(&s).await;
    let before = s.fx.count("DescribeTrainingJob");
    let d = job_ended(&s.fx, &scanner, "someone-elses-job", "Completed", "other").await;
    assert_eq!(d.outcome, Outcome::Ignored, "{}", d.reason);
    assert_eq!(
        s.fx.count("DescribeTrainingJob"),
        before,
        "not even described"
    );
    let alarm = event_file("alarm-model-monitor-drift.json");
    let err = handle(&scanner, s.fx.event(alarm, "alarm"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MalformedEvent(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_monitor_alarm_starts_one_retraining_whatever_the_gap() {
    let fx = Fixture::new("loopmonitor").await;
    let catalog = Catalog::new(&fx).await;
    // Within the threshold: a scan alone would not retrain.
    catalog.seed(199, 1).await;
    let scanner = catalog.scanner(&[
        ("TRAINING_CUTOFF", "2025-09-01".into()),
        (
            "MONITOR_ALARMS",
            "mangaassist-recs-data-quality-drift".into(),
        ),
    ]);
    assert_eq!(
        scan(&fx, &scanner, "scan").await.unwrap().outcome,
        Outcome::WithinThreshold
    );
    let alarm = event_file("alarm-model-monitor-drift.json");
    let r = handle(&scanner, fx.event(alarm.clone(), "alarm"))
        .await
        .unwrap()
        .scan()
        .unwrap();
    assert_eq!(r.outcome, Outcome::Retraining, "{}", r.reason);
    assert!(
        r.reason
            .contains("mangaassist-recs-data-quality-drift in ALARM"),
        "{}",
        r.reason
    );
    // Delivered again: the same one-job guard.
    let again = handle(&scanner, fx.event(alarm, "alarm-again"))
        .await
        .unwrap()
        .scan()
        .unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyStarted, "{}", again.reason);
    assert_eq!(fx.count("CreateTrainingJob"), 1);
    let described = catalog
        .setup
        .sagemaker
        .list_tags()
        .resource_arn(format!(
            "arn:aws:sagemaker:us-east-1:123456789012:training-job/{}",
            r.training_job.unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert!(
        described
            .tags()
            .iter()
            .any(|t| t.key() == Some("lifecycle:cause")
                && t.value().is_some_and(|v| v.contains("Model Monitor alarm")))
    );
}

/// The whole loop: the retrained adapter is approved, passes the deployer's gates on the job's own
/// metrics, serves; the next scan finds no gap; and from the version served, the ledger and the
/// registry lead back to the job, the export and the coverage gap that started it.
#[tokio::test(flavor = "multi_thread")]
async fn a_retrained_adapter_deploys_and_its_lineage_leads_back_to_the_gap() {
    let s = Scenario::new("looplineage").await;
    let (catalog, scanner, job) = retraining_started(&s).await;
    end_job(
        &job,
        "Completed",
        json!({"validation_loss": 0.28, "offline_ctr": 0.089}),
        None,
    );
    let d = job_ended(&s.fx, &scanner, &job, "Completed", "done").await;
    assert_eq!(d.outcome, Outcome::CandidateAwaitsApproval, "{}", d.reason);
    let candidate = d.results[0]
        .split_whitespace()
        .find(|w| w.starts_with("arn:aws:sagemaker"))
        .unwrap_or_else(|| panic!("the package's ARN in {:?}", d.results))
        .trim_end_matches([',', '.', ')'])
        .to_string();
    s.registry().set_status(&candidate, "Approved").await;
    s.make_live(&candidate, "candidate").await;

    // The new adapter's cutoff is today's snapshot: the catalog is covered again.
    let next = scan(&s.fx, &scanner, "next").await.unwrap();
    assert_eq!(next.outcome, Outcome::WithinThreshold, "{}", next.reason);
    assert_eq!(next.measurement.after_cutoff, 0, "{}", next.reason);
    assert_eq!(s.fx.count("CreateTrainingJob"), 1);

    // Lineage, as the README's query walks it: the version served ...
    let deployed = s.decisions().await;
    let last = deployed.last().unwrap();
    assert_eq!(last["outcome"], "deployed");
    assert_eq!(last["package"], candidate.as_str());
    // ... its package names the job and the export ...
    let meta = s.registry().package(&candidate).await;
    let meta = meta.customer_metadata_properties().unwrap();
    assert_eq!(meta["training_job"], job);
    let trained = s
        .setup
        .sagemaker
        .describe_training_job()
        .training_job_name(&job)
        .send()
        .await
        .unwrap();
    let channel = trained.input_data_config()[0]
        .data_source()
        .and_then(|d| d.s3_data_source())
        .and_then(|s| s.s3_uri());
    assert_eq!(channel, Some(meta["catalog_export_uri"].as_str()));
    // ... and the scan that started the job recorded the gap.
    let scans = Ledger::new(s.setup.dynamodb.clone(), s.fx.table.clone())
        .decisions(&format!("adapter#{}", catalog.adapter))
        .await
        .unwrap();
    let started = scans
        .iter()
        .find(|d| d["outcome"] == "retraining" && d["plan"].to_string().contains(&job))
        .expect("the scan that started the job");
    assert_eq!(started["evidence"]["after_cutoff"], 20);
    assert!(
        meta["retraining_cause"].contains("coverage gap 10.00 pct of 200 items"),
        "{meta:?}"
    );
}

/// Someone who may pass the training role names a job like the scanner's, tags it like the
/// scanner's and trains it on the real export, with an image of their own: no candidate.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_dressed_as_a_retraining_is_not_registered() {
    use aws_sdk_sagemaker::types::{
        AlgorithmSpecification, Channel, DataSource, OutputDataConfig, ResourceConfig,
        S3DataSource, S3DataType, StoppingCondition, Tag, TrainingInputMode, TrainingInstanceType,
    };
    let s = Scenario::new("loopforged").await;
    let (catalog, scanner, job) = retraining_started(&s).await;
    let snapshot = drift_scanner::dates::snapshot_date(time::OffsetDateTime::now_utc());
    let forged = format!("{job}-2");
    let export = format!(
        "s3://{}/catalog-snapshots/{}/snapshot={snapshot}/",
        catalog.bucket, catalog.adapter
    );
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    s.setup
        .sagemaker
        .create_training_job()
        .training_job_name(&forged)
        .role_arn(ROLE_ARN)
        .algorithm_specification(
            AlgorithmSpecification::builder()
                .training_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:latest")
                .training_input_mode(TrainingInputMode::File)
                .build(),
        )
        .input_data_config(
            Channel::builder()
                .channel_name("train")
                .data_source(
                    DataSource::builder()
                        .s3_data_source(
                            S3DataSource::builder()
                                .s3_data_type(S3DataType::S3Prefix)
                                .s3_uri(&export)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .output_data_config(
            OutputDataConfig::builder()
                .s3_output_path(format!(
                    "s3://{}/adapters/{}/",
                    catalog.bucket, catalog.adapter
                ))
                .build(),
        )
        .resource_config(
            ResourceConfig::builder()
                .instance_type(TrainingInstanceType::MlG52Xlarge)
                .instance_count(1)
                .volume_size_in_gb(50)
                .build(),
        )
        .stopping_condition(
            StoppingCondition::builder()
                .max_runtime_in_seconds(3600)
                .build(),
        )
        .tags(tag("lifecycle:adapter", &catalog.adapter))
        .tags(tag("lifecycle:catalog-snapshot-date", &snapshot))
        .send()
        .await
        .unwrap();
    end_job(
        &forged,
        "Completed",
        json!({"validation_loss": 0.01, "offline_ctr": 0.5}),
        None,
    );

    let d = job_ended(&s.fx, &scanner, &forged, "Completed", "forged").await;
    assert_eq!(d.outcome, Outcome::CandidateUnregistered, "{}", d.reason);
    assert!(d.reason.contains("not TRAINING_IMAGE"), "{}", d.reason);
    assert_eq!(d.severity, lifecycle::outcome::Severity::NeedsPerson);
    assert_eq!(s.fx.count("CreateModelPackage"), 0);
}
