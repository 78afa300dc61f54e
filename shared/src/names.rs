//! Deterministic names for what the suite creates, so a retry finds what the first try made.

/// A SageMaker-valid name (at most 63 characters) made of `base` and `suffix`; when too long,
/// `base` is shortened and a hash of the full name keeps it unique.
pub fn sagemaker_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(full.as_bytes()) as u32);
    let keep = 63usize.saturating_sub(suffix.len() + hash.len() + 2);
    let base = truncate(base, keep);
    format!("{}-{hash}-{suffix}", base.trim_end_matches('-'))
}

/// Text as SageMaker takes it in a tag value or model package metadata: letters, digits, spaces
/// and `_ . : / = + - @`, at most `max` characters. A percent sign becomes ` pct` ("29.58 pct"),
/// anything else a space; free text (an alarm's reason) stays readable and is never refused.
pub fn sagemaker_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str(" pct"),
            c if c.is_ascii_alphanumeric() || "_.:/=+-@".contains(c) => out.push(c),
            _ => out.push(' '),
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    words.join(" ").chars().take(max).collect()
}

/// Whether `s` is in that alphabet already (a value the suite must write exactly, such as a URI).
pub fn is_sagemaker_text(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c))
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A short, stable hash of what a resource is made of (FNV-1a; not for security).
pub fn fingerprint(parts: &[&str]) -> String {
    let mut joined = Vec::new();
    for p in parts {
        joined.extend_from_slice(p.as_bytes());
        joined.push(0);
    }
    format!("{:08x}", fnv1a(&joined) as u32)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_becomes_what_sagemaker_takes_in_tags_and_metadata() {
        assert_eq!(
            sagemaker_text("coverage gap 29.58% of 1420 items above 5%", 256),
            "coverage gap 29.58 pct of 1420 items above 5 pct"
        );
        assert_eq!(
            sagemaker_text(
                "Threshold Crossed: 1 datapoint [0.42 (03/12/26 09:00:00)] was > 0.3.",
                256
            ),
            "Threshold Crossed: 1 datapoint 0.42 03/12/26 09:00:00 was 0.3."
        );
        assert_eq!(
            sagemaker_text("s3://b/k=v/x-1.jsonl", 256),
            "s3://b/k=v/x-1.jsonl"
        );
        assert_eq!(sagemaker_text("ドリフト%", 3), "pct");
        assert_eq!(sagemaker_text(&"a".repeat(300), 256).len(), 256);
        assert_eq!(sagemaker_text("[]()", 256), "");
        assert!(is_sagemaker_text("s3://b/p/x=1/a-b.jsonl") && !is_sagemaker_text("s3://b/~p/"));
    }

    #[test]
    fn short_names_are_kept_readable() {
        assert_eq!(sagemaker_name("recs-prod", "v3"), "recs-prod-v3");
    }

    #[test]
    fn long_names_stay_valid_unique_and_stable() {
        let base = "a".repeat(80);
        let a = sagemaker_name(&base, "v3-0123abcd");
        assert!(a.len() <= 63 && a.ends_with("-v3-0123abcd"), "{a}");
        assert_eq!(a, sagemaker_name(&base, "v3-0123abcd"));
        assert_ne!(a, sagemaker_name(&format!("{base}b"), "v3-0123abcd"));
    }

    #[test]
    fn fingerprints_depend_on_every_part() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["x"]), fingerprint(&["x"]));
    }
}
