//! Property tests: whatever bytes arrive, loading never panics, and every problem
//! it reports points at a line inside the input.

use proptest::prelude::*;
use trellis_api::load_bytes;

/// Lines as YAML counts them: `\r\n`, a lone `\r` and `\n` each end one.
fn lines_in(bytes: &[u8]) -> u32 {
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    breaks as u32 + 1
}

/// YAML-ish text built from the pieces that trip parsers: indentation, flow
/// brackets, anchors, aliases, quotes, tags, document markers and Istio keys.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("apiVersion: networking.istio.io/v1\n".to_string()),
        Just("kind: VirtualService\n".to_string()),
        Just("kind: List\nitems:\n".to_string()),
        Just("metadata: {name: r}\n".to_string()),
        Just("spec:\n".to_string()),
        Just("  hosts: [a, b]\n".to_string()),
        Just("  http:\n  - route:\n    - destination: {host: x}\n".to_string()),
        Just("---\n".to_string()),
        Just("- ".to_string()),
        Just("&a ".to_string()),
        Just("*a\n".to_string()),
        Just("!!int ".to_string()),
        Just("'quoted: x'\n".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(": ".to_string()),
        Just("    ".to_string()),
        Just("timeout: 5x\n".to_string()),
        Just("weight: 1e400\n".to_string()),
        "[a-z]{1,6}".prop_map(|s| s + ": "),
        "[ -~]{0,12}\n",
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let loaded = load_bytes("fuzz", &bytes);
        for d in &loaded.diagnostics {
            prop_assert!(d.line >= 1 && d.line <= lines_in(&bytes), "{d}");
        }
    }

    #[test]
    fn yamlish_text_never_panics_and_positions_stay_inside(text in yamlish()) {
        let loaded = load_bytes("fuzz.yaml", text.as_bytes());
        for d in &loaded.diagnostics {
            prop_assert!(d.line >= 1 && d.line <= lines_in(text.as_bytes()) + 1, "{d}\n---\n{text}");
        }
        for r in &loaded.resources {
            for d in r.validate() {
                prop_assert!(d.line >= 1 && d.line <= lines_in(text.as_bytes()) + 1, "{d}\n---\n{text}");
            }
        }
    }
}

#[test]
fn huge_flat_document_loads() {
    let mut text =
        String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: big\n  labels:\n");
    for i in 0..50_000 {
        text.push_str(&format!("    k{i}: v{i}\n"));
    }
    let loaded = load_bytes("big.yaml", text.as_bytes());
    assert!(
        loaded.diagnostics.is_empty(),
        "{:?}",
        loaded.diagnostics.first()
    );
    assert_eq!(loaded.resources[0].meta.labels.len(), 50_000);
}

#[test]
fn deeply_nested_document_is_refused_with_a_line() {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {}{}\n",
        "{a: ".repeat(5000),
        "}".repeat(5000)
    );
    let loaded = load_bytes("deep.yaml", text.as_bytes());
    assert_eq!(loaded.diagnostics.len(), 1);
    assert_eq!(loaded.diagnostics[0].line, 3);
}
