//! The catalog, exported to S3 as JSON Lines for training, streamed: parallel scan segments fill
//! their own part buffers and upload each full part at once (multipart upload), so memory holds at
//! most one part per segment, never the catalog.
//!
//! Each item becomes one line in the fine-tuning format of seed 000 (scenario 2):
//! `{"text": "Title: … Genre: … Author: … Synopsis: …"}`, written from a [`Template`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde::Serialize;
use serde_json::Value;

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
    /// Each item's line ([`Template`]; validated with the configuration).
    pub template: String,
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

/// The default line of the training corpus, as seed 000 writes it.
pub const DEFAULT_TEMPLATE: &str =
    "Title: {title} Genre: {genre} Author: {author} Synopsis: {synopsis}";

/// A line of the corpus: text with `{attribute}` placeholders for top-level item attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    /// Parses a template; `{{` and `}}` are literal braces.
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let mut parts = vec![];
        let mut text = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let (mut field, mut closed) = (String::new(), false);
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        field.push(c);
                    }
                    let name = field.trim();
                    if !closed || name.is_empty() || name.contains('{') {
                        return Err(format!(
                            "{raw:?}: a placeholder must name an attribute, as {{title}}"
                        ));
                    }
                    parts.push(Part::Text(std::mem::take(&mut text)));
                    parts.push(Part::Field(name.to_string()));
                }
                '}' => return Err(format!("{raw:?}: a lone }}; write }}}} for a brace")),
                c => text.push(c),
            }
        }
        parts.push(Part::Text(text));
        parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err(format!(
                "{raw:?} names no attribute; expected placeholders such as {{title}}"
            ));
        }
        Ok(Self { parts })
    }

    /// The attributes it reads (what the export's scan projects).
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Field(f) => Some(f.as_str()),
                Part::Text(_) => None,
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// One corpus line: `{"text": ...}`. A missing attribute is an empty part, not a skipped item.
    pub fn line(&self, item: &HashMap<String, AttributeValue>) -> Value {
        let text: String = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Field(f) => item.get(f).map(text_of).unwrap_or_default(),
            })
            .collect();
        serde_json::json!({ "text": text })
    }
}

/// An attribute as text: strings and numbers as written, sets and lists joined by ", ".
fn text_of(v: &AttributeValue) -> String {
    match v {
        AttributeValue::S(s) | AttributeValue::N(s) => s.clone(),
        AttributeValue::Bool(b) => b.to_string(),
        AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.join(", "),
        AttributeValue::L(v) => v
            .iter()
            .map(text_of)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
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
    async fn complete(&self, parts: Vec<CompletedPart>) -> Result<()> {
        self.s3
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Error::aws("CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// Parts of an abandoned upload cost storage until aborted; best effort.
    async fn abort(&self) {
        let _ = self
            .s3
            .abort_multipart_upload()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
    }

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
        template,
    } = spec;
    let template = Template::parse(template).map_err(Error::InvalidData)?;
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
    let scan = Scan {
        ddb,
        table,
        segments: segments.min(MAX_EXPORT_SEGMENTS),
        page_size,
        template: &template,
    };
    match stream(&scan, &upload).await {
        Ok((parts, items, bytes)) => {
            let count = parts.len() as i32;
            upload.complete(parts).await?;
            Ok(Exported {
                uri,
                items,
                bytes,
                parts: count,
                reused: false,
            })
        }
        Err(e) => {
            upload.abort().await;
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

/// What the export reads, and how each item is written.
struct Scan<'a> {
    ddb: &'a aws_sdk_dynamodb::Client,
    table: &'a str,
    segments: i32,
    page_size: Option<i32>,
    template: &'a Template,
}

async fn stream(scan: &Scan<'_>, upload: &Upload<'_>) -> Result<(Vec<CompletedPart>, u64, u64)> {
    let Scan {
        ddb,
        table,
        segments,
        page_size,
        template,
    } = *scan;
    // Only the attributes the template names are read.
    let fields = template.fields();
    let projection = (0..fields.len())
        .map(|i| format!("#f{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let names: HashMap<String, String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("#f{i}"), f.to_string()))
        .collect();
    let (projection, names) = (&projection, &names);
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
            .projection_expression(projection)
            .set_expression_attribute_names(Some(names.clone()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::aws("Scan", e))?;
            for item in page.items() {
                let before = out.rest.len();
                serde_json::to_writer(&mut out.rest, &template.line(item))
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
    use serde_json::json;

    fn item(fields: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn items_become_the_seeds_fine_tuning_lines() {
        let t = Template::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(t.fields(), ["author", "genre", "synopsis", "title"]);
        let full = item(&[
            ("title", AttributeValue::S("Chainsaw Man 17".into())),
            (
                "genre",
                AttributeValue::Ss(vec!["action".into(), "horror".into()]),
            ),
            ("author", AttributeValue::S("藤本タツキ".into())),
            ("synopsis", AttributeValue::S("Denji, again.".into())),
            ("price", AttributeValue::N("12.5".into())),
        ]);
        assert_eq!(
            t.line(&full),
            json!({"text": "Title: Chainsaw Man 17 Genre: action, horror Author: 藤本タツキ Synopsis: Denji, again."})
        );
        // Missing fields are empty parts: the item is still in the corpus.
        let sparse = item(&[("title", AttributeValue::S("Frieren 14".into()))]);
        assert_eq!(
            t.line(&sparse),
            json!({"text": "Title: Frieren 14 Genre:  Author:  Synopsis: "})
        );
    }

    #[test]
    fn templates_are_checked() {
        assert!(Template::parse("no placeholders").is_err());
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("a } b {title}").is_err());
        assert!(Template::parse("Title: {title").is_err(), "unterminated");
        let t = Template::parse("{{{title}}}").unwrap();
        assert_eq!(
            t.line(&item(&[("title", AttributeValue::N("7".into()))])),
            json!({"text": "{7}"})
        );
    }
}
