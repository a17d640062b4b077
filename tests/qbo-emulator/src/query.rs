//! Parser and validator of the QBO query language subset:
//!
//! `SELECT * | count(*) FROM <Entity> [WHERE cond AND cond ...] [ORDERBY|ORDER BY field [ASC|DESC]]
//! [STARTPOSITION n] [MAXRESULTS m]`
//!
//! Syntax errors give `QueryParserError` (code 4000); semantic errors (unknown entity, field not
//! queryable, bad literal) give `QueryValidationError` (code 4001), with messages shaped like the
//! real ones.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};

use crate::entity::{Entity, NameField};

/// Largest page QBO returns; larger MAXRESULTS values are silently capped.
pub const MAX_PAGE: usize = 1000;
/// Page size when MAXRESULTS is absent.
pub const DEFAULT_PAGE: usize = 100;

/// A query error, rendered as a `ValidationFault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub code: &'static str,
    pub message: &'static str,
    pub detail: String,
}

impl QueryError {
    fn parser(detail: String) -> Self {
        QueryError {
            code: "4000",
            message: "Error parsing query",
            detail: format!("QueryParserError: {detail}"),
        }
    }
    fn validation(detail: String) -> Self {
        QueryError {
            code: "4001",
            message: "Invalid query",
            detail: format!("QueryValidationError: {detail}"),
        }
    }
}

/// A queryable property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    CreateTime,
    LastUpdatedTime,
    Id,
    Active,
    TxnDate,
    DisplayName,
    Name,
}

impl Field {
    fn parse(raw: &str) -> Option<Field> {
        let l = raw.to_ascii_lowercase();
        Some(match l.as_str() {
            "metadata.createtime" => Field::CreateTime,
            "metadata.lastupdatedtime" => Field::LastUpdatedTime,
            "id" => Field::Id,
            "active" => Field::Active,
            "txndate" => Field::TxnDate,
            "displayname" => Field::DisplayName,
            "name" => Field::Name,
            _ => return None,
        })
    }

    fn applies_to(self, e: Entity) -> bool {
        match self {
            Field::CreateTime | Field::LastUpdatedTime | Field::Id => true,
            Field::Active => e.is_name_list(),
            Field::TxnDate => e.has_txn_date(),
            Field::DisplayName => e.name_field() == NameField::DisplayName,
            Field::Name => e.name_field() == NameField::Name,
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    Like,
}

/// A typed literal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// Epoch milliseconds.
    Instant(i64),
    Int(i64),
    Bool(bool),
    /// Days since the epoch.
    Date(i64),
    Str(String),
}

/// One `field op value(s)` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub field: Field,
    pub op: Op,
    pub values: Vec<Value>,
}

/// A parsed, validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub count: bool,
    pub entity: Entity,
    pub conds: Vec<Cond>,
    pub order: Option<(Field, bool)>,
    /// 1-based.
    pub start: usize,
    /// Already capped at [`MAX_PAGE`].
    pub max: usize,
}

impl Query {
    /// True when the query filters on `Active` (so the name-list active-only rule is off).
    pub fn filters_active(&self) -> bool {
        self.conds.iter().any(|c| c.field == Field::Active)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Sym(&'static str),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) if is_reserved(s) => {
                format!("\" \"{s}\" \"{} \"\"", s.to_ascii_uppercase())
            }
            Tok::Ident(s) => format!("\" <IDENTIFIER> \"{s} \"\""),
            Tok::Str(s) => format!("\" <STRING> \"\\'{s}\\' \"\""),
            Tok::Num(s) => format!("\" <INTEGER> \"{s} \"\""),
            Tok::Sym(s) => format!("\" \"{s}\" \"{s} \"\""),
            Tok::Eof => "\"<EOF>\"".to_string(),
        }
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
}

fn tokenize(q: &str) -> Result<Vec<(Tok, usize)>, QueryError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let s = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push((Tok::Ident(chars[s..i].iter().collect()), col));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let s = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push((Tok::Num(chars[s..i].iter().collect()), col));
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(QueryError::parser(format!(
                        "Lexical error at line 1, column {}.  Encountered: <EOF> after : \"'{s}\"",
                        chars.len() + 1
                    )))
                    }
                    Some('\\') if chars.get(i + 1).is_some() => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(s), col));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match two.as_str() {
                "<=" => Some("<="),
                ">=" => Some(">="),
                "!=" => Some("!="),
                "<>" => Some("!="),
                _ => None,
            };
            if let Some(s) = sym {
                out.push((Tok::Sym(s), col));
                i += 2;
                continue;
            }
            let sym = match c {
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '*' => "*",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                _ => {
                    return Err(QueryError::parser(format!(
                        "Lexical error at line 1, column {col}.  Encountered: \"{c}\" ({}), after : \"\"",
                        c as u32
                    )))
                }
            };
            out.push((Tok::Sym(sym), col));
            i += 1;
        }
    }
    out.push((Tok::Eof, chars.len() + 1));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn unexpected(&self, expecting: &str) -> QueryError {
        let (tok, col) = &self.toks[self.pos];
        QueryError::parser(format!(
            "Encountered {} at line 1, column {col}.\nWas expecting:\n    {expecting} ...\n    ",
            tok.describe()
        ))
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.peek().is_kw(kw) {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{kw}\"")))
        }
    }
    fn expect_sym(&mut self, sym: &str) -> Result<(), QueryError> {
        if *self.peek() == Tok::Sym(leak_sym(sym)) {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{sym}\"")))
        }
    }
    fn ident(&mut self) -> Result<String, QueryError> {
        match self.peek().clone() {
            Tok::Ident(s) if !is_reserved(&s) => {
                self.next();
                Ok(s)
            }
            _ => Err(self.unexpected("<IDENTIFIER>")),
        }
    }
    fn number(&mut self) -> Result<usize, QueryError> {
        match self.peek().clone() {
            Tok::Num(s) => match s.parse::<usize>() {
                Ok(n) => {
                    self.next();
                    Ok(n)
                }
                Err(_) => Err(self.unexpected("<INTEGER>")),
            },
            _ => Err(self.unexpected("<INTEGER>")),
        }
    }
    fn literal(&mut self) -> Result<RawLit, QueryError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(RawLit::Str(s))
            }
            Tok::Num(s) => {
                self.next();
                Ok(RawLit::Num(s))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {
                self.next();
                Ok(RawLit::Bool(s.eq_ignore_ascii_case("true")))
            }
            _ => Err(self.unexpected("<STRING>")),
        }
    }
}

fn leak_sym(s: &str) -> &'static str {
    match s {
        "(" => "(",
        ")" => ")",
        "," => ",",
        "*" => "*",
        _ => "=",
    }
}

const RESERVED: [&str; 15] = [
    "select",
    "from",
    "where",
    "and",
    "or",
    "orderby",
    "order",
    "by",
    "asc",
    "desc",
    "startposition",
    "maxresults",
    "in",
    "like",
    "null",
];

fn is_reserved(s: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
}

#[derive(Debug, Clone)]
enum RawLit {
    Str(String),
    Num(String),
    Bool(bool),
}

impl RawLit {
    fn text(&self) -> String {
        match self {
            RawLit::Str(s) | RawLit::Num(s) => s.clone(),
            RawLit::Bool(b) => b.to_string(),
        }
    }
}

/// Parses and validates a query. `offset` is the company's offset (for date-only literals).
pub fn parse(q: &str, offset: &FixedOffset) -> Result<Query, QueryError> {
    let mut p = Parser {
        toks: tokenize(q)?,
        pos: 0,
    };
    p.expect_kw("select")?;
    let count = if *p.peek() == Tok::Sym("*") {
        p.next();
        false
    } else if p.peek().is_kw("count") {
        p.next();
        p.expect_sym("(")?;
        p.expect_sym("*")?;
        p.expect_sym(")")?;
        true
    } else {
        return Err(p.unexpected("\"*\""));
    };
    p.expect_kw("from")?;
    let entity_raw = p.ident()?;
    let mut raw_conds: Vec<(String, Op, Vec<RawLit>)> = Vec::new();
    if p.peek().is_kw("where") {
        p.next();
        loop {
            let field = p.ident()?;
            let op = match p.next() {
                Tok::Sym("=") => Op::Eq,
                Tok::Sym("!=") => Op::Ne,
                Tok::Sym("<") => Op::Lt,
                Tok::Sym(">") => Op::Gt,
                Tok::Sym("<=") => Op::Le,
                Tok::Sym(">=") => Op::Ge,
                t if t.is_kw("in") => Op::In,
                t if t.is_kw("like") => Op::Like,
                _ => {
                    p.pos -= 1;
                    return Err(p.unexpected("\"=\""));
                }
            };
            let mut vals = Vec::new();
            if op == Op::In {
                p.expect_sym("(")?;
                vals.push(p.literal()?);
                while *p.peek() == Tok::Sym(",") {
                    p.next();
                    vals.push(p.literal()?);
                }
                p.expect_sym(")")?;
            } else {
                vals.push(p.literal()?);
            }
            raw_conds.push((field, op, vals));
            if p.peek().is_kw("and") {
                p.next();
            } else {
                break;
            }
        }
    }
    let mut order_raw: Option<(String, bool)> = None;
    let mut start: Option<usize> = None;
    let mut max: Option<usize> = None;
    loop {
        let t = p.peek().clone();
        if (t.is_kw("orderby") || t.is_kw("order")) && order_raw.is_none() {
            p.next();
            if t.is_kw("order") {
                p.expect_kw("by")?;
            }
            let f = p.ident()?;
            let desc = if p.peek().is_kw("desc") {
                p.next();
                true
            } else {
                if p.peek().is_kw("asc") {
                    p.next();
                }
                false
            };
            order_raw = Some((f, desc));
        } else if t.is_kw("startposition") && start.is_none() {
            p.next();
            start = Some(p.number()?);
        } else if t.is_kw("maxresults") && max.is_none() {
            p.next();
            max = Some(p.number()?);
        } else if t == Tok::Eof {
            break;
        } else {
            return Err(p.unexpected("<EOF>"));
        }
    }

    // Validation.
    let entity = Entity::from_name(&entity_raw).ok_or_else(|| {
        QueryError::validation(format!("invalid context declaration: {entity_raw}"))
    })?;
    let field_of = |raw: &str| -> Result<Field, QueryError> {
        match Field::parse(raw) {
            Some(f) if f.applies_to(entity) => Ok(f),
            _ => Err(QueryError::validation(format!(
                "property '{raw}' is not queryable"
            ))),
        }
    };
    let mut conds = Vec::new();
    for (raw_field, op, lits) in raw_conds {
        let field = field_of(&raw_field)?;
        if op == Op::Like && !matches!(field, Field::DisplayName | Field::Name) {
            return Err(QueryError::validation(format!(
                "operator 'LIKE' is not supported for property '{raw_field}'"
            )));
        }
        let values = lits
            .iter()
            .map(|l| typed(field, &raw_field, l, offset))
            .collect::<Result<Vec<_>, _>>()?;
        conds.push(Cond { field, op, values });
    }
    let order = match order_raw {
        Some((f, desc)) => Some((field_of(&f)?, desc)),
        None => None,
    };
    Ok(Query {
        count,
        entity,
        conds,
        order,
        start: start.unwrap_or(1).max(1),
        max: max.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE),
    })
}

fn typed(
    field: Field,
    raw_field: &str,
    l: &RawLit,
    offset: &FixedOffset,
) -> Result<Value, QueryError> {
    let bad = || {
        QueryError::validation(format!(
            "value '{}' is not valid for property '{raw_field}'",
            l.text()
        ))
    };
    match field {
        Field::CreateTime | Field::LastUpdatedTime => match l {
            RawLit::Str(s) => parse_datetime_ms(s, offset)
                .map(Value::Instant)
                .ok_or_else(bad),
            _ => Err(bad()),
        },
        Field::Id => l
            .text()
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| bad()),
        Field::Active => match l {
            RawLit::Bool(b) => Ok(Value::Bool(*b)),
            RawLit::Str(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            RawLit::Str(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        Field::TxnDate => match l {
            RawLit::Str(s) => {
                let d = s.get(..10).unwrap_or(s);
                NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map(|d| Value::Date(i64::from(d.to_epoch_days())))
                    .map_err(|_| bad())
            }
            _ => Err(bad()),
        },
        Field::DisplayName | Field::Name => match l {
            RawLit::Str(s) => Ok(Value::Str(s.clone())),
            _ => Err(bad()),
        },
    }
}

/// Parses an ISO-8601 datetime literal with explicit offset (`Z`, `+00:00`, `-07:00`), optionally
/// with fractional seconds, to epoch milliseconds. A date-only literal means company-local
/// midnight (QBO leaves this undocumented; clients should not send one).
pub fn parse_datetime_ms(s: &str, offset: &FixedOffset) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(d.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let ndt = d.and_hms_opt(0, 0, 0)?;
        return offset
            .from_local_datetime(&ndt)
            .single()
            .map(|d| d.timestamp_millis());
    }
    None
}

/// Case-insensitive SQL LIKE with `%` wildcards only.
pub fn like(pattern: &str, s: &str) -> bool {
    let p = pattern.to_lowercase();
    let s = s.to_lowercase();
    let parts: Vec<&str> = p.split('%').collect();
    if parts.len() == 1 {
        return p == s;
    }
    let mut rest = s.as_str();
    let first = parts[0];
    if !rest.starts_with(first) {
        return false;
    }
    rest = &rest[first.len()..];
    let last = parts[parts.len() - 1];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off() -> FixedOffset {
        FixedOffset::west_opt(7 * 3600).unwrap()
    }
    fn p(q: &str) -> Result<Query, QueryError> {
        parse(q, &off())
    }

    #[test]
    fn select_star_minimal() {
        let q = p("SELECT * FROM Invoice").unwrap();
        assert!(!q.count);
        assert_eq!(q.entity, Entity::Invoice);
        assert_eq!((q.start, q.max), (1, DEFAULT_PAGE));
        assert!(q.conds.is_empty() && q.order.is_none());
    }

    #[test]
    fn count_star_any_case() {
        assert!(p("select count(*) from Vendor").unwrap().count);
        assert!(p("SELECT COUNT(*) FROM Vendor").unwrap().count);
        assert!(p("SELECT COUNT( * ) FROM Vendor").unwrap().count);
    }

    #[test]
    fn every_clause() {
        let q = p("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2025-01-01T00:00:00Z' \
                   AND Metadata.LastUpdatedTime < '2025-01-02T00:00:00-07:00' AND Id IN ('1','2', 3) \
                   ORDERBY MetaData.LastUpdatedTime DESC STARTPOSITION 11 MAXRESULTS 5")
            .unwrap();
        assert_eq!(q.conds.len(), 3);
        assert_eq!(q.conds[0].field, Field::LastUpdatedTime);
        assert_eq!(q.conds[0].op, Op::Ge);
        assert_eq!(q.conds[0].values, vec![Value::Instant(1_735_689_600_000)]);
        assert_eq!(q.conds[1].values, vec![Value::Instant(1_735_801_200_000)]);
        assert_eq!(q.conds[2].op, Op::In);
        assert_eq!(
            q.conds[2].values,
            vec![Value::Int(1), Value::Int(2), Value::Int(3)]
        );
        assert_eq!(q.order, Some((Field::LastUpdatedTime, true)));
        assert_eq!((q.start, q.max), (11, 5));
    }

    #[test]
    fn both_orderby_spellings_and_metadata_spellings() {
        let a = p("SELECT * FROM Customer ORDERBY MetaData.LastUpdatedTime").unwrap();
        let b = p("select * from Customer order by Metadata.LastUpdatedTime asc").unwrap();
        assert_eq!(a.order, Some((Field::LastUpdatedTime, false)));
        assert_eq!(a, b);
        let c = p("SELECT * FROM Customer WHERE Metadata.CreateTime > '2025-01-01T00:00:00+00:00'")
            .unwrap();
        assert_eq!(c.conds[0].field, Field::CreateTime);
    }

    #[test]
    fn pagination_in_either_order_and_capped() {
        let q = p("SELECT * FROM Vendor MAXRESULTS 5 STARTPOSITION 6").unwrap();
        assert_eq!((q.start, q.max), (6, 5));
        let q = p("SELECT * FROM Vendor STARTPOSITION 1 MAXRESULTS 5000").unwrap();
        assert_eq!(q.max, MAX_PAGE);
    }

    #[test]
    fn active_in_and_like_and_txndate() {
        let q =
            p("SELECT * FROM Customer WHERE Active IN (true, false) AND DisplayName LIKE 'Caf%'")
                .unwrap();
        assert!(q.filters_active());
        assert_eq!(
            q.conds[0].values,
            vec![Value::Bool(true), Value::Bool(false)]
        );
        assert_eq!(q.conds[1].op, Op::Like);
        let q = p("SELECT * FROM Invoice WHERE TxnDate = '2025-03-01'").unwrap();
        assert_eq!(q.conds[0].field, Field::TxnDate);
        let q = p("SELECT * FROM Item WHERE Name = 'Rocks' AND Active = false").unwrap();
        assert_eq!(q.conds[1].values, vec![Value::Bool(false)]);
    }

    #[test]
    fn datetime_literals_any_offset_same_instant() {
        let a = parse_datetime_ms("2025-01-01T07:00:00Z", &off()).unwrap();
        let b = parse_datetime_ms("2025-01-01T07:00:00+00:00", &off()).unwrap();
        let c = parse_datetime_ms("2025-01-01T00:00:00-07:00", &off()).unwrap();
        let d = parse_datetime_ms("2025-01-01T00:00:00.000-07:00", &off()).unwrap();
        assert!(a == b && b == c && c == d);
        assert_eq!(parse_datetime_ms("2025-01-01", &off()), Some(c));
        assert_eq!(parse_datetime_ms("yesterday", &off()), None);
    }

    #[test]
    fn unknown_entity_is_validation_error() {
        let e = p("SELECT * FROM Custmoer").unwrap_err();
        assert_eq!(e.code, "4001");
        assert_eq!(e.message, "Invalid query");
        assert_eq!(
            e.detail,
            "QueryValidationError: invalid context declaration: Custmoer"
        );
        // Entity names are case sensitive.
        assert_eq!(p("SELECT * FROM invoice").unwrap_err().code, "4001");
    }

    #[test]
    fn field_not_queryable_is_validation_error() {
        let e = p("SELECT * FROM Invoice WHERE Active = true").unwrap_err();
        assert_eq!(e.code, "4001");
        assert!(
            e.detail.contains("property 'Active' is not queryable"),
            "{}",
            e.detail
        );
        assert_eq!(
            p("SELECT * FROM Invoice ORDERBY Foo").unwrap_err().code,
            "4001"
        );
        assert_eq!(
            p("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > 'nope'")
                .unwrap_err()
                .code,
            "4001"
        );
        assert_eq!(
            p("SELECT * FROM Invoice WHERE Id LIKE '1%'")
                .unwrap_err()
                .code,
            "4001"
        );
    }

    #[test]
    fn bad_syntax_is_parser_error() {
        for q in [
            "SELECT * FROM null",
            "SELECT FROM Invoice",
            "SELECT * Invoice",
            "SELECT * FROM Invoice WHERE",
            "SELECT * FROM Invoice WHERE Id = '1' OR Id = '2'",
            "SELECT * FROM Invoice STARTPOSITION x",
            "SELECT * FROM Invoice MAXRESULTS -5",
            "SELECT * FROM Invoice WHERE Id IN ('1'",
            "SELECT * FROM Invoice WHERE Id = 'unterminated",
            "SELECT * FROM Invoice ORDER LastUpdatedTime",
            "SELECT Id FROM Invoice",
            "SELECT * FROM Invoice ; DROP",
            "",
        ] {
            let e = p(q).unwrap_err();
            assert_eq!(e.code, "4000", "{q}: {e:?}");
            assert_eq!(e.message, "Error parsing query");
            assert!(e.detail.starts_with("QueryParserError: "), "{}", e.detail);
        }
        let e = p("SELECT * FROM null").unwrap_err();
        assert!(e.detail.contains("at line 1, column 15"), "{}", e.detail);
        assert!(e.detail.contains("Was expecting:"), "{}", e.detail);
    }

    #[test]
    fn like_matching() {
        assert!(like("Caf%", "Café Zoë ✓ 3"));
        assert!(like("%zoë%", "Café Zoë ✓ 3"));
        assert!(like("%3", "Café Zoë ✓ 3"));
        assert!(!like("x%", "Café"));
        assert!(like("abc", "ABC"));
    }
}
