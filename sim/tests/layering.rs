//! The module layering of `sim/src` (see `sim/README.md`, "Layers"): a file may name modules of
//! its own layer and of lower layers only. Every `crate::X` (and `super::super::X`) path in a
//! file is checked against the layer table below; in code (not comments), so is a path to an
//! item the crate root re-exports from a higher layer (`crate::Vmbus` from `model` would be an
//! upward dependency through the root).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom to top: the top-level modules of `sim/src`.
const LAYERS: [&str; 7] = ["ring", "base", "verifier", "model", "threads", "abi", "api"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read sim/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every module or item named right after `prefix` in `line`.
fn named_after<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `mycrate::…`, not `crate::…`
        }
        let name = ident(rest);
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// The layer of each item the crate root re-exports (`pub use layer::…::{A, B};`), read from
/// `lib.rs`. Re-exported modules (`pub use base::{scope, status};`) count too.
fn root_exports(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut rest = lib;
    while let Some(i) = rest.find("\npub use ") {
        rest = &rest[i + "\npub use ".len()..];
        let end = rest.find(';').expect("`pub use` ends with `;`");
        let stmt = &rest[..end];
        let Some(layer) = rank(ident(stmt)) else {
            continue;
        };
        let names = match stmt.find('{') {
            Some(b) => &stmt[b + 1..],
            None => stmt.rsplit("::").next().unwrap_or(""),
        };
        for name in names.split([',', '}', ' ', '\n']) {
            if !name.is_empty() && name != "self" {
                out.insert(name.to_owned(), layer);
            }
        }
    }
    out
}

/// Upward references of one file in `layer` (its text is `text`), as messages.
fn violations(
    file: &str,
    layer: usize,
    depth: usize,
    text: &str,
    exports: &BTreeMap<String, usize>,
) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let comment = trimmed.starts_with("//");
        let mut names = named_after(line, "crate::");
        if depth >= 2 {
            names.extend(named_after(line, "super::super::"));
        }
        for name in names {
            let target = match rank(name) {
                Some(r) => Some(r),
                None if !comment => exports.get(name).copied(),
                None => None,
            };
            if let Some(t) = target
                && t > layer
            {
                found.push(format!(
                    "{file}:{}: layer `{}` names `{name}` of the higher layer `{}`: {}",
                    n + 1,
                    LAYERS[layer],
                    LAYERS[t],
                    trimmed
                ));
            }
        }
    }
    found
}

#[test]
fn modules_only_use_their_own_or_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let exports = root_exports(&lib);
    assert!(
        exports.get("Vmbus").copied() == rank("api")
            && exports.get("HostDevice").copied() == rank("model"),
        "lib.rs re-exports not understood: {exports:?}"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    let mut checked = 0;
    for path in &files {
        let rel = path.strip_prefix(&src).expect("under src");
        let parts: Vec<&str> = rel
            .components()
            .map(|c| c.as_os_str().to_str().expect("utf-8 path"))
            .collect();
        if parts == ["lib.rs"] {
            continue; // the root declares the layers and re-exports from all of them
        }
        let top = parts[0].trim_end_matches(".rs");
        let layer = rank(top).unwrap_or_else(|| {
            panic!("{} is in no layer: add its module to LAYERS", rel.display())
        });
        let text = fs::read_to_string(path).expect("read source");
        found.extend(violations(
            &rel.display().to_string(),
            layer,
            parts.len(),
            &text,
            &exports,
        ));
        checked += 1;
    }
    assert!(
        checked > 30,
        "only {checked} files found under {}",
        src.display()
    );
    assert!(
        found.is_empty(),
        "upward dependencies:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_catches_an_upward_reference() {
    let model = rank("model").unwrap();
    let exports = BTreeMap::from([
        ("Vmbus".to_owned(), rank("api").unwrap()),
        ("HostDevice".to_owned(), model),
    ]);
    let check = |text: &str| violations("model/x.rs", model, 2, text, &exports);
    let bad = "use crate::base::event::lock;\nuse crate::threads::open::enable;\n";
    assert_eq!(check(bad).len(), 1);
    let through_root = "fn f(_: &crate::Vmbus) {}\n";
    assert_eq!(check(through_root).len(), 1);
    let relative = "use super::super::api::vmbus::Vmbus;\n";
    assert_eq!(check(relative).len(), 1);
    let fine = "use crate::HostDevice;\n/// [`Vmbus`](crate::Vmbus)\nuse mycrate::api::X;\n";
    assert!(check(fine).is_empty());
}
