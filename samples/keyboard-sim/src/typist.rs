//! The scripted typist (text → the keystroke events a Hyper-V host sends) and the decoder
//! (the `KEYBOARD_INPUT_DATA` records kbdclass receives → text), both for a US layout in scan
//! code set 1.
//!
//! The typist presses and releases one key per character, wrapping shifted characters in a
//! left-shift make/break. [`type_with_edit`] also uses extended (E0) keys: it types everything
//! but the first character, goes back with Home, types the first character and returns with
//! End, so the text only comes back right if the E0 flag survived the trip (without it, Home
//! and End are keypad 7 and 1).

use std::collections::HashSet;
use std::fmt;

use vmbus_kbd::protocol::{
    INFO_BREAK, INFO_E0, INFO_E1, INFO_UNICODE, KEY_BREAK, KEY_E0, KEY_E1, KeyboardInputData,
    Keystroke,
};

/// Left shift's scan code.
pub const LEFT_SHIFT: u16 = 0x2a;
/// Right shift's scan code.
pub const RIGHT_SHIFT: u16 = 0x36;

/// Keys that are not characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamedKey {
    /// Enter (main block).
    Enter,
    /// Backspace.
    Backspace,
    /// Tab.
    Tab,
    /// Escape.
    Escape,
    /// Caps lock.
    CapsLock,
    /// Left arrow (E0).
    Left,
    /// Right arrow (E0).
    Right,
    /// Up arrow (E0).
    Up,
    /// Down arrow (E0).
    Down,
    /// Home (E0).
    Home,
    /// End (E0).
    End,
    /// Delete (E0).
    Delete,
    /// Keypad Enter (E0).
    KeypadEnter,
    /// Right control (E0).
    RightCtrl,
    /// Pause (E1).
    Pause,
}

impl NamedKey {
    /// The key's scan code and whether it has the E0 prefix (Pause is special: E1).
    #[must_use]
    pub const fn scan_code(self) -> (u16, bool) {
        match self {
            Self::Enter => (0x1c, false),
            Self::Backspace => (0x0e, false),
            Self::Tab => (0x0f, false),
            Self::Escape => (0x01, false),
            Self::CapsLock => (0x3a, false),
            Self::Left => (0x4b, true),
            Self::Right => (0x4d, true),
            Self::Up => (0x48, true),
            Self::Down => (0x50, true),
            Self::Home => (0x47, true),
            Self::End => (0x4f, true),
            Self::Delete => (0x53, true),
            Self::KeypadEnter => (0x1c, true),
            Self::RightCtrl => (0x1d, true),
            Self::Pause => (0x1d, false),
        }
    }
}

/// The unshifted and shifted characters of the US layout's character keys, by scan code.
const LAYOUT: [(u16, char, char); 47] = [
    (0x02, '1', '!'),
    (0x03, '2', '@'),
    (0x04, '3', '#'),
    (0x05, '4', '$'),
    (0x06, '5', '%'),
    (0x07, '6', '^'),
    (0x08, '7', '&'),
    (0x09, '8', '*'),
    (0x0a, '9', '('),
    (0x0b, '0', ')'),
    (0x0c, '-', '_'),
    (0x0d, '=', '+'),
    (0x10, 'q', 'Q'),
    (0x11, 'w', 'W'),
    (0x12, 'e', 'E'),
    (0x13, 'r', 'R'),
    (0x14, 't', 'T'),
    (0x15, 'y', 'Y'),
    (0x16, 'u', 'U'),
    (0x17, 'i', 'I'),
    (0x18, 'o', 'O'),
    (0x19, 'p', 'P'),
    (0x1a, '[', '{'),
    (0x1b, ']', '}'),
    (0x1e, 'a', 'A'),
    (0x1f, 's', 'S'),
    (0x20, 'd', 'D'),
    (0x21, 'f', 'F'),
    (0x22, 'g', 'G'),
    (0x23, 'h', 'H'),
    (0x24, 'j', 'J'),
    (0x25, 'k', 'K'),
    (0x26, 'l', 'L'),
    (0x27, ';', ':'),
    (0x28, '\'', '"'),
    (0x29, '`', '~'),
    (0x2b, '\\', '|'),
    (0x2c, 'z', 'Z'),
    (0x2d, 'x', 'X'),
    (0x2e, 'c', 'C'),
    (0x2f, 'v', 'V'),
    (0x30, 'b', 'B'),
    (0x31, 'n', 'N'),
    (0x32, 'm', 'M'),
    (0x33, ',', '<'),
    (0x34, '.', '>'),
    (0x35, '/', '?'),
];

/// The space bar.
const SPACE: u16 = 0x39;

/// The scan code of `c` and whether it needs shift, or `None` if the layout has no key for it.
#[must_use]
pub fn key_for(c: char) -> Option<(u16, bool)> {
    if c == ' ' {
        return Some((SPACE, false));
    }
    if c == '\n' {
        return Some((NamedKey::Enter.scan_code().0, false));
    }
    LAYOUT.iter().find_map(|&(code, plain, shifted)| {
        if c == plain {
            Some((code, false))
        } else if c == shifted {
            Some((code, true))
        } else {
            None
        }
    })
}

/// The character key `code` produces, if it is one.
fn char_of(code: u16, shifted: bool) -> Option<char> {
    if code == SPACE {
        return Some(' ');
    }
    LAYOUT
        .iter()
        .find(|&&(c, _, _)| c == code)
        .map(|&(_, plain, upper)| if shifted { upper } else { plain })
}

/// A make (`down`) or break event of a plain, E0 or E1 scan code.
#[must_use]
pub const fn stroke(make_code: u16, down: bool, prefix: u32) -> Keystroke {
    Keystroke {
        make_code,
        info: prefix | if down { 0 } else { INFO_BREAK },
    }
}

/// The events of pressing and releasing `key`.
#[must_use]
pub fn press(key: NamedKey) -> Vec<Keystroke> {
    if key == NamedKey::Pause {
        // Pause sends an E1-prefixed control code followed by the num-lock code, each made and
        // then broken; it has no repeat.
        return vec![
            stroke(0x1d, true, INFO_E1),
            stroke(0x45, true, 0),
            stroke(0x1d, false, INFO_E1),
            stroke(0x45, false, 0),
        ];
    }
    let (code, e0) = key.scan_code();
    let prefix = if e0 { INFO_E0 } else { 0 };
    vec![stroke(code, true, prefix), stroke(code, false, prefix)]
}

/// A unicode event pair for `unit` (make and break), as a host may send for characters it has
/// no key for.
#[must_use]
pub fn unicode(unit: u16) -> Vec<Keystroke> {
    vec![
        Keystroke {
            make_code: unit,
            info: INFO_UNICODE,
        },
        Keystroke {
            make_code: unit,
            info: INFO_UNICODE | INFO_BREAK,
        },
    ]
}

/// A character the layout has no key for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Untypable(pub char);

impl fmt::Display for Untypable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the US layout has no key for {:?}", self.0)
    }
}

impl std::error::Error for Untypable {}

/// The events of typing `text` key by key (shifted characters inside left shift).
///
/// # Errors
/// [`Untypable`] for a character without a key.
pub fn type_text(text: &str) -> Result<Vec<Keystroke>, Untypable> {
    let mut out = Vec::new();
    for c in text.chars() {
        let (code, shift) = key_for(c).ok_or(Untypable(c))?;
        if shift {
            out.push(stroke(LEFT_SHIFT, true, 0));
        }
        out.push(stroke(code, true, 0));
        out.push(stroke(code, false, 0));
        if shift {
            out.push(stroke(LEFT_SHIFT, false, 0));
        }
    }
    Ok(out)
}

/// Types `text` with an edit through E0 keys: everything but the first character, Home, the
/// first character, End. Texts shorter than two characters are typed plainly, then Left and
/// Right are pressed (so an E0 key is always used).
///
/// # Errors
/// [`Untypable`] for a character without a key.
pub fn type_with_edit(text: &str) -> Result<Vec<Keystroke>, Untypable> {
    let mut chars = text.chars();
    let first = chars.next();
    let rest = chars.as_str();
    let mut out = Vec::new();
    match first {
        Some(first) if !rest.is_empty() => {
            out.extend(type_text(rest)?);
            out.extend(press(NamedKey::Home));
            out.extend(type_text(first.encode_utf8(&mut [0; 4]))?);
            out.extend(press(NamedKey::End));
        }
        _ => {
            out.extend(type_text(text)?);
            out.extend(press(NamedKey::Left));
            out.extend(press(NamedKey::Right));
        }
    }
    Ok(out)
}

/// What the decoder made of a record stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The text in the model editor.
    pub text: String,
    /// Records the decoder has no meaning for.
    pub unhandled: usize,
    /// Breaks of keys that were not down.
    pub unbalanced_breaks: usize,
    /// Keys still down at the end.
    pub stuck_keys: usize,
    /// Pause key presses.
    pub pauses: usize,
    /// Caps lock state at the end (toggled by each caps lock press).
    pub caps_lock: bool,
}

impl Decoded {
    /// True when every record made sense: nothing unhandled, unbalanced or stuck.
    #[must_use]
    pub fn consistent(&self) -> bool {
        self.unhandled == 0 && self.unbalanced_breaks == 0 && self.stuck_keys == 0
    }
}

/// A model of what kbdclass's consumer does with the records: a one-line editor with a cursor,
/// shift and caps lock.
#[derive(Debug, Default)]
pub struct Decoder {
    text: Vec<char>,
    cursor: usize,
    down: HashSet<(u16, u16)>,
    pause_pending: bool,
    out: Decoded,
}

impl Decoder {
    /// An empty editor.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn shifted(&self) -> bool {
        self.down.contains(&(LEFT_SHIFT, 0)) || self.down.contains(&(RIGHT_SHIFT, 0))
    }

    /// Feeds one record.
    pub fn feed(&mut self, record: &KeyboardInputData) {
        let prefix = record.flags & (KEY_E0 | KEY_E1);
        let key = (record.make_code, prefix);
        let is_break = record.flags & KEY_BREAK != 0;
        // Pause: an E1 control code immediately followed by the num-lock code.
        if self.pause_pending {
            self.pause_pending = false;
            if record.make_code == 0x45 && prefix == 0 {
                if !is_break {
                    self.out.pauses += 1;
                }
                return;
            }
            self.out.unhandled += 1;
        }
        if prefix == KEY_E1 {
            if record.make_code == 0x1d {
                self.pause_pending = true;
            } else {
                self.out.unhandled += 1;
            }
            return;
        }
        if is_break {
            if !self.down.remove(&key) {
                self.out.unbalanced_breaks += 1;
            }
            return;
        }
        // A make of a key already down is a typematic repeat: it acts again.
        self.down.insert(key);
        self.act(record.make_code, prefix == KEY_E0);
    }

    fn act(&mut self, code: u16, e0: bool) {
        if e0 {
            match code {
                0x4b => self.cursor = self.cursor.saturating_sub(1),
                0x4d => self.cursor = (self.cursor + 1).min(self.text.len()),
                0x47 => self.cursor = 0,
                0x4f => self.cursor = self.text.len(),
                0x53 => {
                    if self.cursor < self.text.len() {
                        self.text.remove(self.cursor);
                    }
                }
                0x1c => self.insert('\n'),
                0x1d | 0x38 | 0x48 | 0x50 => {}
                _ => self.out.unhandled += 1,
            }
            return;
        }
        match code {
            LEFT_SHIFT | RIGHT_SHIFT | 0x1d | 0x38 | 0x01 => {}
            0x3a => self.out.caps_lock = !self.out.caps_lock,
            0x1c => self.insert('\n'),
            0x0f => self.insert('\t'),
            0x0e => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    self.text.remove(self.cursor);
                }
            }
            _ => {
                let shifted = self.shifted();
                match char_of(code, shifted) {
                    Some(c) if c.is_ascii_alphabetic() && self.out.caps_lock => {
                        let flipped = if shifted {
                            c.to_ascii_lowercase()
                        } else {
                            c.to_ascii_uppercase()
                        };
                        self.insert(flipped);
                    }
                    Some(c) => self.insert(c),
                    None => self.out.unhandled += 1,
                }
            }
        }
    }

    fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// The result so far.
    #[must_use]
    pub fn finish(mut self) -> Decoded {
        if self.pause_pending {
            self.out.unhandled += 1;
        }
        self.out.stuck_keys = self.down.len();
        self.out.text = self.text.into_iter().collect();
        self.out
    }
}

/// Decodes a whole record stream.
#[must_use]
pub fn decode(records: &[KeyboardInputData]) -> Decoded {
    let mut decoder = Decoder::new();
    for record in records {
        decoder.feed(record);
    }
    decoder.finish()
}

/// The records kbdclass should receive for `keystrokes` (unicode ones dropped).
#[must_use]
pub fn expected_records(keystrokes: &[Keystroke]) -> Vec<KeyboardInputData> {
    keystrokes
        .iter()
        .filter_map(Keystroke::to_input_data)
        .collect()
}

/// One record in short form: the make code in hex, `+` for make or `-` for break, an `e0:` or
/// `e1:` prefix.
#[must_use]
pub fn short(record: &KeyboardInputData) -> String {
    let prefix = if record.flags & KEY_E0 != 0 {
        "e0:"
    } else if record.flags & KEY_E1 != 0 {
        "e1:"
    } else {
        ""
    };
    let edge = if record.flags & KEY_BREAK != 0 {
        '-'
    } else {
        '+'
    };
    format!("{prefix}{:02x}{edge}", record.make_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_every_typable_character() {
        let text: String = LAYOUT
            .iter()
            .flat_map(|&(_, a, b)| [a, b])
            .chain([' ', '\n'])
            .collect();
        let records = expected_records(&type_with_edit(&text).unwrap());
        let decoded = decode(&records);
        assert_eq!(decoded.text, text);
        assert!(decoded.consistent(), "{decoded:?}");
    }

    #[test]
    fn lost_e0_flag_is_visible() {
        let mut records = expected_records(&type_with_edit("ab").unwrap());
        for r in &mut records {
            r.flags &= !KEY_E0;
        }
        assert_ne!(decode(&records).text, "ab");
    }

    #[test]
    fn untypable() {
        assert_eq!(type_text("é"), Err(Untypable('é')));
    }
}
