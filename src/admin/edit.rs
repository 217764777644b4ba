//! Edits of the config text with `toml_edit`, so the operator's comments,
//! order and layout survive every change made through the Management API.
//!
//! Owns the shape of `[[service_user]]`, `[[rights_group]]` and
//! `[network_topology]` in the document. Must not judge an edit: the result
//! is validated with `Config::parse` and judged by `delegation` afterwards.

use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

/// The repeated sections the API edits, by their TOML key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Users,
    Groups,
}

impl Section {
    const fn key(self) -> &'static str {
        match self {
            Section::Users => "service_user",
            Section::Groups => "rights_group",
        }
    }

    const fn what(self) -> &'static str {
        match self {
            Section::Users => "service user",
            Section::Groups => "rights group",
        }
    }
}

/// Why an edit cannot be made; the text is for the client (-32602).
pub type EditError = String;

/// Parses the config text for editing.
pub fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|_| "the config file is not valid TOML".to_owned())
}

fn entries(
    doc: &mut DocumentMut,
    section: Section,
) -> Result<Option<&mut ArrayOfTables>, EditError> {
    match doc.get_mut(section.key()) {
        None => Ok(None),
        Some(Item::ArrayOfTables(a)) => Ok(Some(a)),
        Some(_) => Err(format!(
            "{} entries are not written as [[{}]] tables; edit the file by hand",
            section.what(),
            section.key()
        )),
    }
}

fn name_is(t: &Table, name: &str) -> bool {
    t.get("name").and_then(Item::as_str) == Some(name)
}

/// The `[[section]]` table whose `name` is `name`.
pub fn find<'d>(
    doc: &'d mut DocumentMut,
    section: Section,
    name: &str,
) -> Result<&'d mut Table, EditError> {
    entries(doc, section)?
        .and_then(|a| a.iter_mut().find(|t| name_is(t, name)))
        .ok_or_else(|| format!("no {} named {name:?}", section.what()))
}

/// Appends a `[[section]]` table right after the last one of its kind.
pub fn append(
    doc: &mut DocumentMut,
    section: Section,
    name: &str,
    mut table: Table,
) -> Result<(), EditError> {
    let existing = entries(doc, section)?;
    if existing
        .as_ref()
        .is_some_and(|a| a.iter().any(|t| name_is(t, name)))
    {
        return Err(format!(
            "a {} named {name:?} already exists",
            section.what()
        ));
    }
    let mut fresh = Table::new();
    fresh.insert("name", value(name));
    for (k, v) in table.iter_mut() {
        fresh.insert(&k, std::mem::take(v));
    }
    match existing {
        Some(a) => {
            // Same position as the last entry: the stable sort on output
            // puts it right after that one, not at the end of the file.
            let last = a.iter().filter_map(Table::position).max();
            if let Some(p) = last {
                fresh.set_position(Some(p));
            }
            a.push(fresh);
        }
        None => {
            let mut a = ArrayOfTables::new();
            a.push(fresh);
            doc.insert(section.key(), Item::ArrayOfTables(a));
        }
    }
    Ok(())
}

/// Removes the `[[section]]` table named `name`.
pub fn remove(doc: &mut DocumentMut, section: Section, name: &str) -> Result<(), EditError> {
    let a = entries(doc, section)?;
    let index = a
        .as_ref()
        .and_then(|a| a.iter().position(|t| name_is(t, name)))
        .ok_or_else(|| format!("no {} named {name:?}", section.what()))?;
    if let Some(a) = a {
        a.remove(index);
        if a.is_empty() {
            doc.remove(section.key());
        }
    }
    Ok(())
}

/// A TOML array of strings.
pub fn strings<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Item {
    value(Array::from_iter(
        items.into_iter().map(|s| s.as_ref().to_owned()),
    ))
}

/// Sets `key` of `[network_topology]`, creating the table if needed.
pub fn set_topology(doc: &mut DocumentMut, key: &str, urls: &[String]) -> Result<(), EditError> {
    let t = doc
        .entry("network_topology")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| "network_topology is not a table".to_owned())?;
    t.insert(key, strings(urls));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# the operator's notes\n[server]\nlisten = \"127.0.0.1:1\" # port\n\n[[rights_group]]\nname = \"A\"\nrights = []\n\n# users below\n[[service_user]]\nname = \"u1\" # first\npassword = \"h\"\n\n[portal]\ndemo_page = false\n";

    #[test]
    fn edits_keep_comments_and_order() {
        let mut doc = parse(TEXT).unwrap();
        let mut t = Table::new();
        t.insert("password", value("h2"));
        t.insert("groups", strings(["A"]));
        append(&mut doc, Section::Users, "u2", t).unwrap();
        find(&mut doc, Section::Groups, "A").unwrap()["rights"] = strings(["one-X CTI API"]);
        set_topology(&mut doc, "stun_urls", &["stun:x".into()]).unwrap();
        let out = doc.to_string();
        assert!(
            out.starts_with("# the operator's notes\n[server]\nlisten = \"127.0.0.1:1\" # port\n"),
            "{out}"
        );
        assert!(
            out.contains("# users below\n[[service_user]]\nname = \"u1\" # first\n"),
            "{out}"
        );
        let u2 = out.find("name = \"u2\"").unwrap();
        assert!(
            u2 < out.find("[portal]").unwrap(),
            "new user after the last one:\n{out}"
        );
        assert!(out.contains("rights = [\"one-X CTI API\"]"), "{out}");
        assert!(
            out.contains("[network_topology]\nstun_urls = [\"stun:x\"]"),
            "{out}"
        );
        assert!(append(&mut doc, Section::Users, "u2", Table::new()).is_err());
        remove(&mut doc, Section::Users, "u1").unwrap();
        remove(&mut doc, Section::Users, "u2").unwrap();
        assert!(!doc.to_string().contains("service_user"));
        assert!(remove(&mut doc, Section::Users, "u1").is_err());
        append(&mut doc, Section::Users, "u3", Table::new()).unwrap();
        assert!(doc.to_string().contains("[[service_user]]\nname = \"u3\""));
    }

    #[test]
    fn inline_arrays_are_not_edited() {
        let mut doc = parse("service_user = [{ name = \"x\", password = \"h\" }]\n").unwrap();
        assert!(find(&mut doc, Section::Users, "x")
            .unwrap_err()
            .contains("by hand"));
    }
}
