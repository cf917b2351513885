//! The UBJSON decoder of the cloudpss backend against the reference encoder (py-ubjson, the
//! library the official SDK uses: fixtures from `scripts/gen-ubjson-fixtures.py`), and the
//! simulator's encoder against the same fixtures; then property tests over random values in
//! every container form the encoder can write.

use jobctl::backends::cloudpss::ubjson::decode;
use jobctl_sim::cloudpss::ubjson::{Style, encode, encode_with};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ubjson/py-ubjson.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture file")).expect("json")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn the_decoder_reads_what_py_ubjson_writes() {
    let f = fixtures();
    let cases = f["cases"].as_array().expect("cases");
    assert!(cases.len() > 40);
    for c in cases {
        for form in ["plain", "counted"] {
            let bytes = unhex(c[form].as_str().expect("hex"));
            let got = decode(&bytes).unwrap_or_else(|e| panic!("{form} {}: {e}", c["value"]));
            assert_eq!(got, c["value"], "{form} form of {}", c["value"]);
        }
    }
    for c in f["decode_only"].as_array().expect("decode_only") {
        let got = decode(&unhex(c["hex"].as_str().expect("hex"))).expect("decodes");
        assert_eq!(got, c["expect"]);
    }
}

/// Where two encodings first differ (keeps failure messages short).
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|i| a.get(*i) != b.get(*i))
}

#[test]
fn the_simulator_writes_what_py_ubjson_writes() {
    for (i, c) in fixtures()["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        for (form, count) in [("plain", false), ("counted", true)] {
            let ours = encode_with(
                &c["value"],
                Style {
                    count,
                    typed: false,
                },
            );
            let theirs = unhex(c[form].as_str().expect("hex"));
            if let Some(at) = first_difference(&ours, &theirs) {
                panic!(
                    "case {i} ({form}): first difference at byte {at}: ours {:?}, py-ubjson {:?}",
                    &ours[at.saturating_sub(4)..(at + 8).min(ours.len())],
                    &theirs[at.saturating_sub(4)..(at + 8).min(theirs.len())]
                );
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u8..=255).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), 0..20)
                .prop_map(|v| Value::Array(v.into_iter().map(Value::from).collect())),
            prop::collection::vec(0u8..=255, 0..20)
                .prop_map(|v| Value::Array(v.into_iter().map(Value::from).collect())),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_encoding_style_decodes_to_the_same_value(v in json_value(), count: bool, typed: bool) {
        let bytes = encode_with(&v, Style { count, typed });
        prop_assert_eq!(decode(&bytes).expect("decodes"), v);
    }

    #[test]
    fn truncated_or_corrupted_input_is_an_error_never_a_panic(
        v in json_value(), cut in 0usize..64, flip in any::<(usize, u8)>()
    ) {
        let bytes = encode(&v);
        // UBJSON is self-delimiting: a proper prefix of a value is never a complete value.
        let n = bytes.len() - 1 - cut % bytes.len();
        prop_assert!(decode(&bytes[..n]).is_err());
        let mut bad = bytes.clone();
        if !bad.is_empty() {
            let i = flip.0 % bad.len();
            bad[i] ^= flip.1 | 1;
            let _ = decode(&bad);
        }
    }
}
