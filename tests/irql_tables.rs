//! The library's IRQL table (`docs/irql.md`) and the emulator's (`Slot::max_irql`) agree: a KMCL
//! slot is called only from operations that take `&PassiveLevel` exactly when the emulator
//! requires PASSIVE_LEVEL for it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use vmbus_kmcl::Irql;
use vmbus_kmcl_sim::Slot;

/// The slot names a backticked name of the KMCL column stands for: `X[Ex]` is `X` and `XEx`,
/// `A{B,C}` is `AB` and `AC`, `X*` every slot starting with `X`, `…X` every slot ending with
/// `X`; anything that is not a client slot (callbacks, WDF calls) stands for none.
fn expand(name: &str) -> Vec<&'static str> {
    if let Some((head, rest)) = name.split_once('[') {
        let (optional, tail) = rest.split_once(']').expect("closing ]");
        let mut out = expand(&format!("{head}{tail}"));
        out.extend(expand(&format!("{head}{optional}{tail}")));
        return out;
    }
    if let Some((head, rest)) = name.split_once('{') {
        let (choices, tail) = rest.split_once('}').expect("closing }");
        return choices
            .split(',')
            .flat_map(|c| expand(&format!("{head}{c}{tail}")))
            .collect();
    }
    let names = Slot::ALL.iter().map(|s| s.name());
    if let Some(suffix) = name.strip_prefix('…') {
        names.filter(|n| n.ends_with(suffix)).collect()
    } else if let Some(prefix) = name.strip_suffix('*') {
        names.filter(|n| n.starts_with(prefix)).collect()
    } else {
        names.filter(|n| *n == name).collect()
    }
}

/// The backticked spans of a table cell.
fn code_spans(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// For every slot named in a table of `docs/irql.md` that has an "in the type" column: the
/// operations that call it, each with whether it takes `&PassiveLevel`.
fn library_table() -> BTreeMap<&'static str, Vec<(String, bool)>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/irql.md"))
        .expect("docs/irql.md");
    let mut table: BTreeMap<&'static str, Vec<(String, bool)>> = BTreeMap::new();
    let mut columns: Option<(usize, usize)> = None;
    for line in doc.lines() {
        if !line.starts_with('|') {
            columns = None;
            continue;
        }
        let row = cells(line);
        if row
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue;
        }
        if row.first() == Some(&"operation") {
            let slot = row.iter().position(|c| c.starts_with("KMCL"));
            let typed = row.iter().position(|c| *c == "in the type");
            columns = slot.zip(typed);
            continue;
        }
        let Some((slot_col, type_col)) = columns else {
            continue;
        };
        let takes_token = row[type_col].contains("&PassiveLevel");
        for span in code_spans(row[slot_col]) {
            for name in expand(span) {
                table
                    .entry(name)
                    .or_default()
                    .push((row[0].to_owned(), takes_token));
            }
        }
    }
    table
}

#[test]
fn expansion_rules() {
    assert_eq!(
        expand("VmbPacketSetCompletionRoutine[Ex]"),
        [
            "VmbPacketSetCompletionRoutine",
            "VmbPacketSetCompletionRoutineEx"
        ]
    );
    assert_eq!(
        expand("VmbChannelCreateGpadlFrom{Buffer,Mdl,PfnList}").len(),
        3
    );
    assert_eq!(expand("…ProcessPacketCallbacks[Ex]").len(), 2);
    assert_eq!(expand("VmbChannelGet*").len(), 5);
    assert!(expand("EvtVmbChannelSuspend[Ex]").is_empty());
}

/// A slot is PASSIVE_LEVEL-only in the library (every operation that calls it takes
/// `&PassiveLevel`) exactly when the emulator refuses it above PASSIVE_LEVEL.
#[test]
fn library_and_emulator_irql_tables_agree() {
    let table = library_table();
    assert!(table.len() >= 40, "parsed {} slots: {table:?}", table.len());
    // The parse sees both kinds of row.
    let passive_only = |name: &str| table[name].iter().all(|(_, token)| *token);
    assert!(passive_only("VmbChannelEnable") && passive_only("VmbChannelSetPointer"));
    assert!(!passive_only("VmbPacketSend") && !passive_only("VmbChannelPacketComplete"));
    let mut disagreements = Vec::new();
    for slot in Slot::ALL {
        let Some(uses) = table.get(slot.name()) else {
            continue;
        };
        let library_passive = uses.iter().all(|(_, token)| *token);
        let emulator_passive = slot.max_irql() == Irql::PASSIVE;
        if library_passive != emulator_passive {
            disagreements.push(format!(
                "{slot}: emulator max {:?} ({:?}), library: {uses:?}",
                slot.max_irql(),
                slot.irql_source()
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "docs/irql.md and Slot::max_irql disagree:\n{}",
        disagreements.join("\n")
    );
}

/// `docs/irql.md` names every client slot, so the comparison above covers all 57.
#[test]
fn the_library_table_names_every_slot() {
    let table = library_table();
    let missing: Vec<(&str, Irql)> = Slot::ALL
        .iter()
        .filter(|s| !table.contains_key(s.name()))
        .map(|s| (s.name(), s.max_irql()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/irql.md names every client slot; unnamed: {missing:?}"
    );
}
