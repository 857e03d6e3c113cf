//! Giving up root once everything that needs it is done.
//!
//! Init scripts on OpenWrt and Alpine often start daemons as root. xapsd
//! needs root only to bind, to create the legacy socket in Dovecot's run
//! directory, to open the store and to read key files that only root may
//! read; a daemon that parses network input must not keep it afterwards.
//! So after those steps it switches to `daemon_user`/`daemon_group` (supplementary groups
//! first, then the group, then the user, the only order that works) and
//! then checks that the switch happened and cannot be undone. Staying root
//! takes an explicit `allow_root: true`. Started as any other user there is
//! nothing to drop.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

/// The account a root-started daemon switches to, from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    /// `None`: the user's primary group.
    pub group: Option<String>,
}

/// What to do about privileges, decided before doing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Not started as root: run as we are.
    NotRoot,
    /// Root, and `allow_root` says stay.
    StayRoot,
    /// Switch to this account.
    Drop { user: String, uid: Uid, gid: Gid },
}

/// Why privileges could not be dropped (the daemon stops).
#[derive(Debug)]
pub enum PrivilegeError {
    Lookup {
        what: String,
        source: Errno,
    },
    NoSuchUser(String),
    NoSuchGroup(String),
    /// The configured user is root itself.
    TargetIsRoot(String),
    Step {
        step: &'static str,
        source: Errno,
    },
    /// The switch reported success but the ids say otherwise.
    NotDropped(String),
    Chown {
        path: PathBuf,
        source: Errno,
    },
}

impl fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HINT: &str = "create it (e.g. `adduser -S -D -H xapsd` or `useradd --system xapsd`), set `daemon_user`/`daemon_group`, or set `allow_root: true` to stay root";
        match self {
            PrivilegeError::Lookup { what, source } => {
                write!(f, "cannot look up {what}: {source}")
            }
            PrivilegeError::NoSuchUser(name) => {
                write!(
                    f,
                    "started as root, but user `{name}` does not exist: {HINT}"
                )
            }
            PrivilegeError::NoSuchGroup(name) => {
                write!(
                    f,
                    "started as root, but group `{name}` does not exist: {HINT}"
                )
            }
            PrivilegeError::TargetIsRoot(name) => write!(
                f,
                "user `{name}` is root: name an unprivileged user, or set `allow_root: true`"
            ),
            PrivilegeError::Step { step, source } => {
                write!(f, "cannot drop root privileges: {step} failed: {source}")
            }
            PrivilegeError::NotDropped(why) => {
                write!(f, "root privileges were not dropped: {why}")
            }
            PrivilegeError::Chown { path, source } => write!(
                f,
                "cannot hand {} to the daemon's user: {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PrivilegeError {}

/// Decides from the effective uid, the config and the account lookups.
/// `resolve` maps the target to (uid, gid), or says which name is missing.
pub fn decide(
    euid: Uid,
    target: &Target,
    allow_root: bool,
    resolve: impl FnOnce(&Target) -> Result<(Uid, Gid), PrivilegeError>,
) -> Result<Plan, PrivilegeError> {
    if !euid.is_root() {
        return Ok(Plan::NotRoot);
    }
    if allow_root {
        return Ok(Plan::StayRoot);
    }
    let (uid, gid) = resolve(target)?;
    if uid.is_root() {
        return Err(PrivilegeError::TargetIsRoot(target.user.clone()));
    }
    Ok(Plan::Drop {
        user: target.user.clone(),
        uid,
        gid,
    })
}

/// Looks the target up in the system's account database.
pub fn resolve(target: &Target) -> Result<(Uid, Gid), PrivilegeError> {
    let user = User::from_name(&target.user)
        .map_err(|source| PrivilegeError::Lookup {
            what: format!("user `{}`", target.user),
            source,
        })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(target.user.clone()))?;
    let gid = match &target.group {
        None => user.gid,
        Some(name) => {
            Group::from_name(name)
                .map_err(|source| PrivilegeError::Lookup {
                    what: format!("group `{name}`"),
                    source,
                })?
                .ok_or_else(|| PrivilegeError::NoSuchGroup(name.clone()))?
                .gid
        }
    };
    Ok((user.uid, gid))
}

/// Hands `path` to the account (files the daemon creates as root and must
/// still write afterwards).
pub fn give(path: &Path, uid: Uid, gid: Gid) -> Result<(), PrivilegeError> {
    nix::unistd::chown(path, Some(uid), Some(gid)).map_err(|source| PrivilegeError::Chown {
        path: path.to_owned(),
        source,
    })
}

/// Switches to `uid`/`gid` for good: supplementary groups, group, user, in
/// that order (after setuid the others are no longer allowed), then checks.
pub fn drop_to(uid: Uid, gid: Gid) -> Result<(), PrivilegeError> {
    let step = |step: &'static str| move |source| PrivilegeError::Step { step, source };
    nix::unistd::setgroups(&[gid]).map_err(step("setgroups"))?;
    nix::unistd::setgid(gid).map_err(step("setgid"))?;
    nix::unistd::setuid(uid).map_err(step("setuid"))?;
    verify(uid, gid)
}

fn verify(uid: Uid, gid: Gid) -> Result<(), PrivilegeError> {
    use nix::unistd::{getegid, geteuid, getgid, getgroups, getuid};
    let ids = (getuid(), geteuid(), getgid(), getegid());
    if ids != (uid, uid, gid, gid) {
        return Err(PrivilegeError::NotDropped(format!(
            "ids are uid {} euid {} gid {} egid {}",
            ids.0, ids.1, ids.2, ids.3
        )));
    }
    let groups = getgroups().map_err(|source| PrivilegeError::Step {
        step: "getgroups",
        source,
    })?;
    if groups.iter().any(|g| *g != gid) {
        return Err(PrivilegeError::NotDropped(
            "supplementary groups remain".into(),
        ));
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::NotDropped(
            "setuid(0) still succeeds".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            user: "xapsd".into(),
            group: None,
        }
    }

    fn found(_: &Target) -> Result<(Uid, Gid), PrivilegeError> {
        Ok((Uid::from_raw(100), Gid::from_raw(101)))
    }

    fn missing(t: &Target) -> Result<(Uid, Gid), PrivilegeError> {
        Err(PrivilegeError::NoSuchUser(t.user.clone()))
    }

    #[test]
    fn only_root_drops_and_only_allow_root_stays() {
        let user = Uid::from_raw(1000);
        let root = Uid::from_raw(0);
        assert_eq!(
            decide(user, &target(), false, missing).unwrap(),
            Plan::NotRoot
        );
        assert_eq!(decide(user, &target(), true, found).unwrap(), Plan::NotRoot);
        assert_eq!(
            decide(root, &target(), true, missing).unwrap(),
            Plan::StayRoot
        );
        assert_eq!(
            decide(root, &target(), false, found).unwrap(),
            Plan::Drop {
                user: "xapsd".into(),
                uid: Uid::from_raw(100),
                gid: Gid::from_raw(101)
            }
        );
        let err = decide(root, &target(), false, missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("user `xapsd` does not exist") && err.contains("allow_root"),
            "{err}"
        );
        let as_root = |_: &Target| Ok((Uid::from_raw(0), Gid::from_raw(0)));
        assert!(matches!(
            decide(root, &target(), false, as_root),
            Err(PrivilegeError::TargetIsRoot(_))
        ));
    }

    #[test]
    fn resolves_real_accounts_and_names_missing_ones() {
        let root = Target {
            user: "root".into(),
            group: None,
        };
        assert_eq!(resolve(&root).unwrap().0, Uid::from_raw(0));
        let nobody = Target {
            user: "no-such-user-xapsd-test".into(),
            group: None,
        };
        assert!(matches!(
            resolve(&nobody),
            Err(PrivilegeError::NoSuchUser(_))
        ));
        let bad_group = Target {
            user: "root".into(),
            group: Some("no-such-group-xapsd-test".into()),
        };
        assert!(matches!(
            resolve(&bad_group),
            Err(PrivilegeError::NoSuchGroup(_))
        ));
    }
}
