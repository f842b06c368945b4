//! The process tree of a device, built from its `DeviceProcessEvents` rows (pure: no I/O).
//!
//! Each row describes a created process (`ProcessId`, `ProcessCreationTime`, …), its parent
//! (`InitiatingProcess*`) and grandparent (`InitiatingProcessParent*`). A process is linked to the
//! process of the parent's id that was running when it started: process ids are reused, so the id
//! alone is not enough. A parent with no row of its own (started before the rows asked for, or
//! never recorded) is still shown, *inferred* from what its children's rows say about it. A
//! process that runs a new program (`exec`: same id, same start) is shown below the program it
//! replaced.
//!
//! Nodes are only ever linked to nodes created before them, so a tree cannot have cycles
//! whatever the rows say.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

/// The columns [`Event::from_row`] reads: the `project` list of the query.
pub const COLUMNS: &[&str] = &[
    "Timestamp",
    "ProcessId",
    "ProcessCreationTime",
    "FileName",
    "FolderPath",
    "ProcessCommandLine",
    "AccountDomain",
    "AccountName",
    "SHA256",
    "InitiatingProcessId",
    "InitiatingProcessCreationTime",
    "InitiatingProcessFileName",
    "InitiatingProcessFolderPath",
    "InitiatingProcessCommandLine",
    "InitiatingProcessAccountDomain",
    "InitiatingProcessAccountName",
    "InitiatingProcessSHA256",
    "InitiatingProcessParentId",
    "InitiatingProcessParentCreationTime",
    "InitiatingProcessParentFileName",
];

/// How far a parent's start time as a child's row gives it may be from the start time of the
/// parent's own row: Windows logs give the parent's time to the second only.
const START_TOLERANCE: TimeDelta = TimeDelta::seconds(1);

/// What a row says about one process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Image {
    pub pid: i64,
    pub started: Option<DateTime<Utc>>,
    pub file_name: String,
    pub folder_path: String,
    pub command_line: String,
    /// `DOMAIN\user`, or the user alone.
    pub account: String,
    pub sha256: String,
}

/// One process-creation row.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The row's `Timestamp`.
    pub time: DateTime<Utc>,
    pub process: Image,
    pub parent: Option<Image>,
    pub grandparent: Option<Image>,
}

impl Event {
    /// The event of one hunting row (`columns` name its cells); `None` without a time or a
    /// process id.
    pub fn from_row(columns: &[String], row: &[Value]) -> Option<Event> {
        let cell = |name: &str| {
            columns
                .iter()
                .position(|c| c == name)
                .and_then(|i| row.get(i))
                .unwrap_or(&Value::Null)
        };
        let text = |name: &str| match cell(name) {
            Value::String(s) => s.trim().to_string(),
            _ => String::new(),
        };
        let pid = |name: &str| cell(name).as_i64();
        let time = |name: &str| {
            cell(name)
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let account = |domain: &str, name: &str| match (text(domain), text(name)) {
            (d, n) if d.is_empty() || n.is_empty() => n,
            (d, n) => format!("{d}\\{n}"),
        };
        let event_time = time("Timestamp")?;
        let process = Image {
            pid: pid("ProcessId")?,
            started: time("ProcessCreationTime").or(Some(event_time)),
            file_name: text("FileName"),
            folder_path: text("FolderPath"),
            command_line: text("ProcessCommandLine"),
            account: account("AccountDomain", "AccountName"),
            sha256: text("SHA256"),
        };
        let parent = pid("InitiatingProcessId").map(|pid| Image {
            pid,
            started: time("InitiatingProcessCreationTime"),
            file_name: text("InitiatingProcessFileName"),
            folder_path: text("InitiatingProcessFolderPath"),
            command_line: text("InitiatingProcessCommandLine"),
            account: account(
                "InitiatingProcessAccountDomain",
                "InitiatingProcessAccountName",
            ),
            sha256: text("InitiatingProcessSHA256"),
        });
        let grandparent = pid("InitiatingProcessParentId").map(|pid| Image {
            pid,
            started: time("InitiatingProcessParentCreationTime"),
            file_name: text("InitiatingProcessParentFileName"),
            ..Image::default()
        });
        Some(Event {
            time: event_time,
            process,
            parent,
            grandparent,
        })
    }

    /// When the process started (its creation time, else the row's time).
    fn start(&self) -> DateTime<Utc> {
        self.process.started.unwrap_or(self.time)
    }
}

/// One process of the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub image: Image,
    /// Known only from its children's rows, not from a row of its own.
    pub inferred: bool,
    /// The same process as its parent, running a new program (`exec`): same id, same start.
    pub exec: bool,
    pub parent: Option<usize>,
    /// In order of start.
    pub children: Vec<usize>,
}

/// Processes and how they descend from each other.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// Processes without a known parent, in order of start.
    pub roots: Vec<usize>,
    /// Rows left out because the tree was full.
    pub dropped: usize,
}

impl Tree {
    /// The tree of `events` (in any order), with at most `max_nodes` processes.
    pub fn build(mut events: Vec<Event>, max_nodes: usize) -> Tree {
        events.sort_by_key(|e| (e.start(), e.time));
        let mut builder = Builder {
            tree: Tree::default(),
            by_pid: HashMap::new(),
            inferred: HashMap::new(),
        };
        for event in events {
            // A row adds its process and at most two inferred ancestors.
            if builder.tree.nodes.len() + 3 > max_nodes {
                builder.tree.dropped += 1;
                continue;
            }
            // The parent first: a node only ever points to an older one.
            let start = event.start();
            let pid = event.process.pid;
            let exec_of = builder.by_pid.get(&pid).and_then(|same| {
                same.iter()
                    .rev()
                    .copied()
                    .find(|&n| builder.tree.nodes[n].image.started == Some(start))
            });
            let parent = match exec_of {
                Some(previous) => Some(previous),
                None => event
                    .parent
                    .map(|p| builder.resolve(p, start, event.grandparent)),
            };
            let node = builder.push(event.process, false, parent);
            builder.tree.nodes[node].exec = exec_of.is_some();
            builder.by_pid.entry(pid).or_default().push(node);
        }
        let mut tree = builder.tree;
        let start = |n: &usize| tree.nodes[*n].image.started;
        let mut roots: Vec<usize> = (0..tree.nodes.len())
            .filter(|&n| tree.nodes[n].parent.is_none())
            .collect();
        roots.sort_by_key(start);
        let mut children: Vec<Vec<usize>> = tree.nodes.iter().map(|n| n.children.clone()).collect();
        for list in &mut children {
            list.sort_by_key(start);
        }
        for (node, list) in tree.nodes.iter_mut().zip(children) {
            node.children = list;
        }
        tree.roots = roots;
        tree
    }

    /// The process `pid` that was running at `time`: the last one of that id started by then
    /// (allowing for the second-only times of some logs), else the one started closest to it.
    pub fn find(&self, pid: i64, time: Option<DateTime<Utc>>) -> Option<usize> {
        let mut candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].image.pid == pid)
            .collect();
        // Rows of its own say more than what children's rows infer.
        candidates.sort_by_key(|&n| (!self.nodes[n].inferred, self.nodes[n].image.started));
        let Some(time) = time else {
            return candidates.last().copied();
        };
        let started_by = candidates
            .iter()
            .rev()
            .find(|&&n| {
                self.nodes[n]
                    .image
                    .started
                    .is_some_and(|s| s <= time + START_TOLERANCE)
            })
            .copied();
        started_by.or_else(|| {
            candidates.iter().copied().min_by_key(|&n| {
                self.nodes[n]
                    .image
                    .started
                    .map_or(TimeDelta::MAX, |s| (s - time).abs())
            })
        })
    }

    /// The ancestors of `node`, the root first.
    pub fn ancestors(&self, node: usize) -> Vec<usize> {
        let mut chain = Vec::new();
        let mut at = self.nodes.get(node).and_then(|n| n.parent);
        while let Some(n) = at {
            chain.push(n);
            at = self.nodes[n].parent;
        }
        chain.reverse();
        chain
    }

    /// `node` and its descendants, at most `limit` of them (closest generations first), and
    /// whether some were left out.
    pub fn subtree(&self, node: usize, limit: usize) -> (Vec<usize>, bool) {
        let mut found = vec![node];
        let mut next = 0;
        while next < found.len() {
            for &child in &self.nodes[found[next]].children {
                if found.len() == limit {
                    return (found, true);
                }
                found.push(child);
            }
            next += 1;
        }
        (found, false)
    }
}

struct Builder {
    tree: Tree,
    /// Nodes with a row of their own, by process id, in order of start.
    by_pid: HashMap<i64, Vec<usize>>,
    /// Inferred nodes by process id and start time.
    inferred: HashMap<(i64, Option<DateTime<Utc>>), usize>,
}

impl Builder {
    fn push(&mut self, image: Image, inferred: bool, parent: Option<usize>) -> usize {
        let node = self.tree.nodes.len();
        self.tree.nodes.push(Node {
            image,
            inferred,
            exec: false,
            parent,
            children: Vec::new(),
        });
        if let Some(p) = parent {
            self.tree.nodes[p].children.push(node);
        }
        node
    }

    /// The node of the parent `image` of a process started at `child_start`: a process with a
    /// row of its own when one matches, else an inferred one (shared by its children).
    fn resolve(
        &mut self,
        image: Image,
        child_start: DateTime<Utc>,
        grandparent: Option<Image>,
    ) -> usize {
        if let Some(node) = self.matching(&image, child_start) {
            return node;
        }
        let key = (image.pid, image.started);
        if let Some(&node) = self.inferred.get(&key) {
            let known = &mut self.tree.nodes[node].image;
            for (field, value) in [
                (&mut known.file_name, image.file_name),
                (&mut known.folder_path, image.folder_path),
                (&mut known.command_line, image.command_line),
                (&mut known.account, image.account),
                (&mut known.sha256, image.sha256),
            ] {
                if field.is_empty() {
                    *field = value;
                }
            }
            return node;
        }
        let start = image.started.unwrap_or(child_start);
        let parent = grandparent.map(|g| self.resolve(g, start, None));
        let node = self.push(image, true, parent);
        self.inferred.insert(key, node);
        node
    }

    /// The process with a row of its own that `image` (a parent as its child's row gives it)
    /// is: same id, and started at the time given (within [`START_TOLERANCE`]) or, when none is
    /// given, the last one started by `child_start`.
    fn matching(&self, image: &Image, child_start: DateTime<Utc>) -> Option<usize> {
        let candidates = self.by_pid.get(&image.pid)?;
        let started = |n: usize| self.tree.nodes[n].image.started;
        match image.started {
            Some(at) => candidates
                .iter()
                .copied()
                .filter_map(|n| Some((n, (started(n)? - at).abs())))
                .filter(|(_, gap)| *gap <= START_TOLERANCE)
                // The latest of equally close ones: an image replaced by exec in the same process.
                .min_by_key(|&(n, gap)| (gap, std::cmp::Reverse(n)))
                .map(|(n, _)| n),
            None => candidates
                .iter()
                .rev()
                .copied()
                .find(|&n| started(n).is_none_or(|s| s <= child_start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn image(pid: i64, started: Option<i64>, name: &str) -> Image {
        Image {
            pid,
            started: started.map(at),
            file_name: name.into(),
            ..Image::default()
        }
    }

    /// Process `pid` named `name` started at `secs` by `parent`.
    fn event(pid: i64, secs: i64, name: &str, parent: Option<Image>) -> Event {
        Event {
            time: at(secs),
            process: image(pid, Some(secs), name),
            parent,
            grandparent: None,
        }
    }

    fn names(tree: &Tree, nodes: &[usize]) -> Vec<String> {
        nodes
            .iter()
            .map(|&n| tree.nodes[n].image.file_name.clone())
            .collect()
    }

    fn child_names(tree: &Tree, node: usize) -> Vec<String> {
        names(tree, &tree.nodes[node].children)
    }

    fn node(tree: &Tree, name: &str) -> usize {
        tree.nodes
            .iter()
            .position(|n| n.image.file_name == name)
            .unwrap()
    }

    /// No node is its own ancestor.
    fn assert_acyclic(tree: &Tree) {
        for n in 0..tree.nodes.len() {
            let mut seen = std::collections::HashSet::new();
            let mut at = Some(n);
            while let Some(x) = at {
                assert!(seen.insert(x), "cycle through {n}");
                at = tree.nodes[x].parent;
            }
        }
    }

    #[test]
    fn children_are_linked_to_their_parent_whatever_the_row_order() {
        let events = vec![
            event(30, 20, "whoami", Some(image(20, Some(10), "bash"))),
            event(20, 10, "bash", Some(image(10, Some(0), "sshd"))),
            event(31, 25, "id", Some(image(20, Some(10), "bash"))),
            event(10, 0, "sshd", None),
        ];
        let tree = Tree::build(events, 100);
        assert_eq!(names(&tree, &tree.roots), ["sshd"]);
        assert_eq!(child_names(&tree, node(&tree, "sshd")), ["bash"]);
        assert_eq!(child_names(&tree, node(&tree, "bash")), ["whoami", "id"]);
        assert!(tree.nodes.iter().all(|n| !n.inferred));
        assert_acyclic(&tree);
    }

    #[test]
    fn reused_process_ids_go_to_the_process_running_at_the_time() {
        // Process id 7 is an old shell, then (after it ended) a cron job.
        let events = vec![
            event(7, 0, "sh", None),
            event(8, 5, "ls", Some(image(7, None, "sh"))),
            event(7, 100, "cron", None),
            event(9, 105, "backup", Some(image(7, None, "cron"))),
            // A parent start time picks its process even after a newer one of the same id.
            event(10, 110, "late", Some(image(7, Some(0), "sh"))),
        ];
        let tree = Tree::build(events, 100);
        assert_eq!(child_names(&tree, node(&tree, "sh")), ["ls", "late"]);
        assert_eq!(child_names(&tree, node(&tree, "cron")), ["backup"]);
        assert_eq!(tree.find(7, Some(at(50))), Some(node(&tree, "sh")));
        assert_eq!(tree.find(7, Some(at(100))), Some(node(&tree, "cron")));
        assert_eq!(tree.find(7, None), Some(node(&tree, "cron")));
        assert_eq!(tree.find(7, Some(at(-50))), Some(node(&tree, "sh")));
        assert_eq!(tree.find(99, Some(at(0))), None);
    }

    #[test]
    fn a_new_program_in_the_same_process_follows_the_one_it_replaced() {
        let shell = || Some(image(10, Some(0), "bash"));
        let events = vec![
            event(10, 0, "bash", None),
            event(11, 5, "env", shell()),
            event(11, 5, "python3", shell()),
            // The child of the process after its exec: linked to the program running then.
            event(12, 6, "pip", Some(image(11, Some(5), "python3"))),
        ];
        let tree = Tree::build(events, 100);
        assert_eq!(child_names(&tree, node(&tree, "bash")), ["env"]);
        assert_eq!(child_names(&tree, node(&tree, "env")), ["python3"]);
        assert_eq!(child_names(&tree, node(&tree, "python3")), ["pip"]);
        assert!(tree.nodes[node(&tree, "python3")].exec);
        assert!(!tree.nodes[node(&tree, "env")].exec);
        assert_eq!(tree.find(11, Some(at(5))), Some(node(&tree, "python3")));
    }

    #[test]
    fn parent_times_given_to_the_second_still_match() {
        let mut parent = event(600, 0, "explorer.exe", None);
        parent.process.started = Some(at(0) + TimeDelta::milliseconds(730));
        let child = event(
            900,
            30,
            "mshta.exe",
            Some(image(600, Some(0), "explorer.exe")),
        );
        let tree = Tree::build(vec![child, parent], 100);
        assert_eq!(tree.nodes.len(), 2);
        assert_eq!(
            child_names(&tree, node(&tree, "explorer.exe")),
            ["mshta.exe"]
        );
    }

    #[test]
    fn parents_without_a_row_are_inferred_once_with_their_parent() {
        let grand = || Some(image(1, Some(-500), "systemd"));
        let mut a = event(50, 10, "curl", Some(image(40, Some(-100), "bash")));
        a.grandparent = grand();
        let mut b = event(51, 20, "sh", Some(image(40, Some(-100), "")));
        b.grandparent = grand();
        let tree = Tree::build(vec![a, b], 100);
        assert_eq!(names(&tree, &tree.roots), ["systemd"]);
        let bash = node(&tree, "bash");
        assert!(tree.nodes[bash].inferred);
        assert_eq!(child_names(&tree, bash), ["curl", "sh"]);
        assert_eq!(
            names(&tree, &tree.ancestors(node(&tree, "sh"))),
            ["systemd", "bash"]
        );
        assert_eq!(tree.nodes.len(), 4);
    }

    #[test]
    fn rows_that_name_each_other_as_parents_make_no_cycle() {
        let events = vec![
            event(1, 0, "a", Some(image(2, Some(0), "b"))),
            event(2, 0, "b", Some(image(1, Some(0), "a"))),
            event(3, 0, "c", Some(image(3, Some(0), "c"))),
        ];
        let tree = Tree::build(events, 100);
        assert_acyclic(&tree);
        assert!(!tree.roots.is_empty());
    }

    #[test]
    fn the_tree_is_bounded() {
        let events: Vec<Event> = (0..100)
            .map(|i| event(1000 + i, i, "p", Some(image(999 + i, Some(i - 1), "p"))))
            .collect();
        let tree = Tree::build(events, 30);
        assert!(tree.nodes.len() <= 30);
        assert!(tree.dropped > 0);
        assert_eq!(
            tree.dropped + tree.nodes.iter().filter(|n| !n.inferred).count(),
            100
        );
        assert_acyclic(&tree);
    }

    #[test]
    fn subtree_and_ancestors_of_a_focus() {
        let events = vec![
            event(1, 0, "init", None),
            event(2, 1, "sshd", Some(image(1, Some(0), "init"))),
            event(3, 2, "bash", Some(image(2, Some(1), "sshd"))),
            event(4, 3, "vim", Some(image(3, Some(2), "bash"))),
            event(5, 4, "make", Some(image(3, Some(2), "bash"))),
            event(6, 5, "cc", Some(image(5, Some(4), "make"))),
        ];
        let tree = Tree::build(events, 100);
        let bash = node(&tree, "bash");
        assert_eq!(names(&tree, &tree.ancestors(bash)), ["init", "sshd"]);
        let (all, cut) = tree.subtree(bash, 100);
        assert_eq!(names(&tree, &all), ["bash", "vim", "make", "cc"]);
        assert!(!cut);
        let (some, cut) = tree.subtree(bash, 3);
        assert_eq!(names(&tree, &some), ["bash", "vim", "make"]);
        assert!(cut);
    }

    #[test]
    fn rows_are_read_by_column_name() {
        let columns: Vec<String> = [
            "Timestamp",
            "ProcessId",
            "FileName",
            "AccountDomain",
            "AccountName",
            "InitiatingProcessId",
            "InitiatingProcessCreationTime",
            "InitiatingProcessFileName",
            "InitiatingProcessParentId",
        ]
        .map(String::from)
        .into();
        let row = [
            json!("2021-08-07T23:33:08.346260Z"),
            json!(6576),
            json!("rundll32.exe"),
            json!("MSEDGEWIN10"),
            json!("IEUser"),
            json!(9932),
            json!("2021-08-07T23:33:01Z"),
            json!("mshta.exe"),
            Value::Null,
        ];
        let e = Event::from_row(&columns, &row).unwrap();
        assert_eq!(e.process.pid, 6576);
        assert_eq!(e.process.account, "MSEDGEWIN10\\IEUser");
        assert_eq!(
            e.process.started,
            Some(e.time),
            "no creation time: the row's"
        );
        let parent = e.parent.unwrap();
        assert_eq!((parent.pid, parent.file_name.as_str()), (9932, "mshta.exe"));
        assert!(parent.started.is_some());
        assert_eq!(e.grandparent, None);
        assert_eq!(Event::from_row(&columns, &[json!("not a time")]), None);
    }
}
