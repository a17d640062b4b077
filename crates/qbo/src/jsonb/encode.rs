//! PostgreSQL's `jsonb` binary format, written from a record's JSON text on the network thread.
//!
//! # Why
//! Parsing JSON text into jsonb (`jsonb_in`: lexing, numeric parsing, sorting each object's keys)
//! was about 30 % of the backend's CPU in a first load, all of it on the backend's one thread,
//! which also runs every upsert. The network thread has a core of its own and already reads
//! each record once: it now also writes the record as the very bytes `jsonb_in` would produce,
//! and the backend passes them to the upsert as a `jsonb[]` parameter without parsing anything.
//! The JSON text is still read exactly once (no `serde_json::Value` in between).
//!
//! # Exactness
//! [`JsonbEncoder::encode`] returns the bytes of the jsonb datum (4-byte varlena header
//! included) that PostgreSQL 13-18's `jsonb_in` returns for the same text in a UTF-8 database,
//! byte for byte; the in-database suite compares the two on real QBO payloads and on generated
//! documents. It follows `convertToJsonb` (jsonb_util.c): containers aligned to 4 bytes, one
//! `JEntry` per element (object keys first, then values), every 32nd entry an end offset
//! instead of a length, keys ordered by length then bytes; numbers as `numeric_in` builds them
//! (`set_var_from_str` + `make_result`: base-10000 digits, weight, display scale, short header
//! when they fit). `\u0000` becomes U+FFFD, the policy of [`crate::jsonb`].
//!
//! Anything outside the plain subset QBO sends returns `None`, and the caller falls back to
//! PostgreSQL's own `jsonb_in` on the text (which also gives the exact error for invalid JSON):
//! numbers with an exponent or more than 1000 digits, duplicate keys in an object, unpaired
//! surrogate escapes, nesting deeper than [`MAX_DEPTH`], invalid JSON.

const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;
const JB_OFFSET_STRIDE: usize = 32;

/// Largest record (JSON text, bytes) encoded here; larger ones go to `jsonb_in`. The encoder's
/// working memory is about ten times the text in the worst case (a node and an output entry per
/// two-byte `0,`), so this bounds it to a few MiB whatever a page holds; QBO records are a few
/// KB, an invoice of hundreds of lines a few hundred.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;
/// Deepest nesting encoded here (deeper documents go to `jsonb_in`).
pub const MAX_DEPTH: usize = 200;
/// Longest number (in characters) encoded here.
const MAX_NUMBER_DIGITS: usize = 1000;

thread_local! {
    static ENCODER: std::cell::RefCell<JsonbEncoder> = std::cell::RefCell::new(JsonbEncoder::new());
}

/// [`JsonbEncoder::encode`] with this thread's reusable encoder.
pub fn encode(json: &str) -> Option<Vec<u8>> {
    ENCODER.with(|e| {
        let mut e = e.borrow_mut();
        let out = e.encode(json);
        e.trim();
        out
    })
}

/// Where a string's bytes are: in the source text (no escapes) or in the unescaped buffer.
#[derive(Clone, Copy, Debug)]
struct Span {
    escaped: bool,
    start: u32,
    len: u32,
}

#[derive(Clone, Copy, Debug)]
enum Node {
    Null,
    False,
    True,
    Str(Span),
    /// The number's text in the source, validated.
    Num {
        start: u32,
        len: u32,
    },
    /// `items[first..first + len]`.
    Arr {
        first: u32,
        len: u32,
    },
    /// `pairs[first..first + len]`, sorted as jsonb stores them.
    Obj {
        first: u32,
        len: u32,
    },
}

/// Reusable buffers for encoding many documents (one per network thread).
#[derive(Default)]
pub struct JsonbEncoder {
    unescaped: Vec<u8>,
    items: Vec<Node>,
    pairs: Vec<(Span, Node)>,
    item_stack: Vec<Node>,
    pair_stack: Vec<(Span, Node)>,
}

struct Parser<'a, 'e> {
    s: &'a [u8],
    i: usize,
    e: &'e mut JsonbEncoder,
}

impl JsonbEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The jsonb datum (varlena header included) of `json`, or `None` outside the subset this
    /// encoder writes (see the module documentation): the caller then uses `jsonb_in`.
    pub fn encode(&mut self, json: &str) -> Option<Vec<u8>> {
        self.unescaped.clear();
        self.items.clear();
        self.pairs.clear();
        self.item_stack.clear();
        self.pair_stack.clear();
        let s = json.as_bytes();
        let root = {
            let mut p = Parser { s, i: 0, e: self };
            p.ws();
            let root = p.value(0)?;
            p.ws();
            if p.i != s.len() {
                return None;
            }
            root
        };
        let mut out = Vec::with_capacity(json.len() + json.len() / 4 + 64);
        out.extend_from_slice(&[0; 4]); // varlena header, set below
        match root {
            Node::Arr { first, len } => {
                self.convert_array(&mut out, s, first as usize, len as usize, false)?;
            }
            Node::Obj { first, len } => {
                self.convert_object(&mut out, s, first as usize, len as usize)?;
            }
            scalar => {
                // a scalar document is stored as a one-element array flagged "raw scalar"
                self.items.push(scalar);
                let first = self.items.len() - 1;
                self.convert_array(&mut out, s, first, 1, true)?;
            }
        }
        let total = u32::try_from(out.len()).ok().filter(|&n| n < 1 << 30)?;
        out[..4].copy_from_slice(&(total << 2).to_le_bytes());
        Some(out)
    }

    /// Lets go of buffers a huge record grew (kept buffers stay small: memory stays bounded).
    fn trim(&mut self) {
        const KEEP: usize = 64 * 1024;
        if self.unescaped.capacity() > KEEP {
            self.unescaped = Vec::new();
        }
        if self.items.capacity() + self.pairs.capacity() > KEEP / 8 {
            self.items = Vec::new();
            self.pairs = Vec::new();
            self.item_stack = Vec::new();
            self.pair_stack = Vec::new();
        }
    }

    fn bytes<'a>(&'a self, s: &'a [u8], sp: Span) -> &'a [u8] {
        let (start, len) = (sp.start as usize, sp.len as usize);
        if sp.escaped {
            &self.unescaped[start..start + len]
        } else {
            &s[start..start + len]
        }
    }

    /// Writes one value; returns its `JEntry` (type and length).
    fn convert_value(&self, out: &mut Vec<u8>, s: &[u8], node: Node) -> Option<u32> {
        Some(match node {
            Node::Null => JENTRY_ISNULL,
            Node::False => JENTRY_ISBOOL_FALSE,
            Node::True => JENTRY_ISBOOL_TRUE,
            Node::Str(sp) => {
                let b = self.bytes(s, sp);
                out.extend_from_slice(b);
                JENTRY_ISSTRING | sp.len
            }
            Node::Num { start, len } => {
                let pad = pad_to_int(out);
                let n = write_numeric(out, &s[start as usize..(start + len) as usize])?;
                JENTRY_ISNUMERIC | (pad + n)
            }
            Node::Arr { first, len } => {
                self.convert_array(out, s, first as usize, len as usize, false)?
            }
            Node::Obj { first, len } => {
                self.convert_object(out, s, first as usize, len as usize)?
            }
        })
    }

    fn convert_array(
        &self,
        out: &mut Vec<u8>,
        s: &[u8],
        first: usize,
        n: usize,
        raw_scalar: bool,
    ) -> Option<u32> {
        let base = out.len();
        pad_to_int(out);
        let mut head = u32::try_from(n).ok()? | JB_FARRAY;
        if raw_scalar {
            head |= JB_FSCALAR;
        }
        out.extend_from_slice(&head.to_le_bytes());
        let entries = reserve(out, n);
        let mut total: u32 = 0;
        for k in 0..n {
            let meta = self.convert_value(out, s, self.items[first + k])?;
            total = add_len(total, meta)?;
            put_entry(out, entries, k, meta, total);
        }
        container_entry(out.len() - base)
    }

    fn convert_object(&self, out: &mut Vec<u8>, s: &[u8], first: usize, n: usize) -> Option<u32> {
        let base = out.len();
        pad_to_int(out);
        let head = u32::try_from(n).ok()? | JB_FOBJECT;
        out.extend_from_slice(&head.to_le_bytes());
        let entries = reserve(out, 2 * n);
        let mut total: u32 = 0;
        for k in 0..n {
            let key = self.pairs[first + k].0;
            out.extend_from_slice(self.bytes(s, key));
            let meta = JENTRY_ISSTRING | key.len;
            total = add_len(total, meta)?;
            put_entry(out, entries, k, meta, total);
        }
        for k in 0..n {
            let meta = self.convert_value(out, s, self.pairs[first + k].1)?;
            total = add_len(total, meta)?;
            put_entry(out, entries, n + k, meta, total);
        }
        container_entry(out.len() - base)
    }
}

fn add_len(total: u32, meta: u32) -> Option<u32> {
    let t = total.checked_add(meta & JENTRY_OFFLENMASK)?;
    (t <= JENTRY_OFFLENMASK).then_some(t)
}

fn container_entry(len: usize) -> Option<u32> {
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| l <= JENTRY_OFFLENMASK)?;
    Some(JENTRY_ISCONTAINER | len)
}

/// Reserves `n` JEntries; returns where they start.
fn reserve(out: &mut Vec<u8>, n: usize) -> usize {
    let at = out.len();
    out.resize(at + 4 * n, 0);
    at
}

/// Stores entry `k`: every `JB_OFFSET_STRIDE`-th holds the end offset instead of the length.
fn put_entry(out: &mut [u8], entries: usize, k: usize, meta: u32, total: u32) {
    let meta = if k.is_multiple_of(JB_OFFSET_STRIDE) {
        (meta & JENTRY_TYPEMASK) | total | JENTRY_HAS_OFF
    } else {
        meta
    };
    out[entries + 4 * k..entries + 4 * k + 4].copy_from_slice(&meta.to_le_bytes());
}

/// Pads with zero bytes to a multiple of 4 (from the datum's start); returns the padding.
fn pad_to_int(out: &mut Vec<u8>) -> u32 {
    let pad = (4 - out.len() % 4) % 4;
    out.resize(out.len() + pad, 0);
    pad as u32
}

/// Writes `text` (validated: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`) as `numeric_in` stores it;
/// returns the numeric's size. `None` if it does not fit the numeric format.
fn write_numeric(out: &mut Vec<u8>, text: &[u8]) -> Option<u32> {
    const NBASE_DIGITS: i32 = 4;
    let (neg, unsigned) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (int, frac) = match unsigned.iter().position(|&b| b == b'.') {
        Some(p) => (&unsigned[..p], &unsigned[p + 1..]),
        None => (unsigned, &unsigned[..0]),
    };
    let ddigits = (int.len() + frac.len()) as i32;
    let dscale = frac.len() as i32;
    // set_var_from_str: weight of the first decimal digit, then of the first base-10000 digit,
    // and how many zeros to put in front so base-10000 digits align on the decimal point
    let dweight = int.len() as i32 - 1;
    let mut weight = if dweight >= 0 {
        (dweight + NBASE_DIGITS) / NBASE_DIGITS - 1
    } else {
        -((-dweight - 1) / NBASE_DIGITS + 1)
    };
    let offset = (weight + 1) * NBASE_DIGITS - (dweight + 1);
    let ndigits = (ddigits + offset + NBASE_DIGITS - 1) / NBASE_DIGITS;
    let digit = |k: i32| -> u16 {
        let j = k - offset;
        if j < 0 || j >= ddigits {
            0
        } else if (j as usize) < int.len() {
            u16::from(int[j as usize] - b'0')
        } else {
            u16::from(frac[j as usize - int.len()] - b'0')
        }
    };
    let mut digits: Vec<u16> = (0..ndigits)
        .map(|d| {
            let k = d * NBASE_DIGITS;
            ((digit(k) * 10 + digit(k + 1)) * 10 + digit(k + 2)) * 10 + digit(k + 3)
        })
        .collect();
    // make_result: leading and trailing zero digits dropped; zero is positive with weight 0
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..lead);
    weight -= lead as i32;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let mut neg = neg;
    if digits.is_empty() {
        weight = 0;
        neg = false;
    }
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if dscale <= 63 && (-64..=63).contains(&weight) {
        let header: u16 = 0x8000
            | if neg { 0x2000 } else { 0 }
            | ((dscale as u16) << 7)
            | if weight < 0 { 0x0040 } else { 0 }
            | (weight as u16 & 0x003F);
        out.extend_from_slice(&header.to_le_bytes());
    } else {
        if dscale > 0x3FFF || weight > i16::MAX as i32 || weight < i16::MIN as i32 {
            return None;
        }
        let sign_dscale: u16 = if neg { 0x4000 } else { 0 } | (dscale as u16 & 0x3FFF);
        out.extend_from_slice(&sign_dscale.to_le_bytes());
        out.extend_from_slice(&(weight as i16).to_le_bytes());
    }
    for d in &digits {
        out.extend_from_slice(&d.to_le_bytes());
    }
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&(len << 2).to_le_bytes());
    Some(len)
}

impl Parser<'_, '_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<Node> {
        match *self.s.get(self.i)? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Node::Str),
            b't' => self.literal(b"true", Node::True),
            b'f' => self.literal(b"false", Node::False),
            b'n' => self.literal(b"null", Node::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// After a token: only whitespace, a delimiter or the end may follow.
    fn delimited(&self) -> bool {
        matches!(
            self.s.get(self.i),
            None | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b']' | b'}')
        )
    }

    fn literal(&mut self, word: &[u8], node: Node) -> Option<Node> {
        if !self.s[self.i..].starts_with(word) {
            return None;
        }
        self.i += word.len();
        self.delimited().then_some(node)
    }

    fn number(&mut self) -> Option<Node> {
        let start = self.i;
        let s = self.s;
        let digits = |mut i: usize| {
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = start;
        if s[i] == b'-' {
            i += 1;
        }
        match s.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(i + 1),
            _ => return None,
        }
        if s.get(i) == Some(&b'.') {
            let j = digits(i + 1);
            if j == i + 1 {
                return None;
            }
            i = j;
        }
        // an exponent (rare in QBO) goes to numeric_in, as does garbage after the number
        self.i = i;
        if !self.delimited() || i - start > MAX_NUMBER_DIGITS {
            return None;
        }
        Some(Node::Num {
            start: start as u32,
            len: (i - start) as u32,
        })
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        let t = std::str::from_utf8(h).ok()?;
        if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(t, 16).ok()
    }

    /// At an opening quote: the string's bytes, unescaped.
    fn string(&mut self) -> Option<Span> {
        let s = self.s;
        let start = self.i + 1;
        let mut i = start;
        // fast path: no escape
        while let Some(&b) = s.get(i) {
            match b {
                b'"' => {
                    self.i = i + 1;
                    return Some(Span {
                        escaped: false,
                        start: start as u32,
                        len: (i - start) as u32,
                    });
                }
                b'\\' => break,
                0..=0x1F => return None,
                _ => i += 1,
            }
        }
        let ustart = self.e.unescaped.len();
        self.e.unescaped.extend_from_slice(&s[start..i]);
        loop {
            match *s.get(i)? {
                b'"' => break,
                b'\\' => {
                    let c = *s.get(i + 1)?;
                    i += 2;
                    let byte = match c {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0C,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let mut cp = self.hex4(i)?;
                            i += 4;
                            if (0xD800..0xDC00).contains(&cp) {
                                if s.get(i..i + 2) != Some(b"\\u") {
                                    return None;
                                }
                                let lo = self.hex4(i + 2)?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                i += 6;
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                            } else if (0xDC00..0xE000).contains(&cp) {
                                return None;
                            }
                            // \u0000: jsonb cannot store it; U+FFFD, the policy of crate::jsonb
                            let ch = if cp == 0 {
                                '\u{FFFD}'
                            } else {
                                char::from_u32(cp)?
                            };
                            let mut buf = [0u8; 4];
                            self.e
                                .unescaped
                                .extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return None,
                    };
                    self.e.unescaped.push(byte);
                }
                0..=0x1F => return None,
                _ => {
                    // copy up to the next quote, backslash or control character
                    let run = s[i..]
                        .iter()
                        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                        .unwrap_or(s.len() - i);
                    self.e.unescaped.extend_from_slice(&s[i..i + run]);
                    i += run;
                }
            }
        }
        self.i = i + 1;
        Some(Span {
            escaped: true,
            start: ustart as u32,
            len: (self.e.unescaped.len() - ustart) as u32,
        })
    }

    /// At an opening bracket: steps past it; `true` if `close` follows at once (empty).
    fn open(&mut self, close: u8) -> bool {
        self.i += 1;
        self.ws();
        let empty = self.s.get(self.i) == Some(&close);
        if empty {
            self.i += 1;
        }
        empty
    }

    /// After an element: `Some(false)` past a comma (another element follows), `Some(true)` past
    /// `close`, `None` on anything else.
    fn closed_after_element(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let b = *self.s.get(self.i)?;
        self.i += 1;
        self.ws();
        match b {
            b',' => Some(false),
            c if c == close => Some(true),
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        let base = self.e.item_stack.len();
        if !self.open(b']') {
            loop {
                let v = self.value(depth)?;
                self.e.item_stack.push(v);
                if self.closed_after_element(b']')? {
                    break;
                }
            }
        }
        let first = self.e.items.len();
        let e = &mut *self.e;
        e.items.extend(e.item_stack.drain(base..));
        Some(Node::Arr {
            first: first as u32,
            len: (e.items.len() - first) as u32,
        })
    }

    fn object(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        let base = self.e.pair_stack.len();
        if !self.open(b'}') {
            loop {
                if self.s.get(self.i) != Some(&b'"') {
                    return None;
                }
                let key = self.string()?;
                self.ws();
                if self.s.get(self.i) != Some(&b':') {
                    return None;
                }
                self.i += 1;
                self.ws();
                let v = self.value(depth)?;
                self.e.pair_stack.push((key, v));
                if self.closed_after_element(b'}')? {
                    break;
                }
            }
        }
        // jsonb orders keys by length, then bytes; a repeated key goes to jsonb_in
        let s = self.s;
        let e = &mut *self.e;
        let (unescaped, stack) = (&e.unescaped, &mut e.pair_stack[base..]);
        let key = |sp: &Span| -> &[u8] {
            let (a, l) = (sp.start as usize, sp.len as usize);
            if sp.escaped {
                &unescaped[a..a + l]
            } else {
                &s[a..a + l]
            }
        };
        stack.sort_unstable_by(|a, b| a.0.len.cmp(&b.0.len).then_with(|| key(&a.0).cmp(key(&b.0))));
        if stack
            .windows(2)
            .any(|w| w[0].0.len == w[1].0.len && key(&w[0].0) == key(&w[1].0))
        {
            return None;
        }
        let first = e.pairs.len();
        e.pairs.extend(e.pair_stack.drain(base..));
        Some(Node::Obj {
            first: first as u32,
            len: (e.pairs.len() - first) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> Option<Vec<u8>> {
        JsonbEncoder::new().encode(s)
    }

    fn words(b: &[u8]) -> Vec<u32> {
        b.chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect()
    }

    #[test]
    fn empty_object_and_array() {
        // header 8 bytes << 2, then the container header
        assert_eq!(words(&enc("{}").unwrap()), vec![8 << 2, JB_FOBJECT]);
        assert_eq!(words(&enc(" [ ] ").unwrap()), vec![8 << 2, JB_FARRAY]);
    }

    #[test]
    fn scalar_document_is_a_one_element_raw_scalar_array() {
        let b = enc("true").unwrap();
        assert_eq!(
            words(&b),
            vec![
                12 << 2,
                JB_FARRAY | JB_FSCALAR | 1,
                JENTRY_ISBOOL_TRUE | JENTRY_HAS_OFF
            ]
        );
    }

    #[test]
    fn keys_are_sorted_by_length_then_bytes_and_values_follow_keys() {
        let b = enc(r#"{"bb":null,"a":"x","ba":false}"#).unwrap();
        // header, 3 pairs, 6 entries, then keys a, ba, bb and value "x"
        let w = words(&b);
        assert_eq!(w[1], JB_FOBJECT | 3);
        assert_eq!(w[2], JENTRY_HAS_OFF | 1); // key "a": first entry holds the end offset
        assert_eq!(w[3], 2); // "ba"
        assert_eq!(w[4], 2); // "bb"
        assert_eq!(w[5], JENTRY_ISSTRING | 1); // "x"
        assert_eq!(w[6], JENTRY_ISBOOL_FALSE); // ba
        assert_eq!(w[7], JENTRY_ISNULL); // bb
        assert_eq!(&b[32..], b"ababbx");
        assert_eq!(b.len(), 38);
        assert_eq!(w[0], 38 << 2);
    }

    #[test]
    fn numerics_match_numeric_in() {
        // (text, expected numeric bytes after the varlena header: header word, digits)
        let num = |t: &str| {
            let mut out = Vec::new();
            let n = write_numeric(&mut out, t.as_bytes()).unwrap();
            assert_eq!(n as usize, out.len());
            assert_eq!(u32::from_le_bytes(out[..4].try_into().unwrap()), n << 2);
            out[4..]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<u16>>()
        };
        assert_eq!(num("0"), vec![0x8000]);
        assert_eq!(num("-0"), vec![0x8000]);
        assert_eq!(num("-0.00"), vec![0x8000 | (2 << 7)]);
        assert_eq!(num("12.30"), vec![0x8000 | (2 << 7), 12, 3000]);
        assert_eq!(num("-150"), vec![0x8000 | 0x2000, 150]);
        assert_eq!(num("10000"), vec![0x8000 | 1, 1]);
        assert_eq!(num("123456789"), vec![0x8000 | 2, 1, 2345, 6789]);
        assert_eq!(
            num("0.0005"),
            vec![0x8000 | (4 << 7) | 0x40 | (-1i16 as u16 & 0x3F), 5]
        );
        assert_eq!(
            num("0.00001"),
            vec![0x8000 | (5 << 7) | 0x40 | (-2i16 as u16 & 0x3F), 1000]
        );
        // display scale over 63: the long header
        let long = format!("1.{}", "0".repeat(64));
        assert_eq!(num(&long), vec![64, 0, 1]);
    }

    #[test]
    fn every_32nd_entry_holds_an_offset() {
        let doc = format!("[{}]", vec!["\"ab\""; 40].join(","));
        let w = words(&enc(&doc).unwrap());
        assert_eq!(w[1], JB_FARRAY | 40);
        assert_eq!(w[2], JENTRY_HAS_OFF | 2);
        assert_eq!(w[3], 2);
        assert_eq!(w[2 + 32], JENTRY_HAS_OFF | 66);
        assert_eq!(w[2 + 33], 2);
    }

    #[test]
    fn escapes_are_decoded_and_nul_becomes_the_replacement_character() {
        let b = enc(r#"["a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\u0000z"]"#).unwrap();
        let expect = "a\"\\/\u{8}\u{c}\n\r\té😀\u{FFFD}z";
        assert_eq!(&b[12..], expect.as_bytes());
    }

    #[test]
    fn outside_the_subset_falls_back() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e5",
            "1E-2",
            "tru",
            "truex",
            "nul",
            "\"a\u{1}\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "{\"a\":1,\"a\":2}",
            "[1] x",
            "{a:1}",
            "[1 2]",
            "\"\\u12G4\"",
        ] {
            assert!(enc(bad).is_none(), "{bad:?} should fall back");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(enc(&deep).is_none());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(enc(&ok).is_some());
    }

    #[test]
    fn buffers_are_reused_between_documents() {
        let mut e = JsonbEncoder::new();
        let a = e.encode(r#"{"k":"v\n","n":[1,2.5]}"#).unwrap();
        let _ = e.encode(r#"{"other":"x\ty","z":{"q":null}}"#).unwrap();
        assert_eq!(e.encode(r#"{"k":"v\n","n":[1,2.5]}"#).unwrap(), a);
    }
}
