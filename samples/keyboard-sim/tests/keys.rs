#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Every key class through the driver, checked record by record against `ntddkbd.h`'s
//! `KEYBOARD_INPUT_DATA` flags: plain and shifted characters, E0 keys, the E1 Pause key,
//! typematic repeats, unicode events (dropped and counted); then the LED and typematic
//! settings round trips. Verifier clean at the end of each test.

use vmbus_kbd::ioctl::{IOCTL_KEYBOARD_QUERY_TYPEMATIC, KeyboardAttributes, TypematicParameters};
use vmbus_kbd::protocol::{
    self, KEY_BREAK, KEY_E0, KEY_E1, KEY_MAKE, KeyboardInputData, Keystroke,
};
use vmbus_kbd_sim::harness::WAIT;
use vmbus_kbd_sim::typist::{self, NamedKey};
use vmbus_kbd_sim::{HostConfig, Rig, wait_until};
use vmbus_kmcl_sim::InterfaceVersion;

fn record(make_code: u16, flags: u16) -> KeyboardInputData {
    KeyboardInputData {
        unit_id: 0,
        make_code,
        flags,
        reserved: 0,
        extra_information: 0,
    }
}

/// Types `keystrokes` on an open keyboard and returns what the sink received.
fn type_and_collect(rig: &Rig, keystrokes: &[Keystroke]) -> Vec<KeyboardInputData> {
    let expected = typist::expected_records(keystrokes).len();
    let before = rig.platform.record_count();
    rig.host.type_keystrokes(keystrokes);
    assert!(rig.wait_records(before + expected));
    rig.platform.records()[before..].to_vec()
}

#[test]
fn every_key_class() {
    for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
        let rig = Rig::new(version, HostConfig::HONEST);
        let keyboard = rig.open().unwrap();

        // Plain character.
        let got = type_and_collect(&rig, &typist::type_text("a").unwrap());
        assert_eq!(got, vec![record(0x1e, KEY_MAKE), record(0x1e, KEY_BREAK)]);

        // Shifted character: left shift around the key.
        let got = type_and_collect(&rig, &typist::type_text("A").unwrap());
        assert_eq!(
            got,
            vec![
                record(0x2a, KEY_MAKE),
                record(0x1e, KEY_MAKE),
                record(0x1e, KEY_BREAK),
                record(0x2a, KEY_BREAK),
            ]
        );

        // E0 keys.
        for key in [
            NamedKey::Left,
            NamedKey::Right,
            NamedKey::Up,
            NamedKey::Down,
            NamedKey::Home,
            NamedKey::End,
            NamedKey::Delete,
            NamedKey::KeypadEnter,
            NamedKey::RightCtrl,
        ] {
            let (code, e0) = key.scan_code();
            assert!(e0);
            let got = type_and_collect(&rig, &typist::press(key));
            assert_eq!(
                got,
                vec![record(code, KEY_E0), record(code, KEY_E0 | KEY_BREAK)],
                "{key:?}"
            );
        }

        // Non-character keys without a prefix.
        for key in [
            NamedKey::Enter,
            NamedKey::Tab,
            NamedKey::Escape,
            NamedKey::Backspace,
        ] {
            let (code, _) = key.scan_code();
            let got = type_and_collect(&rig, &typist::press(key));
            assert_eq!(got, vec![record(code, KEY_MAKE), record(code, KEY_BREAK)]);
        }

        // E1: Pause.
        let got = type_and_collect(&rig, &typist::press(NamedKey::Pause));
        assert_eq!(
            got,
            vec![
                record(0x1d, KEY_E1),
                record(0x45, KEY_MAKE),
                record(0x1d, KEY_E1 | KEY_BREAK),
                record(0x45, KEY_BREAK),
            ]
        );

        // Typematic repeat: the host repeats the make before the break.
        let mut repeat = vec![typist::stroke(0x1f, true, 0); 4];
        repeat.push(typist::stroke(0x1f, false, 0));
        let got = type_and_collect(&rig, &repeat);
        assert_eq!(got.len(), 5);
        assert!(got[..4].iter().all(|r| *r == record(0x1f, KEY_MAKE)));

        // Unicode events: counted and dropped, nothing reaches kbdclass.
        let before = rig.platform.record_count();
        rig.host.type_keystrokes(&typist::unicode(0x00e9));
        let client = keyboard.client();
        assert!(wait_until(WAIT, || client.counters().unicode_dropped == 2));
        assert_eq!(rig.platform.record_count(), before);

        // Everything decodes: "a", "A", the cursor keys, a newline from each Enter, a tab,
        // backspace deleting the tab, one pause, "ssss".
        let decoded = typist::decode(&rig.platform.records());
        assert!(decoded.consistent(), "{decoded:?}");
        assert_eq!(decoded.pauses, 1);
        assert_eq!(decoded.text, "aA\n\nssss");

        let counters = client.counters();
        assert_eq!(counters.rejected_total(), 0);
        assert_eq!(counters.consumer_dropped, 0);
        assert_eq!(counters.delivered, rig.platform.record_count() as u64);
        // kbdclass's service callback must be called at DISPATCH_LEVEL.
        assert_eq!(rig.platform.deliveries_off_dispatch(), 0);
        rig.finish(Some(keyboard)).assert_clean();
    }
}

#[test]
fn whole_layout_round_trip() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    let keyboard = rig.open().unwrap();
    let text = "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!\n\
                `1234567890-=[]\\;',./ ~!@#$%^&*()_+{}|:\"<>?";
    let keystrokes = typist::type_with_edit(text).unwrap();
    let got = type_and_collect(&rig, &keystrokes);
    assert_eq!(got, typist::expected_records(&keystrokes));
    let decoded = typist::decode(&got);
    assert_eq!(decoded.text, text);
    assert!(decoded.consistent());
    rig.finish(Some(keyboard)).assert_clean();
}

#[test]
fn led_round_trips() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    let keyboard = rig.open().unwrap();
    let values = [
        protocol::KEYBOARD_CAPS_LOCK_ON,
        protocol::KEYBOARD_NUM_LOCK_ON | protocol::KEYBOARD_SCROLL_LOCK_ON,
        0,
        // Windows-internal bits (injected, shadow) are masked off before the host sees them.
        0xc000 | protocol::KEYBOARD_KANA_LOCK_ON,
    ];
    for value in values {
        keyboard.set_indicators(value).unwrap();
        assert_eq!(
            keyboard.client().settings().indicators().led_flags,
            value & protocol::LED_MASK
        );
    }
    assert!(wait_until(WAIT, || rig.host.leds().len() == values.len()));
    assert_eq!(rig.host.leds(), vec![4, 3, 0, 8]);
    assert_eq!(rig.host.bad_guest_messages(), 0);
    let counters = keyboard.client().counters();
    assert_eq!(counters.leds_sent, 4);
    assert_eq!(counters.led_failures, 0);
    rig.finish(Some(keyboard)).assert_clean();
}

#[test]
fn typematic_round_trip() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    let keyboard = rig.open().unwrap();
    let settings = keyboard.client().settings();
    // What QUERY_TYPEMATIC returns before any SET: the defaults.
    assert_eq!(
        settings.typematic(),
        TypematicParameters {
            unit_id: 0,
            rate: 30,
            delay: 250
        }
    );
    // SET_TYPEMATIC's input buffer, parsed, stored, and answered by QUERY_TYPEMATIC.
    let input = [0, 0, 10, 0, 0xf4, 0x01];
    let params = TypematicParameters::parse(&input).unwrap();
    settings.set_typematic(params).unwrap();
    let mut output = [0_u8; TypematicParameters::LEN];
    assert_eq!(settings.typematic().write(&mut output), Some(6));
    assert_eq!(output, input, "IOCTL {IOCTL_KEYBOARD_QUERY_TYPEMATIC:#x}");
    // Out of the attributes' range: refused, unchanged.
    let attributes = KeyboardAttributes::SYNTHETIC;
    for bad in [
        TypematicParameters {
            rate: attributes.key_repeat_maximum.rate + 1,
            ..params
        },
        TypematicParameters {
            delay: attributes.key_repeat_minimum.delay - 1,
            ..params
        },
    ] {
        assert!(settings.set_typematic(bad).is_err());
    }
    assert_eq!(settings.typematic(), params);
    // Typematic state is the guest's: nothing went to the host.
    assert!(rig.host.leds().is_empty());
    assert_eq!(rig.host.bad_guest_messages(), 0);
    rig.finish(Some(keyboard)).assert_clean();
}
