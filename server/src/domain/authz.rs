//! Who may do what, where. The scope always comes from the caller's token, never from the request.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Everything, everywhere.
    Admin,
    /// Reads its scope; manages the catalogue and the facility tree there.
    NationalOfficer,
    /// Reads its district; manages its facility tree; handles alerts and assessments.
    DistrictOfficer,
    /// Runs one store and its session sites.
    DepotManager,
    /// A telemetry logger: readings for itself only.
    Device,
}

impl Role {
    /// Every role, for exhaustive authorization tests.
    pub const ALL: [Role; 5] =
        [Role::Admin, Role::NationalOfficer, Role::DistrictOfficer, Role::DepotManager, Role::Device];

    /// The stable number used in the database and the API.
    pub fn as_i32(self) -> i32 {
        match self {
            Role::Admin => 1,
            Role::NationalOfficer => 2,
            Role::DistrictOfficer => 3,
            Role::DepotManager => 4,
            Role::Device => 5,
        }
    }

    /// The inverse of [`Role::as_i32`].
    pub fn from_i32(v: i32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_i32() == v)
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::NationalOfficer => "national_officer",
            Role::DistrictOfficer => "district_officer",
            Role::DepotManager => "depot_manager",
            Role::Device => "device",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Whether a token of this role may cover the whole tree (no scope facility).
    pub fn may_be_unscoped(self) -> bool {
        matches!(self, Role::Admin | Role::NationalOfficer)
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's id (also the actor recorded on changes).
    pub token_id: String,
    /// The token's role.
    pub role: Role,
    /// The materialized path of the scope facility (`/root/.../scope/`), or `/` for the whole tree.
    pub scope_path: String,
    /// For device tokens, the device the token is bound to.
    pub device_id: Option<String>,
    /// Seals the secrets of answers recorded under this caller's request_ids; `None` for a
    /// caller that did not present its bearer secret (a web session).
    pub answer_key: Option<super::token::AnswerKey>,
}

/// Something a caller wants to do; each is checked against role and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read facilities and storage units.
    ReadFacilities,
    /// Create or change facilities.
    WriteFacilities,
    /// Create or change storage units.
    WriteStorageUnits,
    /// Read products and lots.
    ReadCatalog,
    /// Create or change products and lots.
    WriteCatalog,
    /// Create, list and revoke tokens.
    ManageTokens,
    /// Ask who one is.
    WhoAmI,
    /// Read balances, the ledger, shipments and reports.
    ReadStock,
    /// Receive, ship, transfer, adjust, count and report sessions.
    WriteStock,
    /// Set min/max stock policies.
    SetPolicies,
    /// Create, list and delete webhooks.
    ManageWebhooks,
}

impl Caller {
    /// True when the caller may see the whole tree, so "not found" can be told apart from "not yours".
    pub fn sees_everything(&self) -> bool {
        self.scope_path == "/"
    }

    /// True when a facility with this materialized path lies inside the caller's scope.
    pub fn covers(&self, facility_path: &str) -> bool {
        facility_path.starts_with(&self.scope_path)
    }

    /// Checks that the role may perform the action at all.
    pub fn require(&self, action: Action) -> Result<()> {
        use Role::*;
        let allowed = match action {
            Action::WhoAmI => true,
            Action::ReadFacilities | Action::ReadCatalog => self.role != Device,
            Action::WriteFacilities => matches!(self.role, Admin | NationalOfficer | DistrictOfficer),
            Action::WriteStorageUnits => {
                matches!(self.role, Admin | NationalOfficer | DistrictOfficer | DepotManager)
            }
            Action::WriteCatalog => matches!(self.role, Admin | NationalOfficer),
            Action::ManageTokens => self.role == Admin,
            Action::ReadStock => self.role != Device,
            Action::WriteStock => matches!(self.role, Admin | NationalOfficer | DistrictOfficer | DepotManager),
            Action::SetPolicies | Action::ManageWebhooks => {
                matches!(self.role, Admin | NationalOfficer | DistrictOfficer)
            }
        };
        if allowed { Ok(()) } else { Err(Error::PermissionDenied) }
    }

    /// Checks the role and that the facility at `facility_path` lies in scope.
    pub fn require_at(&self, action: Action, facility_path: &str) -> Result<()> {
        self.require(action)?;
        if self.covers(facility_path) { Ok(()) } else { Err(Error::PermissionDenied) }
    }

    /// The error for an object that was not found: scoped callers learn nothing about its existence.
    pub fn not_found(&self, reason: &'static str, what: &str) -> Error {
        if self.sees_everything() {
            Error::not_found(reason, format!("{what} not found"))
        } else {
            Error::PermissionDenied
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, scope: &str) -> Caller {
        Caller { token_id: "t".into(), role, scope_path: scope.into(), device_id: None, answer_key: None }
    }

    #[test]
    fn scope_is_a_path_prefix() {
        let c = caller(Role::DistrictOfficer, "/n/s/d1/");
        assert!(c.covers("/n/s/d1/"));
        assert!(c.covers("/n/s/d1/ccp/"));
        assert!(!c.covers("/n/s/d10/"));
        assert!(!c.covers("/n/s/"));
        assert!(caller(Role::Admin, "/").covers("/n/"));
    }

    #[test]
    fn not_found_hides_existence_from_scoped_callers() {
        assert_eq!(caller(Role::DepotManager, "/n/x/").not_found("NOT_FOUND", "x"), Error::PermissionDenied);
        assert!(matches!(caller(Role::Admin, "/").not_found("NOT_FOUND", "x"), Error::NotFound { .. }));
    }

    #[test]
    fn device_reads_nothing() {
        let d = caller(Role::Device, "/n/");
        assert_eq!(d.require(Action::ReadFacilities), Err(Error::PermissionDenied));
        assert_eq!(d.require(Action::ReadCatalog), Err(Error::PermissionDenied));
        assert!(d.require(Action::WhoAmI).is_ok());
    }
}
