//! A strict, borrowing JSON reader (a serde `Deserializer` over `&str`) for the one pass.
//!
//! Why it exists: skipping the values nobody reads is most of a review's cost, and
//! serde_json's skip cannot be swapped out (its `Read` trait is sealed). Measured on the
//! loadgen corpus (callgrind, 22.2 KB review): serde_json skipping a whole body as
//! `IgnoredAny` costs 289 k instructions, the skipper below (eight bytes at a time through
//! each string) 165 k, sixteen at a time with SSE2 139 k; the SSE2 scan is used on x86_64
//! (its one `unsafe` block is in [`stops16`]). sonic-rs, the well-kept SIMD reader, was
//! measured too and was slower with validity kept exact (benches/BENCHMARKS.md, "JSON
//! reader").
//!
//! It is only ever *stricter* than serde_json, never looser: whatever it cannot read
//! exactly as serde_json would, it refuses, and `parse_review` then reads the body with
//! serde_json, whose result and error stand. So it refuses (for serde_json to decide):
//! numbers that are not integers fitting `u64`/`i64` (and `-0`, which serde_json reads as
//! a float), structs written as arrays, enums written as maps, serde_json's private
//! `RawValue` protocol, lone surrogates, nesting deeper than serde_json's 128 in read
//! values and than `MAX_SKIP_DEPTH` in skipped ones, and maps or sequences a visitor
//! leaves unfinished. It accepts JSON text as RFC 8259 defines it (whitespace, literals,
//! number and string grammar, escapes) and nothing else; the input is `&str`, so UTF-8
//! was checked by the caller.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// Why this reader refused a text. The caller reads it again with serde_json, whose error
/// is the one reported, so this is only a word for tests and debugging: two words wide,
/// every `Result` here is returned in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused(&'static str);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Refused("refused by a visitor")
    }
}

fn refuse<T>(what: &'static str) -> Result<T, Refused> {
    Err(Refused(what))
}

/// serde_json's recursion limit for values it builds (`Deserializer::remaining_depth`).
const MAX_READ_DEPTH: u8 = 128;
/// Nesting allowed in skipped values (serde_json has no limit there; deeper is refused,
/// so serde_json decides).
const MAX_SKIP_DEPTH: usize = 256;
/// The token serde_json's `RawValue` deserialises through (serde_json `src/raw.rs`).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Reads `T` from the whole of `text`.
pub(crate) fn from_str<'de, T: de::Deserialize<'de>>(text: &'de str) -> Result<T, Refused> {
    let mut r = Reader {
        text,
        pos: 0,
        depth: MAX_READ_DEPTH,
    };
    let value = T::deserialize(&mut r)?;
    r.skip_ws();
    if r.pos != r.bytes().len() {
        return refuse("trailing characters");
    }
    Ok(value)
}

pub(crate) struct Reader<'de> {
    text: &'de str,
    pos: usize,
    /// Read nesting still allowed.
    depth: u8,
}

const ONES: u64 = u64::MAX / 255;

/// High bit set in each byte of `chunk` that ends a string's plain run: `"`, `\` or a
/// control character (the word-at-a-time test serde_json's `skip_to_escape` uses too).
#[inline(always)]
fn stops(chunk: u64) -> u64 {
    let ctrl = chunk.wrapping_sub(ONES * 0x20) & !chunk;
    let quote = chunk ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let slash = chunk ^ (ONES * u64::from(b'\\'));
    let slash = slash.wrapping_sub(ONES) & !slash;
    (ctrl | quote | slash) & (ONES << 7)
}

/// `stops` for sixteen bytes with SSE2 (part of every x86_64 CPU): bit `k` set if byte `k`
/// is `"`, `\\` or a control character.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn stops16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };
    let (lo, hi) = chunk.split_at(8);
    // SAFETY: SSE2 is part of the x86_64 baseline (every x86_64 CPU has it, and rustc's
    // x86_64 targets enable it), and these intrinsics touch no memory.
    unsafe {
        let v = _mm_set_epi64x(
            i64::from_le_bytes(hi.try_into().expect("eight bytes")),
            i64::from_le_bytes(lo.try_into().expect("eight bytes")),
        );
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let slash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `v <= 0x1f`: the minimum of the two is `v` itself.
        let ctrl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, slash), ctrl)) as u32
    }
}

#[inline(always)]
fn is_stop(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// What a one-character escape (`\n`, `\"`, …) stands for; `None` for any other byte
/// after a backslash (`u` included: a `\u` escape is read by its callers).
fn simple_escape(c: u8) -> Option<char> {
    Some(match c {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => return None,
    })
}

fn hex4(b: &[u8]) -> Option<u16> {
    let mut v = 0u16;
    for &c in b.get(..4)? {
        v = v << 4 | u16::from(char::from(c).to_digit(16)? as u8);
    }
    Some(v)
}

impl<'de> Reader<'de> {
    #[inline(always)]
    fn bytes(&self) -> &'de [u8] {
        self.text.as_bytes()
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        let b = self.bytes();
        // The API server sends compact JSON: one test for the usual case.
        if b.get(self.pos).is_some_and(|&c| c > b' ') {
            return;
        }
        while let Some(&c) = b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    #[inline(always)]
    fn next_token(&mut self) -> Result<u8, Refused> {
        self.skip_ws();
        match self.peek() {
            Some(c) => Ok(c),
            None => refuse("unexpected end"),
        }
    }

    #[inline(always)]
    fn expect(&mut self, c: u8) -> Result<(), Refused> {
        if self.next_token()? == c {
            self.pos += 1;
            Ok(())
        } else {
            refuse("unexpected character")
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Refused> {
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            refuse("bad literal")
        }
    }

    /// Moves to the next `"`, `\` or control character of a string (or the end).
    #[inline(always)]
    fn seek_stop(&mut self) {
        let b = self.bytes();
        let mut i = self.pos;
        #[cfg(target_arch = "x86_64")]
        while let Some(chunk) = b.get(i..i + 16) {
            let m = stops16(chunk.try_into().expect("sixteen bytes"));
            if m != 0 {
                self.pos = i + m.trailing_zeros() as usize;
                return;
            }
            i += 16;
        }
        while let Some(chunk) = b.get(i..i + 8) {
            let m = stops(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
            if m != 0 {
                self.pos = i + (m.trailing_zeros() / 8) as usize;
                return;
            }
            i += 8;
        }
        while i < b.len() && !is_stop(b[i]) {
            i += 1;
        }
        self.pos = i;
    }

    /// Skips a string whose opening quote was consumed, checking its escapes. The plain
    /// run to the closing quote (nearly every string in a review) is inlined into the
    /// callers; a call per string cost more than the scan of a typical key.
    #[inline(always)]
    fn skip_str(&mut self) -> Result<(), Refused> {
        self.seek_stop();
        if self.peek() == Some(b'"') {
            self.pos += 1;
            return Ok(());
        }
        self.skip_str_rest()
    }

    /// `skip_str` from its first escape (or a refused byte) on.
    #[inline(never)]
    fn skip_str_rest(&mut self) -> Result<(), Refused> {
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let b = self.bytes();
                    match b.get(self.pos + 1) {
                        Some(&c) if simple_escape(c).is_some() => self.pos += 2,
                        Some(b'u') if hex4(&b[self.pos + 2..]).is_some() => self.pos += 6,
                        _ => return refuse("bad escape"),
                    }
                }
                _ => return refuse("control character or end in a string"),
            }
            self.seek_stop();
        }
    }

    /// Reads a string whose opening quote was consumed: borrowed when it has no escapes.
    #[inline(always)]
    fn read_str(&mut self) -> Result<Text<'de>, Refused> {
        let start = self.pos;
        self.seek_stop();
        if self.peek() == Some(b'"') {
            // Both ends are ASCII quotes, so these are char boundaries.
            let s = &self.text[start..self.pos];
            self.pos += 1;
            return Ok(Text::Borrowed(s));
        }
        self.read_str_rest(start)
    }

    /// `read_str` from its first escape (or a refused byte) on.
    #[inline(never)]
    fn read_str_rest(&mut self, start: usize) -> Result<Text<'de>, Refused> {
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.text[start..self.pos]);
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Text::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.unescape(&mut out)?;
                }
                _ => return refuse("control character or end in a string"),
            }
            let from = self.pos;
            self.seek_stop();
            out.push_str(&self.text[from..self.pos]);
        }
    }

    /// One escape, its backslash consumed.
    fn unescape(&mut self, out: &mut String) -> Result<(), Refused> {
        let b = self.bytes();
        let c = match b.get(self.pos) {
            Some(b'u') => {
                let Some(hi) = hex4(&b[self.pos + 1..]) else {
                    return refuse("bad \\u escape");
                };
                self.pos += 5;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        // A surrogate pair, or refused (serde_json refuses lone ones too).
                        let lo = match b.get(self.pos..self.pos + 2) {
                            Some(b"\\u") => hex4(&b[self.pos + 2..]),
                            _ => None,
                        };
                        match lo {
                            Some(lo @ 0xDC00..=0xDFFF) => {
                                self.pos += 6;
                                0x10000
                                    + ((u32::from(hi) - 0xD800) << 10)
                                    + (u32::from(lo) - 0xDC00)
                            }
                            _ => return refuse("lone surrogate"),
                        }
                    }
                    0xDC00..=0xDFFF => return refuse("lone surrogate"),
                    _ => u32::from(hi),
                };
                out.push(char::from_u32(code).expect("not a surrogate"));
                return Ok(());
            }
            Some(&c) => match simple_escape(c) {
                Some(c) => c,
                None => return refuse("bad escape"),
            },
            None => return refuse("bad escape"),
        };
        self.pos += 1;
        out.push(c);
        Ok(())
    }

    /// Skips a number's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn skip_number(&mut self) -> Result<(), Refused> {
        let b = self.bytes();
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = self.pos;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits(i + 1),
            _ => return refuse("bad number"),
        };
        if b.get(i) == Some(&b'.') {
            if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return refuse("bad number");
            }
            i = digits(i + 1);
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                return refuse("bad number");
            }
            i = digits(i);
        }
        self.pos = i;
        Ok(())
    }

    /// An integer as serde_json reads it (`u64`, or `i64` when negative); anything else
    /// (fractions, exponents, overflow, `-0`) is refused, since serde_json reads it as a
    /// float by its own rounding.
    fn read_integer<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Refused> {
        let b = self.bytes();
        let negative = b.get(self.pos) == Some(&b'-');
        let mut i = self.pos + usize::from(negative);
        let mut n: u64 = 0;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = b.get(i) {
                    n = match n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(d - b'0')))
                    {
                        Some(n) => n,
                        None => return refuse("integer out of range"),
                    };
                    i += 1;
                }
            }
            _ => return refuse("bad number"),
        }
        if matches!(b.get(i), Some(b'.' | b'e' | b'E' | b'0'..=b'9')) {
            return refuse("not an integer");
        }
        self.pos = i;
        if !negative {
            return visitor.visit_u64(n);
        }
        match i64::try_from(n) {
            Ok(v) if v != 0 => visitor.visit_i64(-v),
            _ => refuse("negative zero or out of range"),
        }
    }

    /// Skips one value, checking it as strictly as serde_json's `ignore_value`. Iterative,
    /// so depth costs no stack.
    fn skip_value(&mut self) -> Result<(), Refused> {
        // One bit per open container, set for an object.
        let mut open = [0u64; MAX_SKIP_DEPTH / 64];
        let mut depth = 0;
        loop {
            // A value.
            match self.next_token()? {
                b'"' => {
                    self.pos += 1;
                    self.skip_str()?;
                }
                c @ (b'{' | b'[') => {
                    self.pos += 1;
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.next_token()? == close {
                        self.pos += 1;
                    } else {
                        if depth == MAX_SKIP_DEPTH {
                            return refuse("nested too deep");
                        }
                        if c == b'{' {
                            open[depth / 64] |= 1 << (depth % 64);
                        } else {
                            open[depth / 64] &= !(1 << (depth % 64));
                        }
                        depth += 1;
                        if c == b'{' {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.skip_number()?,
                _ => return refuse("expected a value"),
            }
            // After a value: close containers until a comma starts the next one.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = open[(depth - 1) / 64] & (1 << ((depth - 1) % 64)) != 0;
                match self.next_token()? {
                    b',' => {
                        self.pos += 1;
                        if object {
                            self.skip_key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return refuse("expected , or the end of a container"),
                }
                self.pos += 1;
                depth -= 1;
            }
        }
    }

    /// Skips `"key":`.
    #[inline(always)]
    fn skip_key(&mut self) -> Result<(), Refused> {
        self.expect(b'"')?;
        self.skip_str()?;
        self.expect(b':')
    }

    /// Reads a map or sequence opening with `open`, its entries through `read`; a
    /// visitor that stops before the end is refused (serde_json reports that too).
    fn container<T>(
        &mut self,
        open: u8,
        read: impl FnOnce(&mut Access<'_, 'de>) -> Result<T, Refused>,
    ) -> Result<T, Refused> {
        self.expect(open)?;
        self.depth = match self.depth.checked_sub(1) {
            Some(0) | None => return refuse("nested too deep"),
            Some(d) => d,
        };
        let mut access = Access {
            r: self,
            first: true,
            done: false,
        };
        let value = read(&mut access)?;
        if !access.done {
            return refuse("container not read to its end");
        }
        self.depth += 1;
        Ok(value)
    }

    fn visit_map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Refused> {
        self.container(b'{', |access| visitor.visit_map(access))
    }

    fn visit_seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Refused> {
        self.container(b'[', |access| visitor.visit_seq(access))
    }
}

enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Text<'de> {
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Text::Borrowed(s) => visitor.visit_borrowed_str(s),
            Text::Owned(s) => visitor.visit_string(s),
        }
    }
}

/// A map's or sequence's entries.
struct Access<'r, 'de> {
    r: &'r mut Reader<'de>,
    first: bool,
    /// The closing bracket was read.
    done: bool,
}

impl Access<'_, '_> {
    /// Before an entry: `true` if there is one, `false` once the container closed.
    fn has_next(&mut self, close: u8) -> Result<bool, Refused> {
        if self.done {
            return Ok(false);
        }
        let c = self.r.next_token()?;
        if c == close {
            self.r.pos += 1;
            self.done = true;
            return Ok(false);
        }
        if !self.first {
            if c != b',' {
                return refuse("expected , or the end of a container");
            }
            self.r.pos += 1;
        }
        self.first = false;
        Ok(true)
    }
}

impl<'de> de::MapAccess<'de> for &mut Access<'_, 'de> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Refused> {
        if !self.has_next(b'}')? {
            return Ok(None);
        }
        if self.r.next_token()? != b'"' {
            return refuse("a key must be a string");
        }
        if self.r.bytes()[self.r.pos + 1..].starts_with(RAW_VALUE_TOKEN.as_bytes()) {
            return refuse("serde_json's RawValue marker");
        }
        let key = seed.deserialize(&mut *self.r)?;
        self.r.expect(b':')?;
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        seed.deserialize(&mut *self.r)
    }
}

impl<'de> de::SeqAccess<'de> for &mut Access<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Refused> {
        if !self.has_next(b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.r).map(Some)
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self.next_token()? {
            b'"' => {
                self.pos += 1;
                self.read_str()?.visit(visitor)
            }
            b'{' => self.visit_map(visitor),
            b'[' => self.visit_seq(visitor),
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            b'-' | b'0'..=b'9' => self.read_integer(visitor),
            _ => refuse("expected a value"),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self.next_token()? {
            b't' | b'f' => self.deserialize_any(visitor),
            _ => refuse("expected a boolean"),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.expect(b'"')?;
        self.read_str()?.visit(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_str(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self.next_token()? {
            b'n' => self.deserialize_any(visitor),
            _ => refuse("expected null"),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        if self.next_token()? == b'n' {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        if name == RAW_VALUE_TOKEN {
            return refuse("serde_json's RawValue");
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        self.visit_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        // Unit variants written as strings; the map form is left to serde_json.
        self.expect(b'"')?;
        match self.read_str()? {
            Text::Borrowed(s) => {
                visitor.visit_enum(de::value::BorrowedStrDeserializer::<Refused>::new(s))
            }
            Text::Owned(s) => visitor.visit_enum(IntoDeserializer::<Refused>::into_deserializer(s)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.skip_value()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit_struct tuple tuple_struct
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Where this reader accepts, it reads what serde_json reads; where serde_json
    /// refuses, so does it.
    fn same(text: &str) {
        let ours = from_str::<Value>(text);
        let theirs = serde_json::from_str::<Value>(text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text:?}"),
            (Ok(_), Err(e)) => panic!("accepted what serde_json refuses ({e}): {text:?}"),
            (Err(_), _) => {}
        }
        // serde_json limits the depth of what it builds, not of what it skips.
        if from_str::<de::IgnoredAny>(text).is_ok() {
            assert!(
                serde_json::from_str::<de::IgnoredAny>(text).is_ok(),
                "skipped what serde_json refuses: {text:?}"
            );
        }
    }

    /// The sixteen- and eight-byte tests agree with the byte test, for every byte value at
    /// every position.
    #[test]
    fn word_tests_find_exactly_the_stop_bytes() {
        for byte in 0..=u8::MAX {
            for at in 0..16 {
                let mut chunk = [b'a'; 16];
                chunk[at] = byte;
                let want = is_stop(byte);
                #[cfg(target_arch = "x86_64")]
                {
                    let m = stops16(&chunk);
                    assert_eq!(m != 0, want, "{byte:#x} at {at}");
                    if want {
                        assert_eq!(m.trailing_zeros() as usize, at);
                    }
                }
                let word = u64::from_le_bytes(chunk[..8].try_into().unwrap());
                assert_eq!(stops(word) != 0, want && at < 8, "{byte:#x} at {at}");
            }
        }
    }

    #[test]
    fn reads_as_serde_json_reads() {
        for text in [
            r#"{"a":[1,-2,true,false,null,"x\"y\\z\/\b\f\n\r\t\u00e9\ud83d\ude00"],"b":{}}"#,
            " [ ] ",
            "\"plain\"",
            "\"\\u0041BCDEFGHIJKLMNOP\\n\"",
            "18446744073709551615",
            "-9223372036854775807",
            "0",
            "[0,1,10,-1]",
        ] {
            same(text);
            assert!(from_str::<Value>(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        for text in [
            "-0",
            "1.5",
            "1e3",
            "18446744073709551616",
            "-9223372036854775809",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            r#"{"$serde_json::private::RawValue":"1"}"#,
        ] {
            same(text);
            assert!(from_str::<Value>(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "+1",
            ".5",
            "1e",
            "tru",
            "nul",
            "NaN",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\u{1}\"",
            "\"abc",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "[]]",
            "{} x",
            "\u{feff}{}",
            "\u{c}{}",
            "[\"\\u00zz\"]",
        ] {
            same(text);
            assert!(from_str::<Value>(text).is_err(), "{text:?}");
            assert!(from_str::<de::IgnoredAny>(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        for depth in [1, 127, 128, 129, 200, 255, 256, 257, 258, 10_000] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            same(&text);
            assert_eq!(from_str::<Value>(&text).is_ok(), depth < 128, "{depth}");
            // The innermost pair is empty and takes no slot.
            let skipped = from_str::<de::IgnoredAny>(&text).is_ok();
            assert_eq!(skipped, depth <= MAX_SKIP_DEPTH + 1, "{depth}");
        }
    }

    /// Strings of every length around the eight-byte steps, with each stop byte at each
    /// position.
    #[test]
    fn strings_across_word_boundaries() {
        for len in 0..20 {
            for at in 0..len {
                for stop in ["\\n", "\\u00e9", "\u{1}", "\"", "é"] {
                    let mut s = "a".repeat(len);
                    s.replace_range(at..at + 1, stop);
                    same(&format!("[\"{s}\"]"));
                    same(&format!("{{\"{s}\":1}}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod differential {
    use super::*;
    use serde_json::Value;

    /// Pieces JSON text is made of, good and bad, for random texts to be built from.
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\t",
        "\"",
        "\"k\"",
        "\"a\\\"b\"",
        "\\",
        "\\u",
        "\\ud83d",
        "\\ude00",
        "\\n",
        "0",
        "1",
        "-",
        "-0",
        "12",
        ".",
        "5",
        "e",
        "E+",
        "true",
        "false",
        "null",
        "tru",
        "\u{1}",
        "é",
        "😀",
        "abcdefghij",
        "\"$serde_json",
        "18446744073709551616",
        "x",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]
        /// Random texts of those pieces: whatever this reader accepts, serde_json accepts
        /// and reads the same; whatever it skips, serde_json skips.
        #[test]
        fn never_looser_than_serde_json(
            picks in proptest::collection::vec(0..PIECES.len(), 1..24)
        ) {
            let text: String = picks.iter().map(|&i| PIECES[i]).collect();
            if let Ok(ours) = from_str::<Value>(&text) {
                let theirs = serde_json::from_str::<Value>(&text);
                proptest::prop_assert!(theirs.is_ok(), "accepted {text:?}");
                proptest::prop_assert_eq!(ours, theirs.unwrap(), "{}", text);
            }
            if from_str::<de::IgnoredAny>(&text).is_ok() {
                proptest::prop_assert!(
                    serde_json::from_str::<de::IgnoredAny>(&text).is_ok(),
                    "skipped {text:?}"
                );
            }
        }
    }
}
