//! The QBO entities the emulator serves, and what kind each one is: every entity of pg_qbo's
//! catalog (`crates/qbo/src/entities.rs`), with the same kind and the same Change Data Capture
//! support (a test reads that catalog and compares).

/// One QBO entity type. Names are case sensitive, as in the real API.
///
/// The entities added after the first nineteen (Attachable and the rest) come last, here and in
/// [`Entity::ALL`], so the order of the earlier ones (the order of a realm's tables) is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Account,
    Bill,
    Class,
    CreditMemo,
    Customer,
    Department,
    Employee,
    Estimate,
    Invoice,
    Item,
    JournalEntry,
    Payment,
    PaymentMethod,
    Purchase,
    SalesReceipt,
    TaxCode,
    Term,
    TimeActivity,
    Vendor,
    Attachable,
    BillPayment,
    Budget,
    Deposit,
    PurchaseOrder,
    RefundReceipt,
    TaxRate,
    Transfer,
    VendorCredit,
}

/// How QBO classifies an entity (as pg_qbo's catalog does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `Active`; queries return only active rows unless they filter on `Active`; never
    /// hard-deleted.
    NameList,
    /// Has a `TxnDate`; no `Active`.
    Transaction,
    /// Neither `TxnDate` nor `Active` (Attachable): queried by Id and MetaData only.
    Other,
}

/// Which name field an entity has, for `DisplayName`/`Name` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    DisplayName,
    Name,
    None,
}

impl Entity {
    pub const ALL: [Entity; 28] = [
        Entity::Account,
        Entity::Bill,
        Entity::Class,
        Entity::CreditMemo,
        Entity::Customer,
        Entity::Department,
        Entity::Employee,
        Entity::Estimate,
        Entity::Invoice,
        Entity::Item,
        Entity::JournalEntry,
        Entity::Payment,
        Entity::PaymentMethod,
        Entity::Purchase,
        Entity::SalesReceipt,
        Entity::TaxCode,
        Entity::Term,
        Entity::TimeActivity,
        Entity::Vendor,
        Entity::Attachable,
        Entity::BillPayment,
        Entity::Budget,
        Entity::Deposit,
        Entity::PurchaseOrder,
        Entity::RefundReceipt,
        Entity::TaxRate,
        Entity::Transfer,
        Entity::VendorCredit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Entity::Account => "Account",
            Entity::Bill => "Bill",
            Entity::Class => "Class",
            Entity::CreditMemo => "CreditMemo",
            Entity::Customer => "Customer",
            Entity::Department => "Department",
            Entity::Employee => "Employee",
            Entity::Estimate => "Estimate",
            Entity::Invoice => "Invoice",
            Entity::Item => "Item",
            Entity::JournalEntry => "JournalEntry",
            Entity::Payment => "Payment",
            Entity::PaymentMethod => "PaymentMethod",
            Entity::Purchase => "Purchase",
            Entity::SalesReceipt => "SalesReceipt",
            Entity::TaxCode => "TaxCode",
            Entity::Term => "Term",
            Entity::TimeActivity => "TimeActivity",
            Entity::Vendor => "Vendor",
            Entity::Attachable => "Attachable",
            Entity::BillPayment => "BillPayment",
            Entity::Budget => "Budget",
            Entity::Deposit => "Deposit",
            Entity::PurchaseOrder => "PurchaseOrder",
            Entity::RefundReceipt => "RefundReceipt",
            Entity::TaxRate => "TaxRate",
            Entity::Transfer => "Transfer",
            Entity::VendorCredit => "VendorCredit",
        }
    }

    /// Exact (case-sensitive) lookup, as the query endpoint does.
    pub fn from_name(s: &str) -> Option<Entity> {
        Entity::ALL.iter().copied().find(|e| e.name() == s)
    }

    /// Case-insensitive lookup, as the CDC `entities` parameter does.
    pub fn from_name_ci(s: &str) -> Option<Entity> {
        Entity::ALL
            .iter()
            .copied()
            .find(|e| e.name().eq_ignore_ascii_case(s))
    }

    /// Name list, transaction or other, as pg_qbo's catalog has it (and Intuit's docs: Budget and
    /// TaxRate are name lists, Attachable neither a name list nor a transaction).
    pub fn kind(self) -> Kind {
        match self {
            Entity::Account
            | Entity::Budget
            | Entity::Class
            | Entity::Customer
            | Entity::Department
            | Entity::Employee
            | Entity::Item
            | Entity::PaymentMethod
            | Entity::TaxCode
            | Entity::TaxRate
            | Entity::Term
            | Entity::Vendor => Kind::NameList,
            Entity::Attachable => Kind::Other,
            _ => Kind::Transaction,
        }
    }

    /// Name-list entities return only active rows unless `Active` is filtered.
    pub fn is_name_list(self) -> bool {
        self.kind() == Kind::NameList
    }

    /// Transactions carry a `TxnDate`.
    pub fn has_txn_date(self) -> bool {
        self.kind() == Kind::Transaction
    }

    pub fn name_field(self) -> NameField {
        match self {
            Entity::Customer | Entity::Vendor | Entity::Employee => NameField::DisplayName,
            e if e.is_name_list() => NameField::Name,
            _ => NameField::None,
        }
    }

    /// Whether Change Data Capture serves the entity. Intuit: "You can use the CDC operation for
    /// all API entities except the following: JournalCode, TaxAgency, TimeActivity, TaxCode,
    /// TaxRate" (developer.intuit.com, .../explore-the-quickbooks-online-api/change-data-capture).
    /// Of those, the emulator serves TaxCode, TaxRate and TimeActivity (by queries only).
    pub fn cdc_supported(self) -> bool {
        !matches!(
            self,
            Entity::TaxCode | Entity::TaxRate | Entity::TimeActivity
        )
    }

    /// Whether QuickBooks can void a record of this entity (ops `void` of `/__emulator/mutate`):
    /// transactions, except TimeActivity, which QuickBooks Online does not void (a time entry is
    /// deleted, and it carries no posted amount to zero). Not an Attachable (a note or a file,
    /// no amount).
    pub fn voidable(self) -> bool {
        self.kind() == Kind::Transaction && self != Entity::TimeActivity
    }

    pub fn default_count(self) -> usize {
        match self {
            Entity::Invoice => 600,
            // minor entities, small like the name lists
            Entity::TimeActivity | Entity::Attachable => 60,
            e if e.is_name_list() => 60,
            _ => 250,
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdc_and_void_follow_intuits_lists() {
        let no_cdc: Vec<&str> = Entity::ALL
            .iter()
            .filter(|e| !e.cdc_supported())
            .map(|e| e.name())
            .collect();
        assert_eq!(no_cdc, ["TaxCode", "TimeActivity", "TaxRate"]);
        assert!(!Entity::TimeActivity.is_name_list() && Entity::TimeActivity.has_txn_date());
        assert_eq!(Entity::TimeActivity.name_field(), NameField::None);
        assert!(!Entity::TimeActivity.voidable() && !Entity::Customer.voidable());
        assert!(Entity::Invoice.voidable() && Entity::JournalEntry.voidable());
        assert_eq!(
            Entity::from_name("TimeActivity"),
            Some(Entity::TimeActivity)
        );
        assert_eq!(
            Entity::from_name_ci("timeactivity"),
            Some(Entity::TimeActivity)
        );
        assert_eq!(Entity::TimeActivity.default_count(), 60);
    }

    /// The `e("Name", "table", Kind::X, cdc)` entries of pg_qbo's catalog, read from its source
    /// (the emulator does not depend on pg_qbo's crates): (name, kind, cdc).
    fn pg_qbo_catalog() -> Vec<(String, String, bool)> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../crates/qbo/src/entities.rs"
        );
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("read pg_qbo's catalog {path}: {err}"));
        let start = text
            .find("pub static ENTITIES")
            .expect("the ENTITIES static");
        let body = &text[start..start + text[start..].find("];").expect("its end")];
        body.split("e(")
            .skip(1)
            .map(|entry| {
                let args: Vec<&str> = entry[..entry.find(')').expect("a closing parenthesis")]
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .collect();
                assert_eq!(args.len(), 4, "an entry of 4 arguments: {entry}");
                (
                    args[0].trim_matches('"').to_string(),
                    args[2].trim_start_matches("Kind::").to_string(),
                    args[3] == "true",
                )
            })
            .collect()
    }

    #[test]
    fn every_entity_of_pg_qbos_catalog_is_served_with_its_kind_and_cdc_support() {
        let catalog = pg_qbo_catalog();
        assert!(catalog.len() >= 28, "{catalog:?}");
        for (name, kind, cdc) in &catalog {
            let e = Entity::from_name(name)
                .unwrap_or_else(|| panic!("pg_qbo knows {name}, the emulator does not"));
            let mine = match e.kind() {
                Kind::NameList => "NameList",
                Kind::Transaction => "Transaction",
                Kind::Other => "Other",
            };
            assert_eq!(mine, kind, "{name}: kind");
            assert_eq!(e.cdc_supported(), *cdc, "{name}: CDC support");
        }
        let mut theirs: Vec<&str> = catalog.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut ours: Vec<&str> = Entity::ALL.iter().map(|e| e.name()).collect();
        theirs.sort_unstable();
        ours.sort_unstable();
        assert_eq!(ours, theirs, "the same entities");
    }

    #[test]
    fn entities_added_after_the_first_nineteen() {
        // they come last, so the first nineteen keep their order
        assert_eq!(Entity::ALL[18], Entity::Vendor);
        assert!(Entity::ALL.windows(2).all(|w| w[0] < w[1]));
        for e in [Entity::Budget, Entity::TaxRate] {
            assert_eq!(e.kind(), Kind::NameList);
            assert_eq!(e.name_field(), NameField::Name);
            assert!(!e.has_txn_date() && !e.voidable());
            assert_eq!(e.default_count(), 60);
        }
        assert!(Entity::Budget.cdc_supported() && !Entity::TaxRate.cdc_supported());
        let a = Entity::Attachable;
        assert_eq!(a.kind(), Kind::Other);
        assert!(!a.is_name_list() && !a.has_txn_date() && !a.voidable() && a.cdc_supported());
        assert_eq!(a.name_field(), NameField::None);
        assert_eq!(a.default_count(), 60);
        for e in [
            Entity::BillPayment,
            Entity::Deposit,
            Entity::PurchaseOrder,
            Entity::RefundReceipt,
            Entity::Transfer,
            Entity::VendorCredit,
        ] {
            assert_eq!(e.kind(), Kind::Transaction, "{e}");
            assert!(e.has_txn_date() && e.voidable() && e.cdc_supported(), "{e}");
            assert_eq!(e.name_field(), NameField::None, "{e}");
            assert_eq!(e.default_count(), 250, "{e}");
        }
        assert_eq!(
            Entity::from_name_ci("billpayment"),
            Some(Entity::BillPayment)
        );
        assert_eq!(Entity::from_name("billpayment"), None);
    }
}
