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
            .get_or_init(|| render(e, rec, &self.refs, &self.offset, &self.id).into())
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
const BUDGETS: &[&str] = &[
    "Operating Budget",
    "Marketing Plan",
    "Landscaping Division",
    "Capital Expenditures",
    "Budget prévisionnel ✓",
];
/// (Name, RateValue in percent as Intuit renders it, AgencyRef)
const TAX_RATES: &[(&str, &str, &str)] = &[
    ("California", "7.25", "1"),
    ("Santa Clara County", "0.5", "1"),
    ("Mountain View", "10", "1"),
    ("Arizona", "5.6", "2"),
    ("Tucson City", "2.6", "2"),
    ("Zürich MWST ✓", "8.1", "3"),
];
/// (file name stem, extension, ContentType) of an Attachable holding a file
const ATTACHMENTS: &[(&str, &str, &str)] = &[
    ("receipt", "pdf", "application/pdf"),
    ("site-photo", "jpg", "image/jpeg"),
    (
        "signed-contract",
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("no_detail", "xml", "text/xml"),
    ("invoice-scan", "png", "image/png"),
];
const ATTACHMENT_NOTES: &[&str] = &[
    "This is an attached note.",
    "Customer called about the delivery date.",
    "Reçu envoyé par courriel ✓",
    "Approved by the site manager.",
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
        Entity::Budget => listed(BUDGETS.len(), pick(BUDGETS, id), id),
        Entity::TaxRate => listed(TAX_RATES.len(), pick(TAX_RATES, id).0, id),
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
    /// The company's Id (in an Attachable's download URIs).
    realm: &'a str,
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
pub fn render(e: Entity, rec: &Rec, refs: &RefCounts, off: &FixedOffset, realm: &str) -> String {
    let mut out = String::with_capacity(1600);
    let mut c = Ctx {
        rec,
        refs,
        off,
        realm,
        rng: ChaCha8Rng::seed_from_u64(rec.variant),
    };
    let mut o = Obj::new(&mut out);
    match e {
        Entity::Invoice
        | Entity::Estimate
        | Entity::SalesReceipt
        | Entity::CreditMemo
        | Entity::RefundReceipt => sales_txn(&mut o, e, &mut c),
        Entity::Bill | Entity::Purchase | Entity::VendorCredit => expense_txn(&mut o, e, &mut c),
        Entity::Payment => payment(&mut o, &mut c),
        Entity::JournalEntry => journal_entry(&mut o, &mut c),
        Entity::Customer | Entity::Vendor => party(&mut o, e, &mut c),
        Entity::Employee => employee(&mut o, &mut c),
        Entity::TimeActivity => time_activity(&mut o, &mut c),
        Entity::BillPayment => bill_payment(&mut o, &mut c),
        Entity::Deposit => deposit(&mut o, &mut c),
        Entity::Transfer => transfer(&mut o, &mut c),
        Entity::PurchaseOrder => purchase_order(&mut o, &mut c),
        Entity::Attachable => attachable(&mut o, &mut c),
        Entity::Budget => budget(&mut o, &mut c),
        Entity::TaxRate => tax_rate(&mut o, &mut c),
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
    if e != Entity::RefundReceipt {
        o.str("EmailStatus", "NotSet");
    }
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
        // as quickbooks-ruby's refund_receipt.xml (no EmailStatus): paid back at once, from an
        // account
        Entity::RefundReceipt => {
            o.raw("Balance", "0");
            c.reference(o, "PaymentMethodRef", Entity::PaymentMethod);
            o.str("PaymentRefNum", "To Print");
            c.reference(o, "DepositToAccountRef", Entity::Account);
            c.reference(o, "ClassRef", Entity::Class);
            c.reference(o, "DepartmentRef", Entity::Department);
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
        &format!(
            "{}-{}",
            match e {
                Entity::Bill => "B",
                Entity::VendorCredit => "VC",
                _ => "P",
            },
            rec.id
        ),
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
    } else if e == Entity::VendorCredit {
        // as quickbooks-ruby's vendor_credit.xml, with the Balance (credit not yet applied)
        // of minor versions since
        c.reference(o, "VendorRef", Entity::Vendor);
        o.obj("APAccountRef", |r| {
            r.str("value", "5");
            r.str("name", "Accounts Payable (A/P)");
        });
        o.raw("TotalAmt", &amt(v, total));
        o.raw(
            "Balance",
            &amt(v, if c.r().is_multiple_of(3) { 0 } else { total }),
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

/// A reference to a fixed account of the chart (`ACCOUNTS`): Id `id` and its name.
fn account_ref(o: &mut Obj, key: &str, id: u32) {
    o.obj(key, |r| {
        r.str("value", &id.to_string());
        r.str("name", &name_of(Entity::Account, id));
    });
}

/// Account Ids of `ACCOUNTS` the new transactions refer to.
const CHECKING: u32 = 1;
const SAVINGS: u32 = 2;
const MASTERCARD: u32 = 12;

fn txn_date(o: &mut Obj, c: &Ctx) {
    let utc = FixedOffset::east_opt(0).unwrap();
    o.str("TxnDate", &render_date(c.rec.txn_day(c.off) * 86_400, &utc));
}

fn usd(o: &mut Obj) {
    o.obj("CurrencyRef", |r| {
        r.str("value", "USD");
        r.str("name", "United States Dollar");
    });
}

/// An amount in cents: 12.30 on every tenth record (a literal decimal to keep), else up to `max`.
fn cents(c: &mut Ctx, max: u64) -> i64 {
    if c.rec.id % 10 == 3 {
        1230
    } else {
        (c.r() % max) as i64 + 100
    }
}

/// A BillPayment, shaped as quickbooks-ruby's `bill_payments.xml`, `bill_payment_cc_response.xml`
/// and the BillPayments of `change_data_capture_response.xml`: the bills it pays (lines linked to
/// a Bill), the vendor, and how: a check from a bank account or a credit card.
fn bill_payment(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    let v = rec.voided;
    header(o, rec, c.off);
    o.str("DocNumber", &(5000 + rec.id).to_string());
    txn_date(o, c);
    usd(o);
    private_note(o, rec);
    let n = 1 + (c.r() % 2) as usize;
    let lines: Vec<(i64, u32)> = (0..n)
        .map(|i| {
            let amount = if i == 0 {
                cents(c, 150_000)
            } else {
                (c.r() % 90_000) as i64 + 100
            };
            (amount, c.refs.pick(Entity::Bill, c.r()))
        })
        .collect();
    o.arr("Line", |a| {
        for (amount, bill) in &lines {
            a.obj(|l| {
                l.raw("Amount", &amt(v, *amount));
                l.arr("LinkedTxn", |a| {
                    a.obj(|t| {
                        t.str("TxnId", &bill.to_string());
                        t.str("TxnType", "Bill");
                    })
                });
            });
        }
    });
    c.reference(o, "VendorRef", Entity::Vendor);
    if c.r().is_multiple_of(3) {
        o.str("PayType", "CreditCard");
        o.obj("CreditCardPayment", |p| {
            account_ref(p, "CCAccountRef", MASTERCARD)
        });
    } else {
        o.str("PayType", "Check");
        o.obj("CheckPayment", |p| {
            account_ref(p, "BankAccountRef", CHECKING);
            p.str("PrintStatus", "NotSet");
        });
    }
    let total: i64 = lines.iter().map(|(a, _)| a).sum();
    o.raw("TotalAmt", &amt(v, total));
}

/// A Deposit, shaped as quickbooks-ruby's `deposit.xml` and `deposits.xml`: payments taken out of
/// Undeposited Funds (lines linked to a Payment) and/or other deposits (a `DepositLineDetail`
/// line naming the customer and the account), the bank account deposited to, sometimes cash back.
fn deposit(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    let v = rec.voided;
    header(o, rec, c.off);
    txn_date(o, c);
    usd(o);
    private_note(o, rec);
    let shape = c.r() % 3; // 0 linked payments, 1 a deposit line, 2 both
    let linked: Vec<(i64, u32)> = if shape == 1 {
        vec![]
    } else {
        (0..1 + c.r() % 3)
            .map(|i| {
                let amount = if i == 0 {
                    cents(c, 80_000)
                } else {
                    (c.r() % 80_000) as i64 + 100
                };
                (amount, c.refs.pick(Entity::Payment, c.r()))
            })
            .collect()
    };
    let other = (shape != 0).then(|| {
        let amount = if linked.is_empty() {
            cents(c, 500_000)
        } else {
            (c.r() % 50_000) as i64 + 100
        };
        let customer = c.refs.pick(Entity::Customer, c.r());
        let account = c.refs.pick(Entity::Account, c.r());
        let method = c.refs.pick(Entity::PaymentMethod, c.r());
        (amount, customer, account, method)
    });
    o.arr("Line", |a| {
        for (amount, payment) in &linked {
            a.obj(|l| {
                l.raw("Amount", &amt(v, *amount));
                l.arr("LinkedTxn", |a| {
                    a.obj(|t| {
                        t.str("TxnId", &payment.to_string());
                        t.str("TxnType", "Payment");
                        t.str("TxnLineId", "0");
                    })
                });
            });
        }
        if let Some((amount, customer, account, method)) = other {
            a.obj(|l| {
                l.str("Id", "1");
                l.raw("LineNum", "1");
                l.raw("Amount", &amt(v, amount));
                l.str("DetailType", "DepositLineDetail");
                l.obj("DepositLineDetail", |d| {
                    d.obj("Entity", |r| {
                        r.str("value", &customer.to_string());
                        r.str("name", &name_of(Entity::Customer, customer));
                        r.str("type", "CUSTOMER");
                    });
                    d.obj("AccountRef", |r| {
                        r.str("value", &account.to_string());
                        r.str("name", &name_of(Entity::Account, account));
                    });
                    d.obj("PaymentMethodRef", |r| {
                        r.str("value", &method.to_string());
                        r.str("name", &name_of(Entity::PaymentMethod, method));
                    });
                });
            });
        }
    });
    account_ref(o, "DepositToAccountRef", CHECKING);
    let sum: i64 = linked.iter().map(|(a, _)| a).sum::<i64>() + other.map_or(0, |x| x.0);
    let cash_back = if c.r().is_multiple_of(8) { sum / 4 } else { 0 };
    if cash_back > 0 {
        o.obj("CashBack", |b| {
            account_ref(b, "AccountRef", SAVINGS);
            b.raw("Amount", &amt(v, cash_back));
            b.str("Memo", "Money to savings");
        });
    }
    o.raw("TotalAmt", &amt(v, sum - cash_back));
}

/// A Transfer between two accounts, shaped as quickbooks-ruby's `transfer.xml`: one `Amount`, no
/// lines and no TotalAmt.
fn transfer(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    header(o, rec, c.off);
    txn_date(o, c);
    usd(o);
    private_note(o, rec);
    let (from, to) = if c.r().is_multiple_of(2) {
        (SAVINGS, CHECKING)
    } else {
        (CHECKING, SAVINGS)
    };
    account_ref(o, "FromAccountRef", from);
    account_ref(o, "ToAccountRef", to);
    let amount = cents(c, 1_000_000);
    o.raw("Amount", &amt(rec.voided, amount));
}

/// A PurchaseOrder, shaped as quickbooks-ruby's `purchase_order.xml`: item lines, the vendor and
/// its address, where to ship, and whether it is still open.
fn purchase_order(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    let v = rec.voided;
    header(o, rec, c.off);
    o.str("DocNumber", &(2000 + rec.id).to_string());
    txn_date(o, c);
    usd(o);
    private_note(o, rec);
    let n = 1 + (c.r() % 3) as usize;
    let lines: Vec<(u32, i64, i64)> = (0..n)
        .map(|i| {
            let item = c.refs.pick(Entity::Item, c.r());
            let (unit, qty) = if i == 0 && rec.id % 10 == 3 {
                (1230, 1)
            } else {
                ((c.r() % 20_000) as i64 + 50, (c.r() % 12) as i64 + 1)
            };
            (item, unit, qty)
        })
        .collect();
    o.arr("Line", |a| {
        for (i, (item, unit, qty)) in lines.iter().enumerate() {
            let item_name = name_of(Entity::Item, *item);
            a.obj(|l| {
                l.str("Id", &(i + 1).to_string());
                l.str(
                    "Description",
                    &format!("{item_name} — order line {}", i + 1),
                );
                l.raw("Amount", &amt(v, unit * qty));
                l.str("DetailType", "ItemBasedExpenseLineDetail");
                l.obj("ItemBasedExpenseLineDetail", |d| {
                    d.obj("ItemRef", |r| {
                        r.str("value", &item.to_string());
                        r.str("name", &item_name);
                    });
                    if !v {
                        d.raw("UnitPrice", &money(*unit));
                        d.raw("Qty", &qty.to_string());
                    }
                    d.obj("TaxCodeRef", |r| r.str("value", "NON"));
                    d.str("BillableStatus", "NotBillable");
                });
            });
        }
    });
    c.reference(o, "VendorRef", Entity::Vendor);
    o.obj("APAccountRef", |r| {
        r.str("value", "5");
        r.str("name", "Accounts Payable (A/P)");
    });
    let total: i64 = lines.iter().map(|(_, u, q)| u * q).sum();
    o.raw("TotalAmt", &amt(v, total));
    let r1 = c.r();
    address(o, "VendorAddr", r1 % 500 + 2, r1);
    let r2 = c.r();
    address(o, "ShipAddr", r2 % 500 + 2, r2);
    o.str(
        "POStatus",
        if c.r().is_multiple_of(4) {
            "Closed"
        } else {
            "Open"
        },
    );
}

/// An Attachable, shaped as the recorded one (`qbo_api/vcr/attachment/read_attachment__0.json`)
/// and quickbooks-ruby's `attachables.xml`: a file (name, download URIs, size, content type, a
/// thumbnail for images) or a note alone (quickbooks-go's `attachable.json`), linked to the
/// record it is attached to. No TxnDate, no Active.
fn attachable(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    let note_only = c.r().is_multiple_of(5);
    let note = ATTACHMENT_NOTES[(rec.variant % ATTACHMENT_NOTES.len() as u64) as usize];
    if note_only {
        if rec.sync > 0 {
            o.str("Note", &format!("{note} (revision {})", rec.sync));
        } else {
            o.str("Note", note);
        }
    } else {
        let (stem, ext, content_type) = ATTACHMENTS[(c.r() % ATTACHMENTS.len() as u64) as usize];
        let file = format!("{stem}-{}.{ext}", rec.id);
        let key = format!("{:016x}", c.r());
        let (realm, id) = (c.realm, rec.id);
        o.str("FileName", &file);
        o.str(
            "FileAccessUri",
            &format!("/v3/company/{realm}/download/{id}"),
        );
        o.str(
            "TempDownloadUri",
            &format!("https://intuit-qbo-emulator.s3.amazonaws.com/{realm}/attachments/{key}{file}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=900"),
        );
        o.raw("Size", &(200 + c.r() % 2_000_000).to_string());
        o.str("ContentType", content_type);
        if content_type.starts_with("image/") {
            o.str(
                "ThumbnailFileAccessUri",
                &format!("/v3/company/{realm}/attachable-thumbnail/{id}"),
            );
            o.str(
                "ThumbnailTempDownloadUri",
                &format!("https://intuit-qbo-emulator.s3.amazonaws.com/{realm}/attachmentthumbnails/{key}tn_{file}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=900"),
            );
        }
        if rec.sync > 0 {
            o.str("Note", &format!("{note} (revision {})", rec.sync));
        }
    }
    header(o, rec, c.off);
    let (ty, e) = [
        ("Invoice", Entity::Invoice),
        ("Bill", Entity::Bill),
        ("Purchase", Entity::Purchase),
        ("Estimate", Entity::Estimate),
        ("Customer", Entity::Customer),
        ("Vendor", Entity::Vendor),
    ][(c.r() % 6) as usize];
    let target = c.refs.pick(e, c.r());
    o.arr("AttachableRef", |a| {
        a.obj(|r| {
            r.obj("EntityRef", |x| {
                x.str("value", &target.to_string());
                x.str("type", ty);
            });
            r.bool("IncludeOnSend", false);
        })
    });
}

/// A Budget, shaped as quickbooks-ruby's `budgets.xml`: a name, the fiscal year it covers, its
/// type and period, and one amount per account and period (most of them 0, as recorded).
fn budget(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    o.str("Name", &name_of(Entity::Budget, rec.id));
    let year: i32 = render_date(rec.create, c.off)[..4].parse().expect("a year");
    o.str("StartDate", &format!("{year}-01-01"));
    o.str("EndDate", &format!("{year}-12-31"));
    o.str("BudgetType", "ProfitAndLoss");
    let quarterly = c.r().is_multiple_of(4);
    o.str(
        "BudgetEntryType",
        if quarterly { "Quarterly" } else { "Monthly" },
    );
    o.bool("Active", rec.active);
    let accounts: Vec<u32> = (0..1 + c.r() % 2)
        .map(|_| c.refs.pick(Entity::Account, c.r()))
        .collect();
    let months: Vec<u32> = if quarterly {
        vec![1, 4, 7, 10]
    } else {
        (1..=12).collect()
    };
    o.arr("BudgetDetail", |a| {
        for acct in &accounts {
            for m in &months {
                let amount = if c.r().is_multiple_of(3) {
                    money((c.r() % 500_000) as i64 + 100)
                } else {
                    "0".to_string()
                };
                a.obj(|d| {
                    d.str("BudgetDate", &format!("{year}-{m:02}-01"));
                    d.raw("Amount", &amount);
                    d.obj("AccountRef", |r| {
                        r.str("value", &acct.to_string());
                        r.str("name", &name_of(Entity::Account, *acct));
                    });
                });
            }
        }
    });
    header(o, rec, c.off);
}

/// A TaxRate, shaped as quickbooks-ruby's `tax_rate.xml` and `tax_rates.xml`: a name, the rate in
/// percent, the agency that collects it and since when it applies.
fn tax_rate(o: &mut Obj, c: &mut Ctx) {
    let rec = c.rec;
    let (_, rate, agency) = pick(TAX_RATES, rec.id);
    o.str("Name", &name_of(Entity::TaxRate, rec.id));
    if rec.sync > 0 {
        o.str("Description", &format!("Sales Tax (revision {})", rec.sync));
    } else {
        o.str("Description", "Sales Tax");
    }
    o.bool("Active", rec.active);
    o.raw("RateValue", rate);
    o.obj("AgencyRef", |r| r.str("value", agency));
    // in effect from the company-local midnight of the day it was created
    let off = i64::from(c.off.local_minus_utc());
    let since = local_day(rec.create, c.off) * 86_400 - off;
    o.arr("EffectiveTaxRate", |a| {
        a.obj(|t| {
            t.raw("RateValue", rate);
            t.str("EffectiveDate", &render_ts(since, c.off));
        })
    });
    o.str("SpecialTaxType", "NONE");
    o.str("DisplayType", "ReadOnly");
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

    /// An amount of a payload in cents.
    fn cents_of(v: &serde_json::Value) -> i64 {
        (v.as_f64().unwrap_or_else(|| panic!("{v} is not a number")) * 100.0).round() as i64
    }

    /// Every payload of one entity of realm "1" (default counts).
    fn payloads(e: Entity) -> Vec<serde_json::Value> {
        let c = cfg(&["--realm", "1"]);
        let d = Dataset::generate(&c);
        let realm = &d.realms["1"];
        realm
            .table(e)
            .recs
            .iter()
            .map(|r| {
                let p = realm.payload(e, r);
                let v: serde_json::Value =
                    serde_json::from_str(&p).unwrap_or_else(|err| panic!("{e}: {err}: {p}"));
                assert_eq!(v["Id"], r.id.to_string());
                assert_eq!(v["SyncToken"], r.sync.to_string());
                assert_eq!(v["domain"], "QBO");
                assert_eq!(v["sparse"], false);
                assert!(v["MetaData"]["CreateTime"].is_string());
                // a transaction has a TxnDate and no Active, a name list the other way round, an
                // Attachable neither
                assert_eq!(v.get("TxnDate").is_some(), e.has_txn_date(), "{e}: {v}");
                assert_eq!(v.get("Active").is_some(), e.is_name_list(), "{e}: {v}");
                if e.is_name_list() {
                    assert_eq!(v["Active"], r.active);
                    assert_eq!(v["Name"], name_of(e, r.id));
                }
                v
            })
            .collect()
    }

    fn lines_total(v: &serde_json::Value) -> i64 {
        v["Line"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["DetailType"] != "SubTotalLineDetail")
            .map(|l| cents_of(&l["Amount"]))
            .sum()
    }

    #[test]
    fn new_transactions_have_their_recorded_shapes() {
        for e in [
            Entity::BillPayment,
            Entity::Deposit,
            Entity::PurchaseOrder,
            Entity::RefundReceipt,
            Entity::Transfer,
            Entity::VendorCredit,
        ] {
            let all = payloads(e);
            assert_eq!(all.len(), 250, "{e}");
            let text: String = all.iter().map(|v| v.to_string()).collect();
            assert!(text.contains("12.3"), "{e}: a literal decimal");
            for v in &all {
                assert_eq!(v["CurrencyRef"]["value"], "USD", "{e}");
                match e {
                    Entity::Transfer => {
                        assert!(v.get("Line").is_none() && v.get("TotalAmt").is_none());
                        assert!(cents_of(&v["Amount"]) > 0);
                        assert_ne!(v["FromAccountRef"], v["ToAccountRef"]);
                    }
                    Entity::Deposit => {
                        let back = v.get("CashBack").map_or(0, |b| cents_of(&b["Amount"]));
                        assert_eq!(cents_of(&v["TotalAmt"]), lines_total(v) - back, "{v}");
                        assert_eq!(v["DepositToAccountRef"]["name"], "Checking");
                        for l in v["Line"].as_array().unwrap() {
                            let linked = l.get("LinkedTxn").is_some();
                            assert_eq!(linked, l.get("DepositLineDetail").is_none(), "{l}");
                            if linked {
                                assert_eq!(l["LinkedTxn"][0]["TxnType"], "Payment");
                            } else {
                                assert_eq!(l["DetailType"], "DepositLineDetail");
                                assert_eq!(l["DepositLineDetail"]["Entity"]["type"], "CUSTOMER");
                            }
                        }
                    }
                    Entity::BillPayment => {
                        assert_eq!(cents_of(&v["TotalAmt"]), lines_total(v), "{v}");
                        assert!(v["Line"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|l| l["LinkedTxn"][0]["TxnType"] == "Bill"));
                        let how = match v["PayType"].as_str().unwrap() {
                            "Check" => "CheckPayment",
                            "CreditCard" => "CreditCardPayment",
                            p => panic!("PayType {p}"),
                        };
                        assert!(v.get(how).is_some(), "{v}");
                        assert!(v["VendorRef"]["value"].is_string());
                    }
                    Entity::PurchaseOrder => {
                        assert_eq!(cents_of(&v["TotalAmt"]), lines_total(v), "{v}");
                        for l in v["Line"].as_array().unwrap() {
                            let d = &l["ItemBasedExpenseLineDetail"];
                            assert_eq!(
                                cents_of(&l["Amount"]),
                                cents_of(&d["UnitPrice"]) * d["Qty"].as_i64().unwrap()
                            );
                        }
                        assert!(["Open", "Closed"].contains(&v["POStatus"].as_str().unwrap()));
                        assert!(v["VendorAddr"]["City"].is_string());
                    }
                    Entity::VendorCredit => {
                        assert_eq!(cents_of(&v["TotalAmt"]), lines_total(v), "{v}");
                        assert!(v["VendorRef"]["value"].is_string());
                        assert_eq!(v["APAccountRef"]["value"], "5");
                    }
                    Entity::RefundReceipt => {
                        assert_eq!(v["Balance"], 0);
                        assert!(v.get("EmailStatus").is_none());
                        for k in ["CustomerRef", "PaymentMethodRef", "DepositToAccountRef"] {
                            assert!(v[k]["value"].is_string(), "{k}: {v}");
                        }
                    }
                    _ => unreachable!(),
                }
            }
            // both ways of paying a bill, both kinds of deposit lines, cash back, both statuses
            let has = |needle: &str| text.contains(needle);
            match e {
                Entity::BillPayment => assert!(has("CheckPayment") && has("CreditCardPayment")),
                Entity::Deposit => {
                    assert!(has("LinkedTxn") && has("DepositLineDetail") && has("CashBack"))
                }
                Entity::PurchaseOrder => assert!(has("\"Open\"") && has("\"Closed\"")),
                _ => {}
            }
        }
    }

    #[test]
    fn attachables_budgets_and_tax_rates_have_their_recorded_shapes() {
        let all = payloads(Entity::Attachable);
        assert_eq!(all.len(), 60);
        let (mut files, mut notes) = (0, 0);
        for v in &all {
            let id = v["Id"].as_str().unwrap();
            if let Some(f) = v.get("FileName") {
                files += 1;
                assert!(f.as_str().unwrap().contains(id));
                assert_eq!(v["FileAccessUri"], format!("/v3/company/1/download/{id}"));
                assert!(v["TempDownloadUri"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://"));
                assert!(v["Size"].is_u64());
                let image = v["ContentType"].as_str().unwrap().starts_with("image/");
                assert_eq!(v.get("ThumbnailFileAccessUri").is_some(), image);
            } else {
                notes += 1;
                assert!(v["Note"].is_string() && v.get("ContentType").is_none());
            }
            let r = &v["AttachableRef"][0];
            assert!(r["EntityRef"]["value"].is_string());
            assert_eq!(r["IncludeOnSend"], false);
            let ty = r["EntityRef"]["type"].as_str().unwrap();
            assert!(
                ["Invoice", "Bill", "Purchase", "Estimate", "Customer", "Vendor"].contains(&ty)
            );
        }
        assert!(files > 0 && notes > 0, "{files} {notes}");

        let all = payloads(Entity::Budget);
        assert_eq!(all.len(), 60);
        for v in &all {
            let year = &v["StartDate"].as_str().unwrap()[..4];
            assert_eq!(v["EndDate"], format!("{year}-12-31"));
            assert_eq!(v["BudgetType"], "ProfitAndLoss");
            let periods = match v["BudgetEntryType"].as_str().unwrap() {
                "Monthly" => 12,
                "Quarterly" => 4,
                t => panic!("BudgetEntryType {t}"),
            };
            let details = v["BudgetDetail"].as_array().unwrap();
            assert!(
                details.len() == periods || details.len() == 2 * periods,
                "{v}"
            );
            for d in details {
                assert!(d["BudgetDate"].as_str().unwrap().starts_with(year));
                assert!(d["Amount"].is_number() && d["AccountRef"]["value"].is_string());
            }
        }

        let all = payloads(Entity::TaxRate);
        assert_eq!(all.len(), 60);
        for v in &all {
            assert!(v["RateValue"].is_number());
            assert_eq!(v["EffectiveTaxRate"][0]["RateValue"], v["RateValue"]);
            assert!(v["EffectiveTaxRate"][0]["EffectiveDate"]
                .as_str()
                .unwrap()
                .ends_with("T00:00:00-07:00"));
            assert!(v["AgencyRef"]["value"].is_string());
            assert_eq!(v["SpecialTaxType"], "NONE");
        }
        assert!(all.iter().any(|v| v["Name"] == "Zürich MWST ✓"));
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
