//! Kubernetes quantities (`512Mi`, `1Gi`, `10G`) as bytes, for comparing storage sizes and
//! sizing Redis's `maxmemory`.

/// The bytes of a quantity, when it is a plain size (`decimal` or binary suffix); `None` for
/// anything else (`100m`, exponents), which the schema's pattern already keeps out of sizes.
pub fn bytes(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    Some((value * multiplier as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_bytes() {
        assert_eq!(bytes("512Mi"), Some(512 * 1024 * 1024));
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("10G"), Some(10_000_000_000));
        assert_eq!(bytes("2048"), Some(2048));
        assert_eq!(bytes("100m"), None);
        assert_eq!(bytes("lots"), None);
        assert_eq!(bytes(""), None);
    }
}
