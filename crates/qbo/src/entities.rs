//! The catalog of QBO entities pg_qbo can backfill: their exact (case-sensitive) names, the raw
//! table each lands in, whether QBO treats them as name lists (which return only active rows unless
//! the query filters on `Active`), and whether Change Data Capture supports them.
//!
//! Every raw table name comes from this static list, never from user text, so an entity argument
//! can never inject SQL or QBO query text: it is looked up here first, and anything not found is
//! rejected with the list of valid names.

/// How QBO classifies an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Name-list entity: has `Active`; queries return only active rows unless `Active` is filtered.
    NameList,
    /// Transaction entity.
    Transaction,
    /// Other queryable entity with `MetaData.LastUpdatedTime`.
    Other,
}

impl Kind {
    /// The spelling used in `qbo.entities.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NameList => "name-list",
            Kind::Transaction => "transaction",
            Kind::Other => "other",
        }
    }
}

/// One entity of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entity {
    /// QBO's name, case-sensitive (`Invoice`).
    pub name: &'static str,
    /// Table in schema `raw` (`qb_invoices`).
    pub table: &'static str,
    /// Name list, transaction or other.
    pub kind: Kind,
    /// Whether the CDC endpoint supports it.
    pub cdc: bool,
    /// Whether the query must add `Active IN (true,false)` to see inactive rows too.
    pub has_active: bool,
}

const fn e(name: &'static str, table: &'static str, kind: Kind, cdc: bool) -> Entity {
    let has_active = matches!(kind, Kind::NameList);
    Entity {
        name,
        table,
        kind,
        cdc,
        has_active,
    }
}

/// Every supported entity, sorted by name.
pub static ENTITIES: &[Entity] = &[
    e("Account", "qb_accounts", Kind::NameList, true),
    e("Attachable", "qb_attachables", Kind::Other, true),
    e("Bill", "qb_bills", Kind::Transaction, true),
    e("BillPayment", "qb_bill_payments", Kind::Transaction, true),
    e("Budget", "qb_budgets", Kind::NameList, true),
    e("Class", "qb_classes", Kind::NameList, true),
    e("CreditMemo", "qb_credit_memos", Kind::Transaction, true),
    e("Customer", "qb_customers", Kind::NameList, true),
    e("Department", "qb_departments", Kind::NameList, true),
    e("Deposit", "qb_deposits", Kind::Transaction, true),
    e("Employee", "qb_employees", Kind::NameList, true),
    e("Estimate", "qb_estimates", Kind::Transaction, true),
    e("Invoice", "qb_invoices", Kind::Transaction, true),
    e("Item", "qb_items", Kind::NameList, true),
    e(
        "JournalEntry",
        "qb_journal_entries",
        Kind::Transaction,
        true,
    ),
    e("Payment", "qb_payments", Kind::Transaction, true),
    e("PaymentMethod", "qb_payment_methods", Kind::NameList, true),
    e("Purchase", "qb_purchases", Kind::Transaction, true),
    e(
        "PurchaseOrder",
        "qb_purchase_orders",
        Kind::Transaction,
        true,
    ),
    e(
        "RefundReceipt",
        "qb_refund_receipts",
        Kind::Transaction,
        true,
    ),
    e("SalesReceipt", "qb_sales_receipts", Kind::Transaction, true),
    e("TaxCode", "qb_tax_codes", Kind::NameList, false),
    e("TaxRate", "qb_tax_rates", Kind::NameList, false),
    e("Term", "qb_terms", Kind::NameList, true),
    e(
        "TimeActivity",
        "qb_time_activities",
        Kind::Transaction,
        false,
    ),
    e("Transfer", "qb_transfers", Kind::Transaction, true),
    e("Vendor", "qb_vendors", Kind::NameList, true),
    e("VendorCredit", "qb_vendor_credits", Kind::Transaction, true),
];

/// Looks an entity up by its exact name. The error text names the bad value, says that names are
/// case-sensitive (suggesting the right spelling when only the case differs) and lists every
/// valid name.
pub fn lookup(name: &str) -> Result<&'static Entity, String> {
    if let Some(found) = ENTITIES.iter().find(|e| e.name == name) {
        return Ok(found);
    }
    let shown: String = name.chars().take(64).collect();
    let hint = ENTITIES
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
        .map(|e| {
            format!(
                " (entity names are case-sensitive: did you mean \"{}\"?)",
                e.name
            )
        })
        .unwrap_or_default();
    let valid: Vec<&str> = ENTITIES.iter().map(|e| e.name).collect();
    Err(format!(
        "unknown entity \"{shown}\"{hint}; valid entities are: {}",
        valid.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_sorted_unique_and_tables_are_plain_identifiers() {
        for pair in ENTITIES.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for e in ENTITIES {
            assert!(
                e.name.chars().all(|c| c.is_ascii_alphabetic()),
                "{}",
                e.name
            );
            assert!(e.table.starts_with("qb_"));
            assert!(
                e.table.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                e.table
            );
        }
    }

    #[test]
    fn seed_pipeline_table_names_are_kept() {
        assert_eq!(lookup("Customer").unwrap().table, "qb_customers");
        assert_eq!(lookup("Invoice").unwrap().table, "qb_invoices");
        assert_eq!(lookup("Item").unwrap().table, "qb_items");
    }

    #[test]
    fn name_lists_filter_active() {
        assert!(lookup("Customer").unwrap().has_active);
        assert!(!lookup("Invoice").unwrap().has_active);
    }

    #[test]
    fn unknown_or_wrongly_cased_entity_is_explained() {
        let err = lookup("invoice").unwrap_err();
        assert!(err.starts_with(
            "unknown entity \"invoice\" (entity names are case-sensitive: did you mean \"Invoice\"?); valid entities are: Account, "
        ), "{err}");
        let err = lookup("Invoice'; DROP TABLE x; --").unwrap_err();
        assert!(
            err.starts_with("unknown entity \"Invoice'; DROP TABLE x; --\"; valid"),
            "{err}"
        );
    }
}
