//! A tiny append-only JSON writer: payloads are written straight into a `String`, in the field
//! order QBO uses, with decimals rendered literally (e.g. `12.30`), never via `serde_json::Value`.

use crate::util::push_json_str;

/// Writes one JSON object.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_json_str(self.out, k);
        self.out.push(':');
    }

    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        push_json_str(self.out, v);
    }

    /// A value written verbatim (numbers, literals, pre-rendered JSON).
    pub fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.push_str(v);
    }

    pub fn bool(&mut self, k: &str, v: bool) {
        self.raw(k, if v { "true" } else { "false" });
    }

    pub fn obj(&mut self, k: &str, f: impl FnOnce(&mut Obj)) {
        self.key(k);
        let mut o = Obj::new(self.out);
        f(&mut o);
        o.end();
    }

    pub fn arr(&mut self, k: &str, f: impl FnOnce(&mut Arr)) {
        self.key(k);
        let mut a = Arr::new(self.out);
        f(&mut a);
        a.end();
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

/// Writes one JSON array.
pub struct Arr<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Arr<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('[');
        Arr { out, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
    }

    pub fn obj(&mut self, f: impl FnOnce(&mut Obj)) {
        self.sep();
        let mut o = Obj::new(self.out);
        f(&mut o);
        o.end();
    }

    pub fn raw(&mut self, v: &str) {
        self.sep();
        self.out.push_str(v);
    }

    pub fn end(self) {
        self.out.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested() {
        let mut s = String::new();
        let mut o = Obj::new(&mut s);
        o.str("a", "x\"y");
        o.raw("n", "12.30");
        o.arr("l", |a| {
            a.obj(|o| o.bool("t", true));
            a.raw("1");
        });
        o.obj("e", |_| {});
        o.end();
        assert_eq!(s, r#"{"a":"x\"y","n":12.30,"l":[{"t":true},1],"e":{}}"#);
    }
}
