//! The QBO entities the emulator serves, and what kind each one is.

/// One QBO entity type. Names are case sensitive, as in the real API.
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
}

/// Which name field an entity has, for `DisplayName`/`Name` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    DisplayName,
    Name,
    None,
}

impl Entity {
    pub const ALL: [Entity; 19] = [
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

    /// Name-list entities return only active rows unless `Active` is filtered.
    pub fn is_name_list(self) -> bool {
        matches!(
            self,
            Entity::Account
                | Entity::Class
                | Entity::Customer
                | Entity::Department
                | Entity::Employee
                | Entity::Item
                | Entity::PaymentMethod
                | Entity::TaxCode
                | Entity::Term
                | Entity::Vendor
        )
    }

    /// Transactions carry a `TxnDate`.
    pub fn has_txn_date(self) -> bool {
        !self.is_name_list()
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
    /// Of those, the emulator serves TaxCode and TimeActivity (by queries only).
    pub fn cdc_supported(self) -> bool {
        !matches!(self, Entity::TaxCode | Entity::TimeActivity)
    }

    /// Whether QuickBooks can void a record of this entity (ops `void` of `/__emulator/mutate`):
    /// transactions, except TimeActivity, which QuickBooks Online does not void (a time entry is
    /// deleted, and it carries no posted amount to zero).
    pub fn voidable(self) -> bool {
        !self.is_name_list() && self != Entity::TimeActivity
    }

    pub fn default_count(self) -> usize {
        match self {
            Entity::Invoice => 600,
            // a minor entity, small like the name lists
            Entity::TimeActivity => 60,
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
        assert_eq!(no_cdc, ["TaxCode", "TimeActivity"]);
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
}
