//! Plan-file integers: a JSON integer or a `"0x..."` hex string, always a full `u64`.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A plan-file integer: a JSON integer (never read through `f64`) or a `"0x..."` hex string,
/// as a full `u64`. Negative numbers, fractions, exponents and values above `u64::MAX` are
/// refused. Serialized as a JSON integer.
///
/// ```
/// use cc_image::Num;
/// let n: Num = serde_json::from_str("\"0xffffffffffffffff\"").unwrap();
/// assert_eq!(n.0, u64::MAX);
/// let n: Num = serde_json::from_str("18446744073709551615").unwrap();
/// assert_eq!(n.0, u64::MAX);
/// assert!(serde_json::from_str::<Num>("18446744073709551616").is_err());
/// assert!(serde_json::from_str::<Num>("-1").is_err());
/// assert!(serde_json::from_str::<Num>("1.0").is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Num(pub u64);

impl From<u64> for Num {
    fn from(v: u64) -> Self {
        Num(v)
    }
}

const EXPECTED: &str = "a non-negative integer (a JSON integer or a \"0x...\" hex string)";

struct NumVisitor;

impl Visitor<'_> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        u64::try_from(v)
            .map(Num)
            .map_err(|_| E::custom(format!("{v} is negative, expected {EXPECTED}")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Num, E> {
        u64::try_from(v)
            .map(Num)
            .map_err(|_| E::custom(format!("{v} is above 2^64 - 1")))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Num, E> {
        u64::try_from(v)
            .map(Num)
            .map_err(|_| E::custom(format!("{v} is out of range, expected {EXPECTED}")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Num, E> {
        // serde_json hands integers above u64::MAX, fractions and exponents over as f64: the
        // value is not printed, as f64 would round it.
        Err(E::custom(format!(
            "a number that is not an integer in 0..2^64 (a fraction, an exponent, or too large), expected {EXPECTED}"
        )))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Num, E> {
        parse_hex(s).map(Num).map_err(E::custom)
    }
}

/// Parses `"0x"` followed by 1 to 16 hex digits (no sign, no separators).
fn parse_hex(s: &str) -> Result<u64, String> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("string {s:?} is not a \"0x...\" hex number"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("string {s:?} is not a \"0x...\" hex number"));
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 16 {
        return Err(format!("{s} is above 2^64 - 1"));
    }
    u64::from_str_radix(digits, 16).map_err(|e| format!("{s}: {e}"))
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<u64, String> {
        serde_json::from_str::<Num>(s)
            .map(|n| n.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integers_and_hex_strings() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("4096"), Ok(4096));
        // 2^53 + 1 is not representable in f64: it must come through exactly.
        assert_eq!(parse("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse("\"0x0\""), Ok(0));
        assert_eq!(parse("\"0xFFFFfffff000\""), Ok(0xffff_ffff_f000));
        assert_eq!(
            parse("\"0x0000000000000000ffffffffffffffff\""),
            Ok(u64::MAX)
        );
        assert_eq!(parse("\"0x20000000000001\""), Ok((1 << 53) + 1));
    }

    #[test]
    fn refusals() {
        for bad in [
            "-1",
            "1.5",
            "1e3",
            "18446744073709551616",
            "\"0x10000000000000000\"",
            "\"0x\"",
            "\"12\"",
            "\"0x+1\"",
            "\"0x1_000\"",
            "\" 0x1\"",
            "\"0X1\"",
            "true",
            "null",
            "[1]",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        assert!(parse("-1").unwrap_err().contains("negative"));
        assert!(parse("1.5").unwrap_err().contains("not an integer"));
        assert!(parse("18446744073709551616")
            .unwrap_err()
            .starts_with("a number that is not an integer in 0..2^64"));
    }

    proptest::proptest! {
        #[test]
        fn every_u64_reads_back_in_both_notations(v: u64, zeros in 0usize..4) {
            proptest::prop_assert_eq!(parse(&v.to_string()), Ok(v));
            let hex = format!("\"0x{}{v:x}\"", "0".repeat(zeros));
            proptest::prop_assert_eq!(parse(&hex), Ok(v));
            let upper = format!("\"0x{v:X}\"");
            proptest::prop_assert_eq!(parse(&upper), Ok(v));
            proptest::prop_assert_eq!(serde_json::to_string(&Num(v)).unwrap(), v.to_string());
        }

        #[test]
        fn above_u64_is_refused(hi in 1u64.., lo: u64) {
            let big = (u128::from(hi) << 64) | u128::from(lo);
            proptest::prop_assert!(parse(&big.to_string()).is_err());
            let hex = format!("\"0x{big:x}\"");
            proptest::prop_assert!(parse(&hex).is_err());
        }
    }

    #[test]
    fn serializes_as_integer() {
        assert_eq!(
            serde_json::to_string(&Num(u64::MAX)).unwrap(),
            "18446744073709551615"
        );
    }
}
