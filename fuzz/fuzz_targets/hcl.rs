//! The HCL1/JSON reader (policies, server and agent configuration): never panics; what
//! parses as a tree also reads as JSON; the JSON it gives reads back as itself; policy
//! decoding of the same text never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tree = leash_hcl::parse(text);
    let json = leash_hcl::parse_to_json(text);
    assert_eq!(
        tree.is_ok(),
        json.is_ok(),
        "tree and JSON readings disagree"
    );
    if let Ok(v) = json {
        let again = leash_hcl::parse_to_json(&v.to_string());
        match again {
            Ok(w) => assert_eq!(v, w, "JSON output does not read back as itself"),
            // Labels fold into nested objects, so deep label chains can exceed the depth
            // bound once spelled as JSON; anything else is a bug.
            Err(e) => assert!(e.message.contains("nesting deeper"), "re-read: {e}"),
        }
    }
    let _ = leash_policy::parse_policy("fuzz", text);
});
