//! `docs/slots.md` stays complete and true: it lists every one of the 57 client slots, in slot
//! order, each with a safe API item; every test it names exists, and so does every
//! `Type::method` / `Drop for Type` it names.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::Path;

use vmbus_kmcl_sim::Slot;

fn repo_file(path: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The cells of each table row that starts with a slot number.
fn rows(markdown: &str) -> Vec<Vec<String>> {
    markdown
        .lines()
        .filter(|line| {
            line.starts_with("| ") && line[2..].starts_with(|c: char| c.is_ascii_digit())
        })
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn every_slot_is_mapped_in_order() {
    let rows = rows(&repo_file("docs/slots.md"));
    assert_eq!(rows.len(), Slot::ALL.len(), "one row per client slot");
    for (index, (row, slot)) in rows.iter().zip(Slot::ALL).enumerate() {
        assert_eq!(row[0], index.to_string());
        assert_eq!(row[1], format!("`{}`", slot.name()), "row {index}");
        assert!(row[2].contains('`'), "row {index}: names a safe API item");
        assert!(row[3].contains('`'), "row {index}: names a covering test");
    }
}

#[test]
fn every_named_test_exists() {
    let rows = rows(&repo_file("docs/slots.md"));
    let mut sources = String::new();
    for dir in ["tests", "src"] {
        for entry in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&fs::read_to_string(path).unwrap());
            }
        }
    }
    for row in rows {
        for name in row[3].split('`').skip(1).step_by(2) {
            if name.ends_with(".rs") {
                continue;
            }
            // `pings_…` abbreviates a test name: its prefix must name a test.
            let prefix = name.trim_end_matches('…');
            assert!(
                sources.contains(&format!("fn {prefix}")),
                "docs/slots.md names `{name}`, which is no test"
            );
        }
    }
}

/// Every `Type::method` and `Drop for Type` named in the "safe API" column is an item of the
/// library (a renamed or removed item would leave the table stale).
#[test]
fn every_named_api_item_exists() {
    let rows = rows(&repo_file("docs/slots.md"));
    let mut library = String::new();
    for entry in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            library.push_str(&fs::read_to_string(path).unwrap());
        }
    }
    let is_ident =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let declares_type = |name: &str| {
        ["struct", "enum", "trait"]
            .iter()
            .any(|kind| library.contains(&format!("pub {kind} {name}")))
    };
    let mut checked = 0;
    for row in rows {
        for item in row[2].split('`').skip(1).step_by(2) {
            if let Some(ty) = item.strip_prefix("Drop for ") {
                assert!(
                    declares_type(ty),
                    "docs/slots.md names `{item}`: no type {ty}"
                );
                assert!(
                    library.contains(&format!("Drop for {ty}<")),
                    "docs/slots.md names `{item}`, which the library does not implement"
                );
                checked += 1;
            } else if let Some((ty, member)) = item.split_once("::") {
                if !(is_ident(ty) && is_ident(member) && ty.starts_with(char::is_uppercase)) {
                    continue; // e.g. `ExternalData::{Mdl, Pending}`
                }
                assert!(
                    declares_type(ty),
                    "docs/slots.md names `{item}`: no type {ty}"
                );
                let found = if member.starts_with(char::is_uppercase) {
                    library.contains(&format!("    {member}("))
                        || library.contains(&format!("    {member},"))
                } else {
                    library.contains(&format!("fn {member}("))
                        || library.contains(&format!("fn {member}<"))
                };
                assert!(
                    found,
                    "docs/slots.md names `{item}`, which is no library item"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 50,
        "the column names the API ({checked} items checked)"
    );
}
