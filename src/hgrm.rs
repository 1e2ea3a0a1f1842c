//! Histograms as files: the standard HdrHistogram percentile-distribution text (`*.hgrm`, what
//! HdrHistogram's plotter and most tooling read) and the compressed V2 encoding (base64) kept in
//! `result.json`, so runs can be merged and re-analysed without their raw data.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

/// The percentile distribution in HdrHistogram's text format, values divided by `scale`
/// (1000.0 turns the µs recorded here into the ms HdrHistogram tooling expects), 5 ticks per
/// half distance as `outputPercentileDistribution` prints by default.
pub fn percentile_distribution(histogram: &Histogram<u64>, scale: f64) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64 / scale;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            out.push_str(&format!(
                "{value:12.3} {quantile:2.12} {total:10} {:14.2}\n",
                1.0 / (1.0 - quantile)
            ));
        } else {
            out.push_str(&format!("{value:12.3} {quantile:2.12} {total:10}\n"));
        }
    }
    // Java's subBucketCount: the smallest power of two covering 2 × 10^significant digits.
    let sub_buckets = (2 * 10u64.pow(u32::from(histogram.sigfig()))).next_power_of_two();
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        histogram.mean() / scale,
        histogram.stdev() / scale,
        histogram.max() as f64 / scale,
        histogram.len(),
        histogram.buckets(),
        sub_buckets,
    ));
    out
}

/// The histogram in HdrHistogram's V2 + DEFLATE encoding, base64 (as in its interval logs).
pub fn encode(histogram: &Histogram<u64>) -> String {
    use base64::Engine;
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(histogram, &mut bytes)
        .expect("serializing into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`encode`].
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an encoded histogram: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut histogram = idembench_loadgen::producer::new_histogram();
        for v in 1..=10_000u64 {
            histogram.record(v).unwrap();
        }
        histogram
    }

    #[test]
    fn the_text_format_has_the_standard_header_rows_and_footer() {
        let text = percentile_distribution(&sample(), 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert!(
            lines[2].starts_with("       0.001 0.000000000000          1           1.00"),
            "{}",
            lines[2]
        );
        let last_row = lines.iter().rev().find(|l| !l.starts_with('#')).unwrap();
        assert!(
            last_row.contains(" 1.000000000000      10000"),
            "{last_row}"
        );
        assert!(
            text.contains("#[Max     =       10.007, Total count    =        10000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    #[test]
    fn encoding_round_trips() {
        let histogram = sample();
        let decoded = decode(&encode(&histogram)).unwrap();
        assert_eq!(
            (
                decoded.len(),
                decoded.max(),
                decoded.value_at_quantile(0.99)
            ),
            (10_000, histogram.max(), histogram.value_at_quantile(0.99))
        );
        assert!(decode("%%%").is_err());
    }
}
