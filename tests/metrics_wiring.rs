//! Every drop reason the metrics declare is incremented somewhere in the data
//! path: a reason no code path counts would be a metric that can never change.
//! (The end-to-end tests trigger most reasons for real; this check covers the
//! ones only a kernel fault produces, such as a failed TUN write.)

use encapd::stats::DropReason;

fn sources(dir: &std::path::Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // Test modules sit at the bottom of each file: count only code above them.
            out.push_str(text.split("#[cfg(test)]").next().unwrap());
        }
    }
}

#[test]
fn every_drop_reason_is_counted_by_the_data_path() {
    let mut code = String::new();
    sources(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/datapath"), &mut code);
    for reason in DropReason::ALL {
        let variant = format!("{reason:?}");
        // Parse errors map to reasons in one place (packet::parse_drop_reason).
        assert!(
            code.contains(&format!("DropReason::{variant}")),
            "DropReason::{variant} ({}) is never counted by src/datapath",
            reason.name()
        );
    }
}
