//! The sixteen service rights and `RightSet`, a 16-bit set of them.
//!
//! Owns the display names (the only spelling config files and the wire use).
//! Must not know which method needs which right: that is `catalog`'s table.

use std::fmt;

/// One service right of the telephone system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Right {
    VoicemailProBasic,
    VoicemailProStandard,
    VoicemailProAdministrator,
    OneXPortalAdministrator,
    OneXPortalSuperUser,
    WebControlAdministrator,
    WebControlSecurity,
    WebRtcGatewayAdministrator,
    ManagementApiRead,
    ManagementApiWrite,
    MediaManagerAdministrator,
    MediaManagerStandard,
    ReporterAdministrator,
    OneXCtiApi,
    AdjunctServerConnection,
    TurnServerConnection,
}

/// Every right with its exact display name, in bit order. The one table.
const TABLE: [(Right, &str); 16] = [
    (Right::VoicemailProBasic, "Voicemail Pro Basic"),
    (Right::VoicemailProStandard, "Voicemail Pro Standard"),
    (
        Right::VoicemailProAdministrator,
        "Voicemail Pro Administrator",
    ),
    (Right::OneXPortalAdministrator, "one-X Portal Administrator"),
    (Right::OneXPortalSuperUser, "one-X Portal Super User"),
    (Right::WebControlAdministrator, "Web Control Administrator"),
    (Right::WebControlSecurity, "Web Control Security"),
    (
        Right::WebRtcGatewayAdministrator,
        "WebRTC Gateway Administrator",
    ),
    (Right::ManagementApiRead, "Management API Read"),
    (Right::ManagementApiWrite, "Management API Write"),
    (
        Right::MediaManagerAdministrator,
        "Media Manager Administrator",
    ),
    (Right::MediaManagerStandard, "Media Manager Standard"),
    (Right::ReporterAdministrator, "Reporter Administrator"),
    (Right::OneXCtiApi, "one-X CTI API"),
    (Right::AdjunctServerConnection, "Adjunct Server Connection"),
    (Right::TurnServerConnection, "TURN Server Connection"),
];

impl Right {
    /// All rights in bit order.
    pub fn all() -> impl Iterator<Item = Right> {
        TABLE.iter().map(|(r, _)| *r)
    }

    /// The exact display name, as configs and the wire spell it.
    pub const fn name(self) -> &'static str {
        TABLE[self as usize].1
    }

    /// Looks a right up by its exact display name.
    pub fn from_name(name: &str) -> Option<Right> {
        TABLE.iter().find(|(_, n)| *n == name).map(|(r, _)| *r)
    }

    const fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of rights; copying it is free and checking it is one AND.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RightSet(u16);

impl RightSet {
    pub const EMPTY: RightSet = RightSet(0);
    pub const ALL: RightSet = RightSet(u16::MAX);

    pub const fn from_bits(bits: u16) -> Self {
        RightSet(bits)
    }

    pub const fn bits(self) -> u16 {
        self.0
    }

    pub const fn of(right: Right) -> Self {
        RightSet(right.bit())
    }

    pub const fn with(self, right: Right) -> Self {
        RightSet(self.0 | right.bit())
    }

    pub const fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    pub const fn union(self, other: RightSet) -> Self {
        RightSet(self.0 | other.0)
    }

    pub const fn intersects(self, other: RightSet) -> bool {
        self.0 & other.0 != 0
    }

    /// True when every right in `other` is also in `self`.
    pub const fn includes(self, other: RightSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights of `self` that `other` lacks.
    pub const fn minus(self, other: RightSet) -> Self {
        RightSet(self.0 & !other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::all().filter(move |r| self.contains(*r))
    }

    /// Display names in table order, for answers and audit records.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Right::name).collect()
    }
}

impl FromIterator<Right> for RightSet {
    fn from_iter<I: IntoIterator<Item = Right>>(iter: I) -> Self {
        iter.into_iter().fold(RightSet::EMPTY, RightSet::with)
    }
}

impl fmt::Debug for RightSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Right::name)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bits_are_distinct() {
        let mut seen = RightSet::EMPTY;
        for r in Right::all() {
            assert_eq!(Right::from_name(r.name()), Some(r));
            assert!(!seen.contains(r));
            seen = seen.with(r);
        }
        assert_eq!(seen, RightSet::ALL);
        assert_eq!(Right::all().count(), 16);
    }

    #[test]
    fn unknown_and_miscased_names_are_not_rights() {
        assert_eq!(Right::from_name("one-x cti api"), None);
        assert_eq!(Right::from_name("TURN Server Connection "), None);
    }

    #[test]
    fn set_algebra() {
        let a = RightSet::of(Right::OneXCtiApi).with(Right::AdjunctServerConnection);
        let b = RightSet::of(Right::OneXCtiApi);
        assert!(a.includes(b));
        assert!(!b.includes(a));
        assert_eq!(a.minus(b), RightSet::of(Right::AdjunctServerConnection));
        assert_eq!(b.names(), vec!["one-X CTI API"]);
    }
}
