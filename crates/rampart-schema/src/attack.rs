//! MITRE ATT&CK (Enterprise) tactics, and reading them from Sigma-style tags.

/// An ATT&CK Enterprise tactic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tactic {
    /// `TA0002`
    pub id: &'static str,
    /// `Execution`
    pub name: &'static str,
    /// `execution`, as Sigma tags write it (`attack.execution`).
    pub short_name: &'static str,
}

/// The Enterprise tactics in kill-chain order.
pub const TACTICS: [Tactic; 14] = [
    Tactic {
        id: "TA0043",
        name: "Reconnaissance",
        short_name: "reconnaissance",
    },
    Tactic {
        id: "TA0042",
        name: "Resource Development",
        short_name: "resource-development",
    },
    Tactic {
        id: "TA0001",
        name: "Initial Access",
        short_name: "initial-access",
    },
    Tactic {
        id: "TA0002",
        name: "Execution",
        short_name: "execution",
    },
    Tactic {
        id: "TA0003",
        name: "Persistence",
        short_name: "persistence",
    },
    Tactic {
        id: "TA0004",
        name: "Privilege Escalation",
        short_name: "privilege-escalation",
    },
    Tactic {
        id: "TA0005",
        name: "Defense Evasion",
        short_name: "defense-evasion",
    },
    Tactic {
        id: "TA0006",
        name: "Credential Access",
        short_name: "credential-access",
    },
    Tactic {
        id: "TA0007",
        name: "Discovery",
        short_name: "discovery",
    },
    Tactic {
        id: "TA0008",
        name: "Lateral Movement",
        short_name: "lateral-movement",
    },
    Tactic {
        id: "TA0009",
        name: "Collection",
        short_name: "collection",
    },
    Tactic {
        id: "TA0011",
        name: "Command and Control",
        short_name: "command-and-control",
    },
    Tactic {
        id: "TA0010",
        name: "Exfiltration",
        short_name: "exfiltration",
    },
    Tactic {
        id: "TA0040",
        name: "Impact",
        short_name: "impact",
    },
];

/// The tactic a tag names (`attack.defense-evasion`, `attack.defense_evasion`, `attack.ta0005`).
pub fn tactic_of_tag(tag: &str) -> Option<Tactic> {
    let rest = tag.strip_prefix("attack.")?;
    let rest = rest.replace('_', "-");
    TACTICS
        .into_iter()
        .find(|t| t.short_name.eq_ignore_ascii_case(&rest) || t.id.eq_ignore_ascii_case(&rest))
}

/// The technique a tag names, upper-cased (`attack.t1059.001` → `T1059.001`).
pub fn technique_of_tag(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("attack.")?;
    let digits = rest.strip_prefix('t').or_else(|| rest.strip_prefix('T'))?;
    let valid = digits.len() >= 4 && digits.chars().all(|c| c.is_ascii_digit() || c == '.');
    valid.then(|| format!("T{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags() {
        assert_eq!(
            tactic_of_tag("attack.defense-evasion").map(|t| t.id),
            Some("TA0005")
        );
        assert_eq!(
            tactic_of_tag("attack.command_and_control").map(|t| t.name),
            Some("Command and Control")
        );
        assert_eq!(
            tactic_of_tag("attack.TA0002").map(|t| t.short_name),
            Some("execution")
        );
        assert_eq!(tactic_of_tag("attack.t1059"), None);
        assert_eq!(tactic_of_tag("cve.2021-1234"), None);
        assert_eq!(
            technique_of_tag("attack.t1059.001").as_deref(),
            Some("T1059.001")
        );
        assert_eq!(technique_of_tag("attack.execution"), None);
    }
}
