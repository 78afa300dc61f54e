//! The catalog, exported to S3 as JSON Lines for training, streamed: parallel scan segments fill
//! their own part buffers and upload each full part at once (multipart upload), so memory holds at
//! most one part per segment, never the catalog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde::Serialize;
use serde_json::{Map, Number, Value};

/// S3 wants every part but the last to be at least 5 MiB.
pub const PART_BYTES: usize = 6 * 1024 * 1024;
/// At most this many segments export at once: memory is about 2 x this x [`PART_BYTES`].
pub const MAX_EXPORT_SEGMENTS: i32 = 4;

/// What to export, and where: a plan action ([`crate::plan::Action::ExportCatalog`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogExport {
    pub table: String,
    /// Parallel scan segments (at most [`MAX_EXPORT_SEGMENTS`] export at once).
    pub segments: i32,
    /// Items per Scan request; `None`: DynamoDB's 1 MB pages.
    pub page_size: Option<i32>,
    pub bucket: String,
    pub key: String,
}

impl CatalogExport {
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exported {
    pub uri: String,
    pub items: u64,
    pub bytes: u64,
    pub parts: i32,
    /// The object was already there from an earlier run the same day.
    pub reused: bool,
}

/// One DynamoDB item as a JSON object (numbers stay numbers, sets become arrays, binary base64).
pub fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    let mut keys: Vec<&String> = item.keys().collect();
    keys.sort();
    Value::Object(
        keys.into_iter()
            .map(|k| (k.clone(), attr_json(&item[k])))
            .collect::<Map<_, _>>(),
    )
}

fn number(n: &str) -> Value {
    n.parse::<i64>()
        .ok()
        .map(Value::from)
        .or_else(|| {
            n.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
        })
        .unwrap_or_else(|| Value::String(n.to_string()))
}

fn attr_json(v: &AttributeValue) -> Value {
    use aws_smithy_types::base64;
    match v {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => number(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::B(b) => Value::String(base64::encode(b.as_ref())),
        AttributeValue::Ss(v) => v.iter().cloned().map(Value::String).collect(),
        AttributeValue::Ns(v) => v.iter().map(|n| number(n)).collect(),
        AttributeValue::Bs(v) => v
            .iter()
            .map(|b| Value::String(base64::encode(b.as_ref())))
            .collect(),
        AttributeValue::L(v) => v.iter().map(attr_json).collect(),
        AttributeValue::M(m) => item_json(m),
        _ => Value::Null,
    }
}

struct Upload<'a> {
    s3: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    key: &'a str,
    upload_id: String,
    next_part: AtomicI32,
}

impl Upload<'_> {
    async fn part(&self, body: Vec<u8>) -> Result<CompletedPart> {
        let number = self.next_part.fetch_add(1, Ordering::SeqCst);
        let out = self
            .s3
            .upload_part()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| Error::aws("UploadPart", e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }
}

/// What one segment did: its full parts, and the lines left over (less than a part).
struct Segment {
    parts: Vec<CompletedPart>,
    rest: Vec<u8>,
    items: u64,
    bytes: u64,
}

/// Exports the whole table to `s3://bucket/key`, unless that object already exists.
pub async fn export(
    ddb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    spec: &CatalogExport,
) -> Result<Exported> {
    let CatalogExport {
        table,
        segments,
        page_size,
        bucket,
        key,
    } = spec;
    let (segments, page_size) = (*segments, *page_size);
    let uri = spec.uri();
    if let Some(bytes) = already_exported(s3, bucket, key).await? {
        return Ok(Exported {
            uri,
            items: 0,
            bytes,
            parts: 0,
            reused: true,
        });
    }
    let created = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/jsonlines")
        .send()
        .await
        .map_err(|e| Error::aws("CreateMultipartUpload", e))?;
    let upload = Upload {
        s3,
        bucket,
        key,
        upload_id: created.upload_id().unwrap_or_default().to_string(),
        next_part: AtomicI32::new(1),
    };
    match stream(
        ddb,
        table,
        segments.min(MAX_EXPORT_SEGMENTS),
        page_size,
        &upload,
    )
    .await
    {
        Ok((parts, items, bytes)) => {
            let count = parts.len() as i32;
            s3.complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload.upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| Error::aws("CompleteMultipartUpload", e))?;
            Ok(Exported {
                uri,
                items,
                bytes,
                parts: count,
                reused: false,
            })
        }
        Err(e) => {
            // Parts of an abandoned upload cost storage until aborted.
            let _ = s3
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload.upload_id)
                .send()
                .await;
            Err(e)
        }
    }
}

/// The size of the object when an earlier run the same day already wrote it.
async fn already_exported(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<u64>> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(out.content_length().unwrap_or_default().max(0) as u64)),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
        Err(e) => Err(Error::aws("HeadObject", e)),
    }
}

async fn stream(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    segments: i32,
    page_size: Option<i32>,
    upload: &Upload<'_>,
) -> Result<(Vec<CompletedPart>, u64, u64)> {
    let tasks = (0..segments).map(|segment| async move {
        let mut out = Segment {
            parts: vec![],
            rest: Vec::with_capacity(PART_BYTES),
            items: 0,
            bytes: 0,
        };
        let mut pages = ddb
            .scan()
            .table_name(table)
            .segment(segment)
            .total_segments(segments)
            .set_limit(page_size)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::aws("Scan", e))?;
            for item in page.items() {
                let before = out.rest.len();
                serde_json::to_writer(&mut out.rest, &item_json(item))
                    .map_err(|e| Error::InvalidData(e.to_string()))?;
                out.rest.push(b'\n');
                out.items += 1;
                out.bytes += (out.rest.len() - before) as u64;
            }
            if out.rest.len() >= PART_BYTES {
                let body = std::mem::replace(&mut out.rest, Vec::with_capacity(PART_BYTES));
                out.parts.push(upload.part(body).await?);
            }
        }
        Ok::<_, Error>(out)
    });
    let done = futures_util::future::try_join_all(tasks).await?;
    let (mut parts, mut items, mut bytes, mut rest) = (vec![], 0, 0, Vec::new());
    for s in done {
        parts.extend(s.parts);
        items += s.items;
        bytes += s.bytes;
        rest.extend_from_slice(&s.rest);
    }
    // The leftovers, in parts of PART_BYTES; only the very last may be smaller.
    for chunk in rest.chunks(PART_BYTES) {
        parts.push(upload.part(chunk.to_vec()).await?);
    }
    if parts.is_empty() {
        parts.push(upload.part(Vec::new()).await?);
    }
    parts.sort_by_key(|p| p.part_number());
    Ok((parts, items, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::Blob;
    use serde_json::json;

    #[test]
    fn items_become_plain_json() {
        let item = HashMap::from([
            ("id".to_string(), AttributeValue::S("B0C1".into())),
            ("price".to_string(), AttributeValue::N("12.5".into())),
            ("volume".to_string(), AttributeValue::N("17".into())),
            (
                "tags".to_string(),
                AttributeValue::Ss(vec!["shonen".into()]),
            ),
            (
                "cover".to_string(),
                AttributeValue::B(Blob::new(b"hi".to_vec())),
            ),
            (
                "series".to_string(),
                AttributeValue::M(HashMap::from([(
                    "name".to_string(),
                    AttributeValue::S("Chainsaw Man".into()),
                )])),
            ),
            ("discontinued".to_string(), AttributeValue::Null(true)),
        ]);
        assert_eq!(
            item_json(&item),
            json!({"id": "B0C1", "price": 12.5, "volume": 17, "tags": ["shonen"], "cover": "aGk=",
                   "series": {"name": "Chainsaw Man"}, "discontinued": null})
        );
    }
}
