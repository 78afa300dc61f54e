//! Approximate on-demand prices of SageMaker real-time inference instances (USD per hour,
//! us-east-1, public price list of 2024-2025). For estimates in reports, not for billing: check
//! your region and any savings plan. Unknown types are reported without a price.

const HOURS_PER_MONTH: f64 = 730.0;

const PRICES: &[(&str, f64)] = &[
    ("ml.t2.medium", 0.056),
    ("ml.t2.large", 0.111),
    ("ml.m5.large", 0.115),
    ("ml.m5.xlarge", 0.23),
    ("ml.m5.2xlarge", 0.461),
    ("ml.m5.4xlarge", 0.922),
    ("ml.c5.large", 0.102),
    ("ml.c5.xlarge", 0.204),
    ("ml.c5.2xlarge", 0.408),
    ("ml.c5.4xlarge", 0.816),
    ("ml.r5.large", 0.151),
    ("ml.r5.xlarge", 0.302),
    ("ml.g4dn.xlarge", 0.736),
    ("ml.g4dn.2xlarge", 0.94),
    ("ml.g5.xlarge", 1.408),
    ("ml.g5.2xlarge", 1.515),
    ("ml.g5.4xlarge", 2.03),
    ("ml.g5.12xlarge", 7.09),
    ("ml.inf2.xlarge", 0.99),
    ("ml.p3.2xlarge", 3.825),
];

pub fn hourly(instance_type: &str) -> Option<f64> {
    PRICES
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, p)| *p)
}

/// Monthly cost of `count` instances of a type, if the type is in the table.
pub fn monthly(instance_type: &str, count: i32) -> Option<f64> {
    hourly(instance_type).map(|p| p * HOURS_PER_MONTH * f64::from(count.max(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_730_hours_per_instance() {
        assert_eq!(monthly("ml.m5.xlarge", 2).map(|m| m.round()), Some(336.0));
        assert_eq!(monthly("ml.unknown", 1), None);
    }
}
