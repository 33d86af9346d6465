//! `sluice schema` prints the committed `schema/workflow.schema.json`, so editors using the
//! committed copy see the format the binary checks.

use std::process::Command;

#[test]
fn committed_schema_matches_the_binary() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/workflow.schema.json");
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        printed == committed,
        "schema/workflow.schema.json is out of date; regenerate it with \
         `cargo run -- schema > schema/workflow.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let rules = schema["$defs"]["TaskSpec"]["allOf"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["if"]["properties"]["operator"]["const"] == "http")
    );
}
