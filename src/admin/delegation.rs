//! The delegation rules of the Management API, in one place, as pure
//! functions of the configuration before and after a change.
//!
//! Owns: "nobody can give, or reach into, more power than they hold" and the
//! rules of the built-in administrator account. A change is judged by what
//! it does to every account and rights group (the diff of two validated
//! configs), not by which method made it, so no handler can route around a
//! rule. Must not read files, sessions or the clock, and must not name a
//! password or a hash in what it returns.

use std::fmt;

use crate::config::Config;
use crate::rights::{Right, RightSet};

/// Who asks for a change: the session's user and its rights right now.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub rights: RightSet,
}

/// What a change touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Account,
    Group,
    /// A live session (closing one reaches into its rights too).
    Session,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::Group => "group",
            Kind::Session => "session",
        }
    }
}

/// One account or rights group a change creates, alters or deletes, with
/// its rights before and after (`None`: absent on that side). Carries no
/// secret, so it is what the audit trail records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    pub before: Option<RightSet>,
    pub after: Option<RightSet>,
    /// Accounts only: the password hash changed.
    pub password: bool,
    /// Accounts only: enabled before and after (`None`: absent on that side).
    pub enabled: (Option<bool>, Option<bool>),
}

impl Change {
    /// "created", "deleted" or "changed".
    pub fn verb(&self) -> &'static str {
        match (self.before, self.after) {
            (None, _) => "created",
            (_, None) => "deleted",
            _ => "changed",
        }
    }
}

/// Why a change is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The account or group holds (before or after) `right`, which the actor lacks.
    Lacks {
        right: Right,
        kind: Kind,
        name: String,
    },
    /// A rule of the built-in administrator account.
    Administrator(AdminRule),
}

/// The rules that protect the built-in administrator account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRule {
    NotDeleted,
    NotDisabled,
    OwnPasswordOnly,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Lacks { right, kind, name } => write!(
                f,
                "{} {name:?} holds or would hold \"{}\", which you do not hold",
                kind.name(),
                right.name()
            ),
            Refusal::Administrator(AdminRule::NotDeleted) => {
                f.write_str("the administrator account cannot be deleted")
            }
            Refusal::Administrator(AdminRule::NotDisabled) => {
                f.write_str("the administrator account cannot be disabled")
            }
            Refusal::Administrator(AdminRule::OwnPasswordOnly) => {
                f.write_str("only the administrator can change its own password")
            }
        }
    }
}

/// The base rule: an actor may touch something only if it holds every right
/// that thing holds before and after. Creating is `before = EMPTY`,
/// deleting `after = EMPTY`; granting a right one lacks fails on `after`.
/// Returns the first missing right in table order.
pub fn may_manage(actor: RightSet, before: RightSet, after: RightSet) -> Result<(), Right> {
    match before.union(after).minus(actor).iter().next() {
        Some(missing) => Err(missing),
        None => Ok(()),
    }
}

/// Every account and group that differs between `old` and `new`, in file
/// order (old entries first, then new ones). Accounts compare by name on
/// their groups, rights, enabled flag, password hash and client certificate.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    fn account<'c>(c: &'c Config, name: &str) -> Option<(&'c crate::config::User, RightSet)> {
        c.users
            .iter()
            .find(|u| u.name == name)
            .map(|u| (u, c.rights_of(u)))
    }
    let mut names: Vec<&str> = old.users.iter().map(|u| u.name.as_str()).collect();
    names.extend(
        new.users
            .iter()
            .map(|u| u.name.as_str())
            .filter(|n| !old.users.iter().any(|u| u.name == *n)),
    );
    for name in names {
        let (a, b) = (account(old, name), account(new, name));
        let same = match (&a, &b) {
            (Some((u, r)), Some((v, s))) => u == v && r == s,
            _ => false,
        };
        if same {
            continue;
        }
        changes.push(Change {
            kind: Kind::Account,
            name: name.to_owned(),
            before: a.as_ref().map(|(_, r)| *r),
            after: b.as_ref().map(|(_, r)| *r),
            password: matches!((&a, &b), (Some((u, _)), Some((v, _))) if u.password != v.password),
            enabled: (a.map(|(u, _)| u.enabled), b.map(|(u, _)| u.enabled)),
        });
    }
    let mut names: Vec<&str> = old.groups.iter().map(|g| g.name.as_str()).collect();
    names.extend(
        new.groups
            .iter()
            .map(|g| g.name.as_str())
            .filter(|n| old.group(n).is_none()),
    );
    for name in names {
        let (a, b) = (old.group(name), new.group(name));
        if a.is_some() && a == b {
            continue;
        }
        changes.push(Change {
            kind: Kind::Group,
            name: name.to_owned(),
            before: a.map(|g| g.rights),
            after: b.map(|g| g.rights),
            password: false,
            enabled: (None, None),
        });
    }
    changes
}

/// Judges every change against `actor`. `administrator` is the built-in
/// administrator's account name (empty: there is none).
pub fn check(actor: Actor<'_>, administrator: &str, changes: &[Change]) -> Result<(), Refusal> {
    for c in changes {
        if c.kind == Kind::Account && !administrator.is_empty() && c.name == administrator {
            if c.before.is_some() && c.after.is_none() {
                return Err(Refusal::Administrator(AdminRule::NotDeleted));
            }
            if c.enabled.0 != Some(false) && c.enabled.1 == Some(false) {
                return Err(Refusal::Administrator(AdminRule::NotDisabled));
            }
            if c.password && actor.name != administrator {
                return Err(Refusal::Administrator(AdminRule::OwnPasswordOnly));
            }
        }
        let before = c.before.unwrap_or(RightSet::EMPTY);
        let after = c.after.unwrap_or(RightSet::EMPTY);
        may_manage(actor.rights, before, after).map_err(|right| Refusal::Lacks {
            right,
            kind: c.kind,
            name: c.name.clone(),
        })?;
    }
    Ok(())
}

/// `admin.users.unlock` on account `name` (holding `rights`) needs what
/// setting its password needs, so it is judged as exactly that change.
pub fn may_unlock(
    actor: Actor<'_>,
    administrator: &str,
    name: &str,
    rights: RightSet,
) -> Result<(), Refusal> {
    let as_password_change = Change {
        kind: Kind::Account,
        name: name.to_owned(),
        before: Some(rights),
        after: Some(rights),
        password: true,
        enabled: (None, None),
    };
    check(actor, administrator, &[as_password_change])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
    const HASH2: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    fn asc() -> RightSet {
        RightSet::of(Right::AdjunctServerConnection)
    }

    fn phone_admin() -> RightSet {
        RightSet::of(Right::OneXCtiApi).with(Right::WebControlSecurity)
    }

    fn config(users: &str, groups: &str) -> Config {
        let text = format!(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\n[[rights_group]]\nname = \"Apps\"\nrights = [\"Adjunct Server Connection\", \"one-X CTI API\"]\n\n[[rights_group]]\nname = \"CTI\"\nrights = [\"one-X CTI API\"]\n{groups}\n{users}"
        );
        Config::parse(Path::new("/x/gateway.toml"), &text).unwrap()
    }

    fn user(name: &str, hash: &str, groups: &str, enabled: bool) -> String {
        format!("[[service_user]]\nname = \"{name}\"\npassword = \"{hash}\"\ngroups = [{groups}]\nenabled = {enabled}\n")
    }

    fn actor(rights: RightSet) -> Actor<'static> {
        Actor {
            name: "someone",
            rights,
        }
    }

    /// `name` holding every right (the administrator, a System Administrator).
    fn all_rights(name: &'static str) -> Actor<'static> {
        Actor {
            name,
            rights: RightSet::ALL,
        }
    }

    #[test]
    fn may_manage_needs_every_right_before_and_after() {
        let pa = phone_admin();
        let cti = RightSet::of(Right::OneXCtiApi);
        assert_eq!(may_manage(pa, RightSet::EMPTY, cti), Ok(()));
        assert_eq!(may_manage(pa, cti, RightSet::EMPTY), Ok(()));
        assert_eq!(
            may_manage(pa, cti, cti.union(asc())),
            Err(Right::AdjunctServerConnection),
            "granting a right one lacks"
        );
        assert_eq!(
            may_manage(pa, cti.union(asc()), cti),
            Err(Right::AdjunctServerConnection),
            "taking away a right one lacks"
        );
        assert_eq!(
            may_manage(RightSet::ALL, RightSet::ALL, RightSet::ALL),
            Ok(())
        );
    }

    #[test]
    fn diff_sees_rights_password_enabled_and_membership() {
        let old = config(
            &(user("a", HASH, "\"CTI\"", true) + &user("b", HASH, "\"Apps\"", true)),
            "",
        );
        assert!(diff(&old, &old).is_empty());
        let new = config(
            &(user("a", HASH2, "\"CTI\"", true) + &user("c", HASH, "", false)),
            "[[rights_group]]\nname = \"New\"\nrights = []\n",
        );
        let d = diff(&old, &new);
        let names: Vec<(&str, &str)> = d.iter().map(|c| (c.name.as_str(), c.verb())).collect();
        assert_eq!(
            names,
            vec![
                ("a", "changed"),
                ("b", "deleted"),
                ("c", "created"),
                ("New", "created")
            ]
        );
        assert!(d[0].password);
        assert_eq!(d[1].before, Some(asc().with(Right::OneXCtiApi)));
        assert_eq!(d[2].enabled, (None, Some(false)));
    }

    #[test]
    fn a_group_edit_reaches_its_members() {
        // Adding ASC to "CTI" gives it to every member account as well.
        let old = config(&user("a", HASH, "\"CTI\"", true), "");
        let new = Config::parse(
            Path::new("/x/gateway.toml"),
            &old.source.text().replacen(
                "rights = [\"one-X CTI API\"]",
                "rights = [\"one-X CTI API\", \"Adjunct Server Connection\"]",
                1,
            ),
        )
        .unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.len(), 2, "{d:?}");
        let e = check(actor(phone_admin()), "admin", &d).unwrap_err();
        assert!(matches!(
            e,
            Refusal::Lacks {
                right: Right::AdjunctServerConnection,
                ..
            }
        ));
        assert!(check(actor(phone_admin().union(asc())), "admin", &d).is_ok());
    }

    #[test]
    fn the_administrator_is_protected() {
        let old = config(
            &(user("admin", HASH, "", true) + &user("b", HASH, "\"CTI\"", true)),
            "",
        );
        assert_eq!(old.rights_of(&old.users[0]), RightSet::ALL);
        let (sys, me) = (all_rights("sysadmin"), all_rights("admin"));
        let deleted = config(&user("b", HASH, "\"CTI\"", true), "");
        let disabled = config(
            &(user("admin", HASH, "", false) + &user("b", HASH, "\"CTI\"", true)),
            "",
        );
        let new_pw = config(
            &(user("admin", HASH2, "", true) + &user("b", HASH, "\"CTI\"", true)),
            "",
        );
        for (new, rule) in [
            (&deleted, AdminRule::NotDeleted),
            (&disabled, AdminRule::NotDisabled),
        ] {
            for who in [sys, me] {
                assert_eq!(
                    check(who, "admin", &diff(&old, new)),
                    Err(Refusal::Administrator(rule))
                );
            }
        }
        assert_eq!(
            check(sys, "admin", &diff(&old, &new_pw)),
            Err(Refusal::Administrator(AdminRule::OwnPasswordOnly))
        );
        assert_eq!(check(me, "admin", &diff(&old, &new_pw)), Ok(()));
        // Anyone short of every right cannot touch the administrator at all.
        let almost = Actor {
            name: "sysadmin",
            rights: RightSet::ALL.minus(RightSet::of(Right::ReporterAdministrator)),
        };
        let regrouped = config(
            &(user("admin", HASH, "\"CTI\"", true) + &user("b", HASH, "\"CTI\"", true)),
            "",
        );
        assert!(matches!(
            check(almost, "admin", &diff(&old, &regrouped)),
            Err(Refusal::Lacks { .. })
        ));
        assert_eq!(check(sys, "admin", &diff(&old, &regrouped)), Ok(()));
    }

    #[test]
    fn refusals_never_name_a_hash() {
        let r = Refusal::Lacks {
            right: Right::AdjunctServerConnection,
            kind: Kind::Account,
            name: "app1".into(),
        };
        assert!(r.to_string().contains("Adjunct Server Connection"));
        assert!(!r.to_string().contains('$'));
    }

    #[test]
    fn unlocking_needs_what_setting_the_password_needs() {
        let cti = RightSet::of(Right::OneXCtiApi);
        assert_eq!(may_unlock(actor(phone_admin()), "admin", "b", cti), Ok(()));
        assert!(matches!(
            may_unlock(actor(phone_admin()), "admin", "app", asc()),
            Err(Refusal::Lacks {
                right: Right::AdjunctServerConnection,
                ..
            })
        ));
        let (sys, me) = (all_rights("sysadmin"), all_rights("admin"));
        assert_eq!(
            may_unlock(sys, "admin", "admin", RightSet::ALL),
            Err(Refusal::Administrator(AdminRule::OwnPasswordOnly))
        );
        assert_eq!(may_unlock(me, "admin", "admin", RightSet::ALL), Ok(()));
    }
}
