//! Accounts: which can write while `read_only` is ON, and whether mmvip's own account
//! has what the role hooks do.

use std::collections::{BTreeMap, BTreeSet};

use super::{Check, Facts};
use crate::caps::sql::{SqlError, describe};
use crate::log::Level;
use crate::mariadb::{Session, read_only_bypass_privileges};

/// Hosts an account can only be used from on this node itself: not a client's way
/// in through the VIP.
const LOCAL_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

pub(super) fn check(session: &mut Session, facts: &Facts, checks: &mut Vec<Check>) {
    let own = match own_account(session) {
        Ok(own) => own,
        Err(error) => {
            checks.push(Check::fail(
                "accounts.mmvip",
                format!("cannot read mmvip's own account ({})", describe(&error)),
                "see the mariadb check",
            ));
            return;
        }
    };
    checks.push(mmvip_privileges(facts.version, &own));
    checks.push(bypassing(session, facts.version, &own.account));
}

/// mmvip's account and the privileges its sessions have (its own and its default
/// role's), as `SHOW GRANTS` lists them.
struct Own {
    account: (String, String),
    global: BTreeSet<String>,
    mysql_database: BTreeSet<String>,
}

fn own_account(session: &mut Session) -> Result<Own, SqlError> {
    let current = session
        .value(Level::Debug, "SELECT CURRENT_USER()")?
        .unwrap_or_default();
    let (user, host) = current.rsplit_once('@').unwrap_or((&current, ""));
    let mut own = Own {
        account: (user.to_string(), host.to_string()),
        global: BTreeSet::new(),
        mysql_database: BTreeSet::new(),
    };
    for line in grant_lines(session, "SHOW GRANTS")? {
        if let Some((privileges, on)) = parse_grant(&line) {
            match on.as_str() {
                "*.*" => own.global.extend(privileges),
                "`mysql`.*" => own.mysql_database.extend(privileges),
                _ => {}
            }
        }
    }
    Ok(own)
}

fn grant_lines(session: &mut Session, statement: &str) -> Result<Vec<String>, SqlError> {
    Ok(session
        .rows(Level::Debug, statement)?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// `GRANT SELECT, PROCESS ON *.* TO ...` → (`[SELECT, PROCESS]`, `*.*`); role grants
/// (`GRANT role TO ...`) are not privileges.
fn parse_grant(line: &str) -> Option<(Vec<String>, String)> {
    let rest = line.strip_prefix("GRANT ")?;
    let (privileges, rest) = rest.split_once(" ON ")?;
    let (on, _) = rest.split_once(" TO ")?;
    // Column lists (`SELECT (a, b)`) only appear on tables, never on `*.*`.
    let privileges = privileges
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    Some((privileges, on.trim().to_string()))
}

/// What the role hooks do, and the privileges (any one) each needs on a server of
/// `version`.
fn needs(version: (u32, u32, u32)) -> Vec<(&'static str, Vec<&'static str>)> {
    let fine_grained = version >= (10, 5, 2);
    let mut needs = vec![
        (
            "set read_only",
            // READ_ONLY ADMIN first: the name 10.11 grants it by, shown in the fix.
            [
                &["READ_ONLY ADMIN"][..],
                read_only_bypass_privileges(version),
            ]
            .concat(),
        ),
        (
            "kill sessions",
            if fine_grained {
                vec!["CONNECTION ADMIN", "SUPER"]
            } else {
                vec!["SUPER"]
            },
        ),
        ("see every session", vec!["PROCESS"]),
    ];
    needs.push((
        "read replication status",
        if version >= (10, 5, 9) {
            vec!["SLAVE MONITOR", "REPLICA MONITOR", "SUPER"]
        } else if fine_grained {
            vec!["REPLICATION SLAVE ADMIN", "SUPER"]
        } else {
            vec!["REPLICATION CLIENT", "SUPER"]
        },
    ));
    needs.push((
        "start replication",
        if fine_grained {
            vec!["REPLICATION SLAVE ADMIN", "SUPER"]
        } else {
            vec!["SUPER"]
        },
    ));
    needs.push(("disable and enable events", vec!["EVENT"]));
    needs
}

fn mmvip_privileges(version: (u32, u32, u32), own: &Own) -> Check {
    const NAME: &str = "accounts.mmvip";
    let account = show_account(&own.account);
    let all = own.global.contains("ALL PRIVILEGES");
    let mut missing: Vec<(String, &str)> = needs(version)
        .into_iter()
        .filter(|(_, any)| !all && !any.iter().any(|p| own.global.contains(*p)))
        .map(|(what, any)| (any[0].to_string(), what))
        .collect();
    // information_schema shows other accounts' privileges only to a reader of the
    // mysql database; backup needs them to kill sessions that bypass read_only.
    let reads_mysql = all
        || own.global.contains("SELECT")
        || own.mysql_database.contains("SELECT")
        || own.mysql_database.contains("ALL PRIVILEGES");
    if !reads_mysql {
        missing.push((
            "SELECT".to_string(),
            "see which accounts bypass read_only (on mysql.*)",
        ));
    }
    if missing.is_empty() {
        return Check::pass(
            NAME,
            format!("mmvip's account {account} has every privilege the role hooks use"),
        );
    }
    let listed: Vec<String> = missing
        .iter()
        .map(|(privilege, what)| format!("{privilege} ({what})"))
        .collect();
    let global: Vec<&str> = missing
        .iter()
        .filter(|(_, what)| !what.contains("mysql.*"))
        .map(|(privilege, _)| privilege.as_str())
        .collect();
    let mut grants = Vec::new();
    if !global.is_empty() {
        grants.push(format!("GRANT {} ON *.* TO {account}", global.join(", ")));
    }
    if !reads_mysql {
        grants.push(format!("GRANT SELECT ON mysql.* TO {account}"));
    }
    Check::fail(
        NAME,
        format!("mmvip's account {account} lacks {}", listed.join(", ")),
        format!(
            "{} — the role hooks fail at the step that needs each: a demotion that cannot set read_only or kill the sessions holding it up leaves this node writable",
            grants.join("; ")
        ),
    )
}

/// How an account can write while `read_only` is ON: a privilege of its own, or one
/// of a role it can enable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Bypass {
    Privilege(String),
    Role(String),
}

/// Accounts other than mmvip's own that can write while `read_only` is ON, directly
/// or through a role they can enable.
fn bypassing(session: &mut Session, version: (u32, u32, u32), own: &(String, String)) -> Check {
    const NAME: &str = "accounts.bypass_read_only";
    let found = match bypassing_accounts(session, version) {
        Ok(found) => found,
        Err(error) => {
            return Check::fail(
                NAME,
                format!(
                    "cannot tell which accounts can write while read_only is ON ({})",
                    describe(&error)
                ),
                "grant mmvip's account SELECT on mysql.* (see accounts.mmvip)",
            );
        }
    };
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for (account, ways) in found {
        if &account == own {
            continue;
        }
        if LOCAL_HOSTS.contains(&account.1.as_str()) {
            local.push(show_account(&account));
        } else {
            remote.push((show_account(&account), ways));
        }
    }
    let own = show_account(own);
    if remote.is_empty() {
        let also = if local.is_empty() {
            String::new()
        } else {
            format!(", and local ones only: {}", local.join(", "))
        };
        return Check::pass(
            NAME,
            format!(
                "no client account can write while read_only is ON (mmvip's own {own} can{also})"
            ),
        );
    }
    let listed: Vec<String> = remote
        .iter()
        .map(|(account, ways)| {
            let ways: Vec<String> = ways
                .iter()
                .map(|way| match way {
                    Bypass::Privilege(privilege) => privilege.clone(),
                    Bypass::Role(role) => format!("role {role}"),
                })
                .collect();
            format!("{account} ({})", ways.join(", "))
        })
        .collect();
    let revokes: Vec<String> = remote
        .iter()
        .flat_map(|(account, ways)| {
            ways.iter().map(move |way| match way {
                Bypass::Privilege(privilege) => format!("REVOKE {privilege} ON *.* FROM {account}"),
                Bypass::Role(role) => format!("REVOKE {role} FROM {account}"),
            })
        })
        .collect();
    Check::fail(
        NAME,
        format!(
            "accounts that can write while read_only is ON: {}",
            listed.join(", ")
        ),
        format!(
            "{} (unless it must write on a read-only node) — backup kills their sessions at a demotion, but a new session still writes on the demoted node beside the new writer, and the nodes diverge",
            revokes.join("; ")
        ),
    )
}

/// Every account with a way to write while `read_only` is ON.
fn bypassing_accounts(
    session: &mut Session,
    version: (u32, u32, u32),
) -> Result<BTreeMap<(String, String), BTreeSet<Bypass>>, SqlError> {
    let bypass = read_only_bypass_privileges(version);
    let mut found: BTreeMap<(String, String), BTreeSet<Bypass>> = BTreeMap::new();
    for row in session.rows(
        Level::Debug,
        "SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES",
    )? {
        let mut cells = row.into_iter().map(Option::unwrap_or_default);
        let grantee = cells.next().unwrap_or_default();
        let privilege = cells.next().unwrap_or_default();
        if bypass.contains(&privilege.as_str()) {
            found
                .entry(split_grantee(&grantee))
                .or_default()
                .insert(Bypass::Privilege(privilege));
        }
    }
    // Roles are not in USER_PRIVILEGES. An account can enable any role granted to it,
    // and SHOW GRANTS FOR a role includes the roles granted to that role.
    let mut role_bypasses: BTreeMap<String, bool> = BTreeMap::new();
    for row in session.rows(
        Level::Debug,
        "SELECT User, Host, Role FROM mysql.roles_mapping WHERE Host <> ''",
    )? {
        let mut cells = row.into_iter().map(Option::unwrap_or_default);
        let (user, host, role) = (
            cells.next().unwrap_or_default(),
            cells.next().unwrap_or_default(),
            cells.next().unwrap_or_default(),
        );
        if !role_bypasses.contains_key(&role) {
            let statement = format!(
                "SHOW GRANTS FOR '{}'",
                role.replace('\\', "\\\\").replace('\'', "''")
            );
            let bypasses = grant_lines(session, &statement)?
                .iter()
                .filter_map(|line| parse_grant(line))
                .filter(|(_, on)| on == "*.*")
                .flat_map(|(privileges, _)| privileges)
                .any(|p| p == "ALL PRIVILEGES" || bypass.contains(&p.as_str()));
            role_bypasses.insert(role.clone(), bypasses);
        }
        if role_bypasses[&role] {
            found
                .entry((user, host))
                .or_default()
                .insert(Bypass::Role(role));
        }
    }
    Ok(found)
}

/// `'user'@'host'` → (`user`, `host`).
fn split_grantee(grantee: &str) -> (String, String) {
    let unquote = |text: &str| text.trim_matches('\'').replace("''", "'");
    match grantee.rsplit_once('@') {
        Some((user, host)) => (unquote(user), unquote(host)),
        None => (unquote(grantee), String::new()),
    }
}

fn show_account((user, host): &(String, String)) -> String {
    format!("'{user}'@'{host}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_lines_give_privileges_and_where() {
        let (privileges, on) =
            parse_grant("GRANT PROCESS, SLAVE MONITOR ON *.* TO `mmvip`@`localhost` IDENTIFIED BY PASSWORD '*AB'").unwrap();
        assert_eq!(privileges, ["PROCESS", "SLAVE MONITOR"]);
        assert_eq!(on, "*.*");
        let (privileges, on) =
            parse_grant("GRANT SELECT ON `mysql`.* TO `mmvip`@`localhost`").unwrap();
        assert_eq!(
            (privileges[0].as_str(), on.as_str()),
            ("SELECT", "`mysql`.*")
        );
        assert!(parse_grant("GRANT `writer` TO `app`@`%`").is_none());
        assert_eq!(
            split_grantee("'o''k'@'10.%'"),
            ("o'k".to_string(), "10.%".to_string())
        );
    }

    #[test]
    fn super_stops_counting_for_read_only_in_10_11() {
        let set = |version| needs(version)[0].1.clone();
        assert!(set((10, 6, 20)).contains(&"SUPER"));
        assert!(!set((10, 11, 0)).contains(&"SUPER"));
        assert_eq!(needs((10, 11, 9))[3].1[0], "SLAVE MONITOR");
        assert_eq!(needs((10, 4, 30))[1].1, ["SUPER"]);
    }
}
