//! Deterministic data: record metadata generated from the seed, payload JSON rendered lazily and
//! cached per record (so serving is a memcpy, and 1M invoices cost ~1.5 GB only once all are read).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use chrono::FixedOffset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::Config;
use crate::entity::{Entity, NameField};
use crate::json::Obj;
use crate::util::{local_day, money, render_date, render_ts, StableHash};

/// One record: compact metadata plus a lazily rendered payload.
#[derive(Debug)]
pub struct Rec {
    pub id: u32,
    pub sync: u32,
    /// Epoch seconds.
    pub create: i64,
    /// Epoch seconds.
    pub lut: i64,
    pub active: bool,
    pub deleted: bool,
    /// Voided (transactions): amounts render as 0 and PrivateNote as "Voided"; still live.
    pub voided: bool,
    /// Seed of the record's content.
    pub variant: u64,
    cache: OnceLock<Arc<str>>,
}

impl Rec {
    fn new(id: u32, sync: u32, create: i64, lut: i64, active: bool, variant: u64) -> Self {
        Rec {
            id,
            sync,
            create,
            lut,
            active,
            deleted: false,
            voided: false,
            variant,
            cache: OnceLock::new(),
        }
    }

    /// Forgets the cached payload (after a mutation).
    pub fn invalidate(&mut self) {
        self.cache = OnceLock::new();
    }

    /// Company-local TxnDate, as days since the epoch (a few days before creation).
    pub fn txn_day(&self, offset: &FixedOffset) -> i64 {
        local_day(self.create, offset) - (self.variant % 4) as i64
    }
}

/// All records of one entity in one realm.
#[derive(Debug)]
pub struct Table {
    pub entity: Entity,
    /// Index `i` holds Id `i + 1`.
    pub recs: Vec<Rec>,
    /// `(LastUpdatedTime, Id)` of every record, sorted.
    pub by_lut: Vec<(i64, u32)>,
}

impl Table {
    pub fn get(&self, id: u32) -> Option<&Rec> {
        self.recs.get((id as usize).checked_sub(1)?)
    }

    /// Moves a record to a new LastUpdatedTime, keeping the index sorted.
    pub fn set_lut(&mut self, id: u32, lut: i64) {
        let i = (id - 1) as usize;
        let old = (self.recs[i].lut, id);
        if let Ok(p) = self.by_lut.binary_search(&old) {
            self.by_lut.remove(p);
        }
        let new = (lut, id);
        let p = self.by_lut.binary_search(&new).unwrap_or_else(|p| p);
        self.by_lut.insert(p, new);
        self.recs[i].lut = lut;
    }

    /// Appends a new record (what QuickBooks does on a create): the next Id after the highest,
    /// SyncToken 0, CreateTime = LastUpdatedTime = `at`, active, content seeded by `variant`.
    pub fn create(&mut self, at: i64, variant: u64) -> u32 {
        let id = self.recs.len() as u32 + 1;
        self.recs.push(Rec::new(id, 0, at, at, true, variant));
        let p = self.by_lut.binary_search(&(at, id)).unwrap_or_else(|p| p);
        self.by_lut.insert(p, (at, id));
        id
    }
}

/// Counts used to build references (CustomerRef etc.) between entities of one realm.
#[derive(Debug, Clone)]
pub struct RefCounts(BTreeMap<Entity, usize>);

impl RefCounts {
    fn pick(&self, e: Entity, r: u64) -> u32 {
        let n = self.0.get(&e).copied().unwrap_or(0).max(1) as u64;
        (r % n) as u32 + 1
    }
}

/// One company.
#[derive(Debug)]
pub struct Realm {
    pub id: String,
    pub tables: BTreeMap<Entity, Table>,
    pub refs: RefCounts,
    pub offset: FixedOffset,
}

impl Realm {
    pub fn table(&self, e: Entity) -> &Table {
        &self.tables[&e]
    }

    /// The payload of a record, rendered once and cached.
    pub fn payload(&self, e: Entity, rec: &Rec) -> Arc<str> {
        rec.cache
            .get_or_init(|| render(e, rec, &self.refs, &self.offset).into())
            .clone()
    }
}

/// The whole dataset.
#[derive(Debug)]
pub struct Dataset {
    pub realms: BTreeMap<String, Realm>,
}

impl Dataset {
    pub fn generate(cfg: &Config) -> Self {
        let refs = RefCounts(cfg.records.clone());
        let realms = cfg
            .realms
            .iter()
            .map(|r| {
                let tables = cfg
                    .records
                    .iter()
                    .map(|(e, n)| (*e, generate_table(cfg, r, *e, *n)))
                    .collect();
                (
                    r.clone(),
                    Realm {
                        id: r.clone(),
                        tables,
                        refs: refs.clone(),
                        offset: cfg.offset,
                    },
                )
            })
            .collect();
        Dataset { realms }
    }
}

/// Size of the single-second bulk import placed in every table with more than 2000 records.
pub fn big_burst_size(n: usize) -> usize {
    if n > 2000 {
        (1001 + n / 50).min(n * 2 / 3)
    } else {
        0
    }
}

fn generate_table(cfg: &Config, realm: &str, entity: Entity, n: usize) -> Table {
    let seed = StableHash::new(cfg.seed)
        .str(realm)
        .str(entity.name())
        .finish();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let from = cfg.data_from.timestamp();
    let to = cfg.data_to.timestamp();
    let off = i64::from(cfg.offset.local_minus_utc());
    let first_day = from.div_euclid(86_400) + i64::from(from.rem_euclid(86_400) != 0);
    let last_day = (to - 1).div_euclid(86_400);
    let utc_midnight = |rng: &mut ChaCha8Rng| -> Option<i64> {
        (first_day <= last_day).then(|| rng.random_range(first_day..=last_day) * 86_400)
    };
    let local_midnight = |rng: &mut ChaCha8Rng| -> Option<i64> {
        // Local midnight of day d is d*86400 - offset (in UTC seconds).
        let lo = (from + off).div_euclid(86_400) + 1;
        let hi = (to - 1 + off).div_euclid(86_400);
        (lo <= hi).then(|| rng.random_range(lo..=hi) * 86_400 - off)
    };

    let mut luts: Vec<i64> = Vec::with_capacity(n);
    // Boundary records first, so that even small tables have them.
    if n >= 1 {
        luts.push(utc_midnight(&mut rng).unwrap_or(from));
    }
    if n >= 2 {
        luts.push(local_midnight(&mut rng).unwrap_or(from));
    }
    if n >= 3 {
        luts.push(first_day * 86_400); // the first UTC midnight of the range (usually `from`)
    }
    // The big bulk-import second (> 1000 records) when the table is large.
    let big = if cfg.no_big_burst {
        0
    } else {
        big_burst_size(n)
    };
    if big > 0 {
        let sec = rng.random_range(from..to);
        luts.extend(std::iter::repeat_n(sec, big));
    }
    // Another burst exactly on a UTC midnight (ties across a chunk boundary).
    if n >= 40 {
        let sec = utc_midnight(&mut rng).unwrap_or(from);
        let k = (n / 40).clamp(3, 200).min(n - luts.len());
        luts.extend(std::iter::repeat_n(sec, k));
    }
    let mut burst: Option<(i64, usize)> = None;
    while luts.len() < n {
        let roll: f64 = rng.random();
        let t = if roll < 0.06 {
            utc_midnight(&mut rng).unwrap_or(from)
        } else if roll < 0.12 {
            local_midnight(&mut rng).unwrap_or(from)
        } else if roll < 0.35 {
            match burst {
                Some((sec, left)) if left > 0 => {
                    burst = Some((sec, left - 1));
                    sec
                }
                _ => {
                    let sec = rng.random_range(from..to);
                    burst = Some((sec, rng.random_range(5..120)));
                    sec
                }
            }
        } else {
            rng.random_range(from..to)
        };
        luts.push(t);
    }

    // Creation times, then Ids in creation order (bulk imports get consecutive Ids).
    let mut metas: Vec<(i64, i64, u32, u64)> = luts
        .into_iter()
        .map(|lut| {
            let variant: u64 = rng.random();
            if rng.random_bool(0.55) {
                (lut, lut, 0, variant)
            } else {
                let back = rng.random_range(1..60 * 86_400);
                let create = (lut - back).max(from - 90 * 86_400);
                (create, lut, rng.random_range(1..7), variant)
            }
        })
        .collect();
    metas.sort_by_key(|m| (m.0, m.1, m.3));
    let recs: Vec<Rec> = metas
        .into_iter()
        .enumerate()
        .map(|(i, (create, lut, sync, variant))| {
            let id = i as u32 + 1;
            let active = !entity.is_name_list() || !is_inactive(cfg.seed, realm, entity, id);
            Rec::new(id, sync, create, lut, active, variant)
        })
        .collect();
    let mut by_lut: Vec<(i64, u32)> = recs.iter().map(|r| (r.lut, r.id)).collect();
    by_lut.sort_unstable();
    Table {
        entity,
        recs,
        by_lut,
    }
}

/// About 10% of name-list rows are inactive.
fn is_inactive(seed: u64, realm: &str, entity: Entity, id: u32) -> bool {
    StableHash::new(seed)
        .str(realm)
        .str(entity.name())
        .u64(u64::from(id))
        .u64(7)
        .finish()
        .is_multiple_of(10)
}

// ---------------------------------------------------------------------------------------------
// Names

const CUSTOMERS: &[&str] = &[
    "Amy's Bird Sanctuary",
    "Bill's Windsurf Shop",
    "Cool Cars",
    "Café Zoë ✓",
    "Diego Rodriguez",
    "Dukes Basketball Camp",
    "Müller & Söhne GmbH",
    "株式会社テスト",
    "Geeta Kalapatapu",
    "Jeff's Jalopies",
    "John Melton",
    "Kookies by Kathy",
    "O'Brien \"Quoted\" Ltd",
    "Paulsen Medical Supplies",
    "Rondonuwu Fruit and Vegi",
    "Shara Barnett",
    "Sushi by Katsuyuki",
    "Travis Waldron",
    "Video Games by Dan",
    "Wedding Planning by Whitney",
    "Weiskopf Consulting",
];
const VENDORS: &[&str] = &[
    "Bob's Burger Joint",
    "Brosnahan Insurance Agency",
    "Cal Telephone",
    "Chin's Gas and Oil",
    "Cigna Health Care",
    "Computers by Jenni",
    "Diego's Road Warrior Bodyshop",
    "EDD",
    "Ellis Equipment Rental",
    "Hall Properties",
    "Hicks Hardware",
    "Lee Advertising",
    "Mahoney Mugs",
    "Norton Lumber and Building Materials",
    "PG&E",
    "Robertson & Associates",
    "Squeaky Kleen Car Wash",
    "Tania's Nursery",
    "Zoë's Café Supplies ✓",
];
const GIVEN: &[&str] = &[
    "Emily", "John", "Zoë", "José", "Łukasz", "Aiko", "Priya", "Omar",
];
const FAMILY: &[&str] = &[
    "Platt", "Johnson", "Dvořák", "García", "Nowak", "Tanaka", "Patel", "Haddad",
];
const ITEMS: &[&str] = &[
    "Services",
    "Design",
    "Gardening",
    "Hours",
    "Installation",
    "Lighting",
    "Maintenance & Repair",
    "Pest Control",
    "Pump",
    "Rock Fountain",
    "Rocks",
    "Sod",
    "Sprinkler Heads",
    "Sprinkler Pipes",
    "Trimming",
    "Crème brûlée ✓",
];
/// (Name, AccountType, AccountSubType, Classification)
const ACCOUNTS: &[(&str, &str, &str, &str)] = &[
    ("Checking", "Bank", "Checking", "Asset"),
    ("Savings", "Bank", "Savings", "Asset"),
    (
        "Undeposited Funds",
        "Other Current Asset",
        "UndepositedFunds",
        "Asset",
    ),
    (
        "Accounts Receivable (A/R)",
        "Accounts Receivable",
        "AccountsReceivable",
        "Asset",
    ),
    (
        "Accounts Payable (A/P)",
        "Accounts Payable",
        "AccountsPayable",
        "Liability",
    ),
    ("Services", "Income", "ServiceFeeIncome", "Revenue"),
    (
        "Sales of Product Income",
        "Income",
        "SalesOfProductIncome",
        "Revenue",
    ),
    (
        "Advertising",
        "Expense",
        "AdvertisingPromotional",
        "Expense",
    ),
    ("Automobile", "Expense", "Auto", "Expense"),
    ("Utilities", "Expense", "Utilities", "Expense"),
    (
        "Office Expenses",
        "Expense",
        "OfficeGeneralAdministrativeExpenses",
        "Expense",
    ),
    ("Mastercard", "Credit Card", "CreditCard", "Liability"),
];
const CLASSES: &[&str] = &[
    "Landscaping",
    "Design",
    "Maintenance",
    "Retail",
    "Wholesale",
    "Nord/Süd",
];
const DEPARTMENTS: &[&str] = &["Headquarters", "East", "West", "North", "South", "Montréal"];
const TERMS: &[(&str, i64)] = &[
    ("Due on receipt", 0),
    ("Net 10", 10),
    ("Net 15", 15),
    ("Net 30", 30),
    ("Net 60", 60),
];
const TAX_CODES: &[&str] = &["TAX", "NON", "California", "Tucson", "Zone A", "Zone B"];
const PAYMENT_METHODS: &[(&str, &str)] = &[
    ("Cash", "NON_CREDIT_CARD"),
    ("Check", "NON_CREDIT_CARD"),
    ("Visa", "CREDIT_CARD"),
    ("MasterCard", "CREDIT_CARD"),
    ("American Express", "CREDIT_CARD"),
    ("Discover", "CREDIT_CARD"),
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Bayshore", "CA", "94326"),
    ("Half Moon Bay", "CA", "94213"),
    ("Middlefield", "CA", "94303"),
    ("San Jose", "CA", "95123"),
    ("Tucson", "AZ", "85719"),
    ("Sunnyvale", "CA", "94086"),
];
const STREETS: &[&str] = &[
    "Finch St.",
    "Ocean Dr.",
    "Main St.",
    "Rue de l'Église",
    "Elm Ave.",
    "Boise Ave",
];
const MEMOS: &[&str] = &[
    "Thank you for your business and have a great day!",
    "Merci beaucoup — à bientôt ✓",
    "Payment due on receipt.",
    "Danke für Ihren Auftrag.",
];

fn listed(list_len: usize, base: &str, id: u32) -> String {
    if id as usize <= list_len {
        base.to_string()
    } else {
        format!("{base} {id}")
    }
}

fn pick<T: Copy>(list: &[T], id: u32) -> T {
    list[(id as usize - 1) % list.len()]
}

/// The DisplayName or Name of a name-list record (deterministic from entity and Id).
pub fn name_of(e: Entity, id: u32) -> String {
    let id = id.max(1);
    match e {
        Entity::Customer => listed(CUSTOMERS.len(), pick(CUSTOMERS, id), id),
        Entity::Vendor => listed(VENDORS.len(), pick(VENDORS, id), id),
        Entity::Employee => {
            let i = (id as usize - 1) % (GIVEN.len() * FAMILY.len());
            let base = format!("{} {}", GIVEN[i % GIVEN.len()], FAMILY[i / GIVEN.len()]);
            listed(GIVEN.len() * FAMILY.len(), &base, id)
        }
        Entity::Item => listed(ITEMS.len(), pick(ITEMS, id), id),
        Entity::Account => listed(ACCOUNTS.len(), pick(ACCOUNTS, id).0, id),
        Entity::Class => listed(CLASSES.len(), pick(CLASSES, id), id),
        Entity::Department => listed(DEPARTMENTS.len(), pick(DEPARTMENTS, id), id),
        Entity::Term => listed(TERMS.len(), pick(TERMS, id).0, id),
        Entity::TaxCode => listed(TAX_CODES.len(), pick(TAX_CODES, id), id),
        Entity::PaymentMethod => listed(PAYMENT_METHODS.len(), pick(PAYMENT_METHODS, id).0, id),
        _ => String::new(),
    }
}

/// The name a query compares for `DisplayName`/`Name`.
pub fn query_name(e: Entity, id: u32) -> Option<String> {
    (e.name_field() != NameField::None).then(|| name_of(e, id))
}

// ---------------------------------------------------------------------------------------------
// Rendering

struct Ctx<'a> {
    rec: &'a Rec,
    refs: &'a RefCounts,
    off: &'a FixedOffset,
    rng: ChaCha8Rng,
}

/// An amount as a voided transaction or a live one shows it: a voided one has every amount 0,
/// rendered `0` as in the recording of a voided invoice (`qbo_api/vcr/void/invoice__1.json`).
fn amt(voided: bool, cents: i64) -> String {
    if voided {
        "0".to_string()
    } else {
        money(cents)
    }
}

impl Ctx<'_> {
    fn r(&mut self) -> u64 {
        self.rng.random()
    }
    fn reference(&mut self, o: &mut Obj, key: &str, e: Entity) {
        let id = self.refs.pick(e, self.r());
        o.obj(key, |o| {
            o.str("value", &id.to_string());
            o.str("name", &name_of(e, id));
        });
    }
}

fn header(o: &mut Obj, rec: &Rec, off: &FixedOffset) {
    o.str("domain", "QBO");
    o.bool("sparse", false);
    o.str("Id", &rec.id.to_string());
    o.str("SyncToken", &rec.sync.to_string());
    o.obj("MetaData", |m| {
        m.str("CreateTime", &render_ts(rec.create, off));
        m.str("LastUpdatedTime", &render_ts(rec.lut, off));
    });
}

fn address(o: &mut Obj, key: &str, addr_id: u64, r: u64) {
    let (city, st, zip) = CITIES[(r % CITIES.len() as u64) as usize];
    let street = STREETS[((r >> 8) % STREETS.len() as u64) as usize];
    o.obj(key, |a| {
        a.str("Id", &addr_id.to_string());
        a.str("Line1", &format!("{} {street}", 10 + (r >> 16) % 9000));
        a.str("City", city);
        a.str("CountrySubDivisionCode", st);
        a.str("PostalCode", zip);
        a.str("Lat", "INVALID");
        a.str("Long", "INVALID");
    });
}

/// Renders the payload JSON of one record.
pub fn render(e: Entity, rec: &Rec, refs: &RefCounts, off: &FixedOffset) -> String {
    let mut out = String::with_capacity(1600);
    let mut c = Ctx {
        rec,
        refs,
        off,
        rng: ChaCha8Rng::seed_from_u64(rec.variant),
    };
    let mut o = Obj::new(&mut out);
    match e {
        Entity::Invoice | Entity::Estimate | Entity::SalesReceipt | Entity::CreditMemo => {
            sales_txn(&mut o, e, &mut c)
        }
        Entity::Bill | Entity::Purchase => expense_txn(&mut o, e, &mut c),
        Entity::Payment => payment(&mut o, &mut c),
        Entity::JournalEntry => journal_entry(&mut o, &mut c),
        Entity::Customer | Entity::Vendor => party(&mut o, e, &mut c),
        Entity::Employee => employee(&mut o, &mut c),
        Entity::TimeActivity => time_activity(&mut o, &mut c),
        _ => simple_list(&mut o, e, &mut c),
    }
    o.end();
    out
}

fn private_note(o: &mut Obj, rec: &Rec) {
    if rec.voided {
        // what QuickBooks writes into a voided transaction (qbo_api/vcr/void/invoice__1.json)
        o.str("PrivateNote", "Voided");
    } else if rec.sync > 0 {
        o.str("PrivateNote", &format!("Revision {} — edited", rec.sync));
    }
}

fn sales_txn(o: &mut Obj, e: Entity, c: &mut Ctx) {
    let rec = c.rec;
    let v = rec.voided;
    if e == Entity::Invoice {
        o.bool("AllowIPNPayment", false);
        o.bool("AllowOnlinePayment", false);
        o.bool("AllowOnlineCreditCardPayment", false);
        o.bool("AllowOnlineACHPayment", false);
    }
    header(o, rec, c.off);
    let crew = c.r() % 40;
    o.arr("CustomField", |a| {
        a.obj(|f| {
            f.str("DefinitionId", "1");
            f.str("Name", "Crew #");
            f.str("Type", "StringType");
            f.str("StringValue", &format!("{crew}"));
        })
    });
    o.str("DocNumber", &format!("{}", 1000 + rec.id));
    let txn_day = rec.txn_day(c.off);
    o.str(
        "TxnDate",
        &render_date(txn_day * 86_400, &FixedOffset::east_opt(0).unwrap()),
    );
    o.obj("CurrencyRef", |r| {
        r.str("value", "USD");
        r.str("name", "United States Dollar");
    });
    private_note(o, rec);
    o.arr("LinkedTxn", |_| {});
    let nlines = 1 + (c.r() % 3) as u32;
    let mut subtotal = 0i64;
    let mut taxable = 0i64;
    let lines: Vec<(u32, String, i64, i64, bool, String)> = (0..nlines)
        .map(|i| {
            let item = c.refs.pick(Entity::Item, c.r());
            let (unit, qty) = if i == 0 && rec.id % 10 == 3 {
                (1230, 1)
            } else {
                ((c.r() % 40_000) as i64 + 50, (c.r() % 8) as i64 + 1)
            };
            let tax = c.r().is_multiple_of(3);
            (
                item,
                name_of(Entity::Item, item),
                unit,
                qty,
                tax,
                String::new(),
            )
        })
        .collect();
    o.arr("Line", |a| {
        for (i, (item, item_name, unit, qty, tax, _)) in lines.iter().enumerate() {
            let amount = unit * qty;
            subtotal += amount;
            if *tax {
                taxable += amount;
            }
            a.obj(|l| {
                l.str("Id", &(i + 1).to_string());
                l.raw("LineNum", &(i + 1).to_string());
                l.str("Description", &format!("{item_name} — line {}", i + 1));
                l.raw("Amount", &amt(v, amount));
                l.str("DetailType", "SalesItemLineDetail");
                l.obj("SalesItemLineDetail", |d| {
                    d.obj("ItemRef", |r| {
                        r.str("value", &item.to_string());
                        r.str("name", item_name);
                    });
                    // a voided line keeps its item and tax code only (as recorded)
                    if !v {
                        d.raw("UnitPrice", &money(*unit));
                        d.raw("Qty", &qty.to_string());
                    }
                    d.obj("TaxCodeRef", |r| {
                        r.str("value", if *tax { "TAX" } else { "NON" })
                    });
                });
            });
        }
        a.obj(|l| {
            l.raw("Amount", &amt(v, subtotal));
            l.str("DetailType", "SubTotalLineDetail");
            l.obj("SubTotalLineDetail", |_| {});
        });
    });
    let tax = taxable * 8 / 100;
    let total = subtotal + tax;
    o.obj("TxnTaxDetail", |t| t.raw("TotalTax", &amt(v, tax)));
    c.reference(o, "CustomerRef", Entity::Customer);
    o.obj("CustomerMemo", |m| {
        m.str("value", MEMOS[(c.rec.variant % 4) as usize])
    });
    let r1 = c.r();
    address(o, "BillAddr", r1 % 500 + 2, r1);
    let r2 = c.r();
    address(o, "ShipAddr", r2 % 500 + 2, r2);
    if e == Entity::Invoice {
        c.reference(o, "SalesTermRef", Entity::Term);
        o.str(
            "DueDate",
            &render_date((txn_day + 30) * 86_400, &FixedOffset::east_opt(0).unwrap()),
        );
    }
    if e == Entity::Estimate {
        o.str(
            "TxnStatus",
            ["Pending", "Accepted", "Closed"][(c.r() % 3) as usize],
        );
    }
    o.raw("TotalAmt", &amt(v, total));
    o.bool("ApplyTaxAfterDiscount", false);
    o.str("PrintStatus", "NeedToPrint");
    o.str("EmailStatus", "NotSet");
    o.obj("BillEmail", |m| {
        m.str("Address", &format!("billing{}@example.com", c.rec.id))
    });
    match e {
        Entity::Invoice => {
            let paid = c.r().is_multiple_of(3);
            o.raw("Balance", &amt(v, if paid { 0 } else { total }));
        }
        Entity::SalesReceipt => {
            o.raw("Balance", "0");
            c.reference(o, "PaymentMethodRef", Entity::PaymentMethod);
            c.reference(o, "DepositToAccountRef", Entity::Account);
        }
        Entity::CreditMemo => {
            o.raw("RemainingCredit", &amt(v, total));
            o.raw("Balance", &amt(v, total));
        }
        _ => {}
    }
}

fn expense_txn(o: &mut Obj, e: Entity, c: &mut Ctx) {
    let rec = c.rec;
    let v = rec.voided;
    header(o, rec, c.off);
    o.str(
        "DocNumber",
        &format!("{}-{}", if e == Entity::Bill { "B" } else { "P" }, rec.id),
    );
    let txn_day = rec.txn_day(c.off);
    let utc = FixedOffset::east_opt(0).unwrap();
    o.str("TxnDate", &render_date(txn_day * 86_400, &utc));
    o.obj("CurrencyRef", |r| {
        r.str("value", "USD");
        r.str("name", "United States Dollar");
    });
    private_note(o, rec);
    let n = 1 + (c.r() % 3) as usize;
    let amounts: Vec<i64> = (0..n)
        .map(|i| {
            if i == 0 && rec.id % 10 == 3 {
                1230
            } else {
                (c.r() % 90_000) as i64 + 10
            }
        })
        .collect();
    let accts: Vec<u32> = (0..n)
        .map(|_| c.refs.pick(Entity::Account, c.r()))
        .collect();
    o.arr("Line", |a| {
        for (i, (cents, acct)) in amounts.iter().zip(&accts).enumerate() {
            a.obj(|l| {
                l.str("Id", &(i + 1).to_string());
                l.str("Description", &format!("Expense line {} ✓", i + 1));
                l.raw("Amount", &amt(v, *cents));
                l.str("DetailType", "AccountBasedExpenseLineDetail");
                l.obj("AccountBasedExpenseLineDetail", |d| {
                    d.obj("AccountRef", |r| {
                        r.str("value", &acct.to_string());
                        r.str("name", &name_of(Entity::Account, *acct));
                    });
                    d.str("BillableStatus", "NotBillable");
                    d.obj("TaxCodeRef", |r| r.str("value", "NON"));
                });
            });
        }
    });
    let total: i64 = amounts.iter().sum();
    if e == Entity::Bill {
        c.reference(o, "VendorRef", Entity::Vendor);
        o.obj("APAccountRef", |r| {
            r.str("value", "5");
            r.str("name", "Accounts Payable (A/P)");
        });
        c.reference(o, "SalesTermRef", Entity::Term);
        o.str("DueDate", &render_date((txn_day + 30) * 86_400, &utc));
        o.raw("TotalAmt", &amt(v, total));
        o.raw(
            "Balance",
            &amt(v, if c.r().is_multiple_of(2) { total } else { 0 }),
        );
    } else {
        c.reference(o, "AccountRef", Entity::Account);
        o.str(
            "PaymentType",
            ["Cash", "Check", "CreditCard"][(c.r() % 3) as usize],
        );
        let vendor = c.refs.pick(Entity::Vendor, c.r());
        o.obj("EntityRef", |r| {
            r.str("value", &vendor.to_string());
            r.str("name", &name_of(Entity::Vendor, vendor));
            r.str("type", "Vendor");
        });
        o.bool("Credit", false);
        o.raw("TotalAmt", &amt(v, total));
        o.obj("PurchaseEx", |x| {
            x.arr("any", |a| {
                a.obj(|i| {
                    i.str("name", "{http://schema.intuit.com/finance/v3}NameValue");
                    i.str("declaredType", "com.intuit.schema.finance.v3.NameValue");
                    i.str("scope", "javax.xml.bind.JAXBElement$GlobalScope");
                    i.obj("value", |v| {
                        v.str("Name", "TxnType");
                        v.str("Value", "54");
                    });
                    i.bool("nil", false);
                    i.bool("globalScope", true);
                    i.bool("typeSubstituted", false);
                })
            })
        });
    }
}

fn payment(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    header(o, rec, c.off);
    let utc = FixedOffset::east_opt(0).unwrap();
    o.str("TxnDate", &render_date(rec.txn_day(c.off) * 86_400, &utc));
    o.obj("CurrencyRef", |r| {
        r.str("value", "USD");
        r.str("name", "United States Dollar");
    });
    private_note(o, rec);
    let cents = if rec.id % 10 == 3 {
        1230
    } else {
        (c.r() % 200_000) as i64 + 100
    };
    let inv = 1 + c.r() % 500;
    o.arr("Line", |a| {
        a.obj(|l| {
            l.raw("Amount", &amt(rec.voided, cents));
            l.arr("LinkedTxn", |a| {
                a.obj(|t| {
                    t.str("TxnId", &inv.to_string());
                    t.str("TxnType", "Invoice");
                })
            });
        })
    });
    c.reference(o, "CustomerRef", Entity::Customer);
    c.reference(o, "DepositToAccountRef", Entity::Account);
    c.reference(o, "PaymentMethodRef", Entity::PaymentMethod);
    o.str("PaymentRefNum", &format!("{}", 10_000 + c.r() % 90_000));
    o.raw("TotalAmt", &amt(rec.voided, cents));
    o.raw("UnappliedAmt", "0");
    o.bool("ProcessPayment", false);
}

fn journal_entry(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    header(o, rec, c.off);
    o.str("DocNumber", &format!("JE-{}", rec.id));
    let utc = FixedOffset::east_opt(0).unwrap();
    o.str("TxnDate", &render_date(rec.txn_day(c.off) * 86_400, &utc));
    o.obj("CurrencyRef", |r| {
        r.str("value", "USD");
        r.str("name", "United States Dollar");
    });
    private_note(o, rec);
    let cents = if rec.id % 10 == 3 {
        1230
    } else {
        (c.r() % 500_000) as i64 + 1
    };
    let a1 = c.refs.pick(Entity::Account, c.r());
    let a2 = c.refs.pick(Entity::Account, c.r());
    o.arr("Line", |a| {
        for (i, (posting, acct)) in [("Debit", a1), ("Credit", a2)].iter().enumerate() {
            a.obj(|l| {
                l.str("Id", &i.to_string());
                l.str("Description", "Écriture de régularisation");
                l.raw("Amount", &amt(rec.voided, cents));
                l.str("DetailType", "JournalEntryLineDetail");
                l.obj("JournalEntryLineDetail", |d| {
                    d.str("PostingType", posting);
                    d.obj("AccountRef", |r| {
                        r.str("value", &acct.to_string());
                        r.str("name", &name_of(Entity::Account, *acct));
                    });
                });
            });
        }
    });
    o.bool("Adjustment", false);
    o.raw("TotalAmt", &amt(rec.voided, cents));
}

/// A TimeActivity, shaped as Intuit's (quickbooks-ruby `time_activities.xml`, the JSON answer
/// quoted in minimul/qbo_api#16): what was done, by whom (an employee or a vendor), for which
/// customer, how long and at what rate; the common header last, as in that JSON.
fn time_activity(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    let utc = FixedOffset::east_opt(0).unwrap();
    o.str("TxnDate", &render_date(rec.txn_day(c.off) * 86_400, &utc));
    let by_vendor = c.r().is_multiple_of(5);
    if by_vendor {
        o.str("NameOf", "Vendor");
        c.reference(o, "VendorRef", Entity::Vendor);
    } else {
        o.str("NameOf", "Employee");
        c.reference(o, "EmployeeRef", Entity::Employee);
    }
    let billable = c.r() % 3;
    if billable > 0 {
        c.reference(o, "CustomerRef", Entity::Customer);
    }
    c.reference(o, "ItemRef", Entity::Item);
    o.str(
        "BillableStatus",
        ["NotBillable", "Billable", "HasBeenBilled"][billable as usize],
    );
    o.bool("Taxable", false);
    // whole dollars or halves, as Intuit renders a plain number: 115, 37.5
    let rate = if rec.id % 10 == 3 {
        "12.5".to_string()
    } else {
        let halves = 30 + c.r() % 300;
        if halves.is_multiple_of(2) {
            (halves / 2).to_string()
        } else {
            format!("{}.5", halves / 2)
        }
    };
    o.raw("HourlyRate", &rate);
    o.raw("Hours", &(c.r() % 9).to_string());
    o.raw("Minutes", &(15 * (c.r() % 4)).to_string());
    let what = [
        "Site visit",
        "Design review",
        "Installation",
        "Réunion client ✓",
    ][(rec.variant % 4) as usize];
    if rec.sync > 0 {
        o.str("Description", &format!("{what} (revision {})", rec.sync));
    } else {
        o.str("Description", what);
    }
    header(o, rec, c.off);
}

fn party(o: &mut Obj, e: Entity, c: &mut Ctx) {
    let rec = c.rec;
    let name = name_of(e, rec.id);
    if e == Entity::Customer {
        o.bool("Taxable", c.r().is_multiple_of(2));
    }
    let r1 = c.r();
    address(o, "BillAddr", r1 % 500 + 2, r1);
    if e == Entity::Customer {
        address(o, "ShipAddr", r1 % 500 + 2, r1);
        o.bool("Job", false);
        o.bool("BillWithParent", false);
    }
    let bal = if rec.id % 10 == 3 {
        1230
    } else {
        (c.r() % 300_000) as i64
    };
    o.raw("Balance", &money(bal));
    if e == Entity::Customer {
        o.raw("BalanceWithJobs", &money(bal));
        o.str("PreferredDeliveryMethod", "Print");
    } else {
        o.bool("Vendor1099", c.r().is_multiple_of(5));
    }
    o.obj("CurrencyRef", |r| {
        r.str("value", "USD");
        r.str("name", "United States Dollar");
    });
    header(o, rec, c.off);
    let gi = (c.r() % GIVEN.len() as u64) as usize;
    o.str("GivenName", GIVEN[gi]);
    o.str("FamilyName", FAMILY[(c.r() % FAMILY.len() as u64) as usize]);
    if e == Entity::Customer {
        o.str("FullyQualifiedName", &name);
    }
    o.str("CompanyName", &name);
    o.str("DisplayName", &name);
    o.str("PrintOnCheckName", &name);
    o.bool("Active", rec.active);
    if rec.sync > 0 {
        o.str("Notes", &format!("Revision {}", rec.sync));
    }
    o.obj("PrimaryPhone", |p| {
        p.str(
            "FreeFormNumber",
            &format!("(650) 555-{:04}", c.rec.id % 10_000),
        )
    });
    o.obj("PrimaryEmailAddr", |p| {
        p.str("Address", &format!("contact{}@example.com", c.rec.id))
    });
}

fn employee(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    let name = name_of(Entity::Employee, rec.id);
    let (given, family) = name.split_once(' ').unwrap_or((&name, ""));
    o.bool("BillableTime", false);
    header(o, rec, c.off);
    o.str("GivenName", given);
    o.str("FamilyName", family);
    o.str("DisplayName", &name);
    o.str("PrintOnCheckName", &name);
    o.bool("Active", rec.active);
    o.str("EmployeeNumber", &format!("E{:05}", rec.id));
    let r = c.r();
    address(o, "PrimaryAddr", r % 500 + 2, r);
    o.obj("PrimaryPhone", |p| {
        p.str("FreeFormNumber", "(540) 555-9645")
    });
    o.str("HiredDate", &render_date(rec.create, c.off));
}

fn simple_list(o: &mut Obj, e: Entity, c: &mut Ctx) {
    let rec = c.rec;
    let name = name_of(e, rec.id);
    o.str("Name", &name);
    match e {
        Entity::Item => {
            o.str("Description", &format!("{name} — standard"));
            o.bool("Active", rec.active);
            o.str("FullyQualifiedName", &name);
            o.bool("Taxable", c.r().is_multiple_of(2));
            let price = if rec.id % 10 == 3 {
                1230
            } else {
                (c.r() % 50_000) as i64
            };
            o.raw("UnitPrice", &money(price));
            o.str(
                "Type",
                ["Service", "NonInventory", "Inventory"][(c.r() % 3) as usize],
            );
            c.reference(o, "IncomeAccountRef", Entity::Account);
            o.raw("PurchaseCost", "0");
            o.bool("TrackQtyOnHand", false);
        }
        Entity::Account => {
            let (_, ty, sub, class) = pick(ACCOUNTS, rec.id);
            o.bool("SubAccount", false);
            o.str("FullyQualifiedName", &name);
            o.bool("Active", rec.active);
            o.str("Classification", class);
            o.str("AccountType", ty);
            o.str("AccountSubType", sub);
            let bal = if rec.id % 10 == 3 {
                1230
            } else {
                (c.r() % 1_000_000) as i64
            };
            o.raw("CurrentBalance", &money(bal));
            o.raw("CurrentBalanceWithSubAccounts", &money(bal));
            o.obj("CurrencyRef", |r| {
                r.str("value", "USD");
                r.str("name", "United States Dollar");
            });
        }
        Entity::Class | Entity::Department => {
            o.bool(
                if e == Entity::Class {
                    "SubClass"
                } else {
                    "SubDepartment"
                },
                false,
            );
            o.str("FullyQualifiedName", &name);
            o.bool("Active", rec.active);
        }
        Entity::Term => {
            o.bool("Active", rec.active);
            o.str("Type", "STANDARD");
            o.raw("DueDays", &pick(TERMS, rec.id).1.to_string());
        }
        Entity::TaxCode => {
            o.str("Description", &format!("{name} tax code"));
            o.bool("Active", rec.active);
            o.bool("Hidden", false);
            o.bool("Taxable", rec.id % 2 == 1);
            o.bool("TaxGroup", false);
            o.obj("SalesTaxRateList", |l| l.arr("TaxRateDetail", |_| {}));
            o.obj("PurchaseTaxRateList", |l| l.arr("TaxRateDetail", |_| {}));
        }
        Entity::PaymentMethod => {
            o.bool("Active", rec.active);
            o.str("Type", pick(PAYMENT_METHODS, rec.id).1);
        }
        _ => {}
    }
    header(o, rec, c.off);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(args: &[&str]) -> Config {
        Config::from_args(args.iter().copied()).unwrap()
    }

    #[test]
    fn deterministic_across_runs() {
        let c = cfg(&[]);
        let a = Dataset::generate(&c);
        let b = Dataset::generate(&c);
        for (realm, ra) in &a.realms {
            let rb = &b.realms[realm];
            for (e, ta) in &ra.tables {
                let tb = &rb.tables[e];
                assert_eq!(ta.recs.len(), tb.recs.len());
                for (x, y) in ta.recs.iter().zip(&tb.recs) {
                    assert_eq!(
                        (x.id, x.sync, x.create, x.lut, x.active),
                        (y.id, y.sync, y.create, y.lut, y.active)
                    );
                    assert_eq!(ra.payload(*e, x), rb.payload(*e, y));
                }
            }
        }
        // A different seed gives different data.
        let d = Dataset::generate(&cfg(&["--seed", "7"]));
        let r = &c.realms[0];
        let x: Vec<i64> = a.realms[r]
            .table(Entity::Invoice)
            .recs
            .iter()
            .map(|r| r.lut)
            .collect();
        let y: Vec<i64> = d.realms[r]
            .table(Entity::Invoice)
            .recs
            .iter()
            .map(|r| r.lut)
            .collect();
        assert_ne!(x, y);
    }

    #[test]
    fn defaults_and_shapes() {
        let c = cfg(&[]);
        let d = Dataset::generate(&c);
        assert_eq!(d.realms.len(), 2);
        let realm = &d.realms["9341452000000001"];
        assert_eq!(realm.table(Entity::Invoice).recs.len(), 600);
        assert_eq!(realm.table(Entity::Bill).recs.len(), 250);
        assert_eq!(realm.table(Entity::Customer).recs.len(), 60);
        let from = c.data_from.timestamp();
        let to = c.data_to.timestamp();
        for (e, t) in &realm.tables {
            for r in &t.recs {
                assert!(r.lut >= from && r.lut < to, "{e} {} lut out of range", r.id);
                assert!(r.create <= r.lut);
                let p = realm.payload(*e, r);
                let v: serde_json::Value =
                    serde_json::from_str(&p).unwrap_or_else(|err| panic!("{e}: {err}: {p}"));
                assert_eq!(v["Id"], r.id.to_string());
                assert_eq!(
                    v["MetaData"]["LastUpdatedTime"],
                    render_ts(r.lut, &c.offset)
                );
                assert!(v["MetaData"]["LastUpdatedTime"]
                    .as_str()
                    .unwrap()
                    .ends_with("-07:00"));
            }
            if e.is_name_list() {
                let inactive = t.recs.iter().filter(|r| !r.active).count();
                assert!(
                    inactive > 0 && inactive < t.recs.len() / 3,
                    "{e}: {inactive} inactive"
                );
            }
        }
        // Literal decimals and unicode text.
        let inv = realm.table(Entity::Invoice);
        let all: String = inv
            .recs
            .iter()
            .map(|r| realm.payload(Entity::Invoice, r).to_string())
            .collect();
        assert!(all.contains("\"Amount\":12.30"));
        let cust = realm.table(Entity::Customer);
        let all: String = cust
            .recs
            .iter()
            .map(|r| realm.payload(Entity::Customer, r).to_string())
            .collect();
        assert!(all.contains("Café Zoë ✓"));
        let avg = inv
            .recs
            .iter()
            .map(|r| realm.payload(Entity::Invoice, r).len())
            .sum::<usize>()
            / inv.recs.len();
        assert!((900..2200).contains(&avg), "average invoice size {avg}");
    }

    #[test]
    fn boundary_timestamps_present() {
        let c = cfg(&[]);
        let d = Dataset::generate(&c);
        let off = i64::from(c.offset.local_minus_utc());
        for realm in d.realms.values() {
            for (e, t) in &realm.tables {
                let utc_mid = t.recs.iter().filter(|r| r.lut % 86_400 == 0).count();
                let local_mid = t
                    .recs
                    .iter()
                    .filter(|r| (r.lut + off) % 86_400 == 0)
                    .count();
                assert!(utc_mid >= 1, "{e}: no record on a UTC midnight");
                assert!(local_mid >= 1, "{e}: no record on a local midnight");
                // Many records share one second.
                let mut by_sec: HashMap<i64, usize> = HashMap::new();
                for r in &t.recs {
                    *by_sec.entry(r.lut).or_default() += 1;
                }
                assert!(
                    *by_sec.values().max().unwrap() >= 3,
                    "{e}: no shared seconds"
                );
            }
        }
    }

    #[test]
    fn big_tables_have_a_second_with_more_than_1000_records() {
        let c = cfg(&["--records", "Invoice=2500", "--realm", "1"]);
        let d = Dataset::generate(&c);
        let t = d.realms["1"].table(Entity::Invoice);
        let mut by_sec: HashMap<i64, usize> = HashMap::new();
        for r in &t.recs {
            *by_sec.entry(r.lut).or_default() += 1;
        }
        assert!(*by_sec.values().max().unwrap() > 1000);
        assert_eq!(big_burst_size(2000), 0);
        // --no-big-burst leaves it out (the smaller bursts stay)
        let c = cfg(&[
            "--records",
            "Invoice=2500",
            "--realm",
            "1",
            "--no-big-burst",
        ]);
        let d = Dataset::generate(&c);
        let t = d.realms["1"].table(Entity::Invoice);
        let mut by_sec: HashMap<i64, usize> = HashMap::new();
        for r in &t.recs {
            *by_sec.entry(r.lut).or_default() += 1;
        }
        assert_eq!(t.recs.len(), 2500);
        assert!(*by_sec.values().max().unwrap() < 1000);
        assert!(big_burst_size(2001) > 1000);
    }

    #[test]
    fn time_activities_have_intuits_shape() {
        let c = cfg(&["--realm", "1"]);
        let d = Dataset::generate(&c);
        let realm = &d.realms["1"];
        let t = realm.table(Entity::TimeActivity);
        assert_eq!(t.recs.len(), 60);
        let mut by = (0, 0);
        for r in &t.recs {
            let v: serde_json::Value =
                serde_json::from_str(&realm.payload(Entity::TimeActivity, r)).unwrap();
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            let who = if v["NameOf"] == "Employee" {
                by.0 += 1;
                "EmployeeRef"
            } else {
                assert_eq!(v["NameOf"], "Vendor");
                by.1 += 1;
                "VendorRef"
            };
            for k in [
                "TxnDate",
                "NameOf",
                who,
                "ItemRef",
                "BillableStatus",
                "Taxable",
                "HourlyRate",
                "Hours",
                "Minutes",
                "Description",
                "domain",
                "sparse",
                "Id",
                "SyncToken",
                "MetaData",
            ] {
                assert!(keys.contains(&k), "{k} missing in {v}");
            }
            assert!(v["HourlyRate"].is_number() && v["Hours"].is_u64() && v["Minutes"].is_u64());
            assert!(["NotBillable", "Billable", "HasBeenBilled"]
                .contains(&v["BillableStatus"].as_str().unwrap()));
            assert_eq!(
                v.get("CustomerRef").is_some(),
                v["BillableStatus"] != "NotBillable"
            );
            assert!(v.get("Active").is_none(), "a transaction has no Active");
            assert_eq!(v["Id"], r.id.to_string());
        }
        assert!(by.0 > 0 && by.1 > 0, "{by:?}");
    }

    #[test]
    fn voided_rendering_changes_amounts_only() {
        let c = cfg(&["--realm", "1"]);
        let mut d = Dataset::generate(&c);
        let realm = d.realms.get_mut("1").unwrap();
        let live: serde_json::Value = serde_json::from_str(&realm.payload(
            Entity::Invoice,
            realm.table(Entity::Invoice).get(3).unwrap(),
        ))
        .unwrap();
        {
            let r = &mut realm.tables.get_mut(&Entity::Invoice).unwrap().recs[2];
            r.voided = true;
            r.invalidate();
        }
        let text = realm.payload(
            Entity::Invoice,
            realm.table(Entity::Invoice).get(3).unwrap(),
        );
        let voided: serde_json::Value = serde_json::from_str(&text).unwrap();
        // the recorded void: every amount 0 (written `0`), PrivateNote "Voided", lines keep
        // their item and tax code but not UnitPrice or Qty
        assert!(text.contains("\"TotalAmt\":0,") && text.contains("\"PrivateNote\":\"Voided\""));
        assert_eq!(voided["Balance"], 0);
        let mut expect = live.clone();
        expect["PrivateNote"] = "Voided".into();
        expect["TotalAmt"] = 0.into();
        expect["Balance"] = 0.into();
        expect["TxnTaxDetail"]["TotalTax"] = 0.into();
        for l in expect["Line"].as_array_mut().unwrap() {
            l["Amount"] = 0.into();
            if let Some(d) = l
                .get_mut("SalesItemLineDetail")
                .and_then(|d| d.as_object_mut())
            {
                d.remove("UnitPrice");
                d.remove("Qty");
            }
        }
        let mut got = voided.clone();
        // field order aside (PrivateNote is added where a live record without edits has none)
        got.as_object_mut().unwrap().sort_keys();
        expect.as_object_mut().unwrap().sort_keys();
        assert_eq!(got, expect);
    }

    #[test]
    fn index_tracks_updates() {
        let c = cfg(&["--realm", "1"]);
        let mut d = Dataset::generate(&c);
        let t = d
            .realms
            .get_mut("1")
            .unwrap()
            .tables
            .get_mut(&Entity::Invoice)
            .unwrap();
        t.set_lut(5, 4_000_000_000);
        assert_eq!(t.by_lut.last(), Some(&(4_000_000_000, 5)));
        assert_eq!(t.by_lut.len(), t.recs.len());
        assert!(t.by_lut.windows(2).all(|w| w[0] <= w[1]));
    }
}
