//! User and group names for the ids the kernel reports, from /etc/passwd and /etc/group,
//! re-read when those files change (checked at most every few seconds).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const RECHECK: Duration = Duration::from_secs(5);

pub struct Users {
    passwd: IdFile,
    group: IdFile,
}

impl Default for Users {
    fn default() -> Self {
        Users::new("/etc/passwd".into(), "/etc/group".into())
    }
}

impl Users {
    pub fn new(passwd: PathBuf, group: PathBuf) -> Users {
        Users {
            passwd: IdFile::new(passwd),
            group: IdFile::new(group),
        }
    }

    /// The user's name, or the id as text when no name is known (as `ls -l` shows it);
    /// shared, as every process of the user holds it.
    pub fn user(&mut self, uid: u32) -> Arc<str> {
        self.passwd.name(uid)
    }

    pub fn group(&mut self, gid: u32) -> Arc<str> {
        self.group.name(gid)
    }
}

/// One `name:x:id:...` file.
struct IdFile {
    path: PathBuf,
    names: HashMap<u32, Arc<str>>,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

impl IdFile {
    fn new(path: PathBuf) -> IdFile {
        IdFile {
            path,
            names: HashMap::new(),
            modified: None,
            checked: None,
        }
    }

    fn name(&mut self, id: u32) -> Arc<str> {
        self.refresh();
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string().into())
    }

    fn refresh(&mut self) {
        if self.checked.is_some_and(|t| t.elapsed() < RECHECK) {
            return;
        }
        self.checked = Some(Instant::now());
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_some() && modified == self.modified {
            return;
        }
        self.modified = modified;
        self.names = std::fs::read_to_string(&self.path)
            .map(|text| parse(&text))
            .unwrap_or_default();
    }
}

/// `name:password:id:...` lines; the first name of an id wins, as getpwuid answers.
fn parse(text: &str) -> HashMap<u32, Arc<str>> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(id) = id.parse::<u32>()
            && !name.is_empty()
            && !name.starts_with('#')
        {
            names.entry(id).or_insert_with(|| name.into());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_passwd_lines() {
        let names = parse(
            "root:x:0:0:root:/root:/bin/bash\n#c:x:5:5\nbad line\nalice:x:1000:1000::/home/alice:/bin/sh\ndup:x:0:0\n",
        );
        assert_eq!(names.get(&0).map(|n| &**n), Some("root"));
        assert_eq!(names.get(&1000).map(|n| &**n), Some("alice"));
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn unknown_ids_read_as_numbers_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "root:x:0:0::/:/bin/sh\n").unwrap();
        let mut users = Users::new(passwd.clone(), dir.path().join("group"));
        assert_eq!(&*users.user(0), "root");
        assert_eq!(&*users.user(4242), "4242");
        assert_eq!(&*users.group(0), "0");
        std::fs::write(
            &passwd,
            "root:x:0:0::/:/bin/sh\nbob:x:4242:4242::/:/bin/sh\n",
        )
        .unwrap();
        // A changed file is read again once the recheck interval has passed.
        users.passwd.checked = None;
        users.passwd.modified = None;
        assert_eq!(&*users.user(4242), "bob");
    }
}
