//! Kusto's documented behaviour, operator by operator and function by function, on small
//! hand-built tables (`datatable`s and in-memory hunting tables).
//!
//! Each assertion runs a whole query through parser, planner and DataFusion, and compares the
//! result as JSON values (datetimes as ISO 8601 UTC text, timespans as Kusto's `d.hh:mm:ss`,
//! dynamic values as compact JSON text).

use std::sync::OnceLock;

use rampart_kql::{Engine, ErrorKind, KqlError, MemCatalog, QueryOptions};
use serde_json::{Value, json};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| rampart_kql::runtime().expect("runtime"))
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(MemCatalog::hunting_tables()))
}

/// A small process table every test can use.
const PROCS: &str = r#"let P = datatable(Device: string, Proc: string, Pid: long, Cmd: string, T: datetime)
[
  "dev1", "cmd.exe",        10, "cmd.exe /c whoami",               datetime(2024-05-01 10:00:00),
  "dev1", "powershell.exe", 11, "powershell -enc SQBFAFgA",        datetime(2024-05-01 10:05:00),
  "dev2", "CMD.EXE",        20, "C:\\Windows\\System32\\cmd.exe /c dir", datetime(2024-05-01 11:30:00),
  "dev2", "net.exe",        21, "net user admin /add",             datetime(2024-05-02 09:00:00),
  "dev3", "svchost.exe",    30, "",                                datetime(2024-05-03 00:00:00),
];
"#;

fn try_rows(query: &str) -> Result<Vec<Vec<Value>>, KqlError> {
    let result = runtime().block_on(engine().run(query, &QueryOptions::default()))?;
    Ok(result
        .json_rows()
        .into_iter()
        .map(|r| r.into_iter().map(|(_, v)| v).collect())
        .collect())
}

/// Every row of a query, each as its cells.
fn rows(query: &str) -> Vec<Vec<Value>> {
    match try_rows(query) {
        Ok(r) => r,
        Err(e) => panic!("query failed:\n{}\n{query}", e.render(query)),
    }
}

/// The single cell of a one-row, one-column result.
fn one(query: &str) -> Value {
    let r = rows(query);
    assert_eq!(r.len(), 1, "expected one row from {query}: {r:?}");
    assert_eq!(r[0].len(), 1, "expected one column from {query}: {r:?}");
    r[0][0].clone()
}

/// `print` of one expression.
fn eval(expr: &str) -> Value {
    one(&format!("print r = {expr}"))
}

/// Rows of a query over the process table.
fn procs(pipeline: &str) -> Vec<Vec<Value>> {
    rows(&format!("{PROCS} P | {pipeline}"))
}

/// The first column of each row of a query over the process table.
fn procs_col(pipeline: &str) -> Vec<Value> {
    procs(pipeline).into_iter().map(|r| r[0].clone()).collect()
}

fn count(pipeline: &str) -> i64 {
    let v = one(&format!("{PROCS} P | {pipeline} | count"));
    v.as_i64().expect("a count")
}

fn columns(query: &str) -> Vec<String> {
    let result = runtime()
        .block_on(engine().run(query, &QueryOptions::default()))
        .unwrap_or_else(|e| panic!("{}", e.render(query)));
    result.column_names()
}

fn error(query: &str) -> KqlError {
    match try_rows(query) {
        Ok(r) => panic!("expected an error from {query}, got {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn equality_is_case_sensitive_and_tilde_is_not() {
    assert_eq!(eval("'abc' == 'abc'"), json!(true));
    assert_eq!(eval("'abc' == 'ABC'"), json!(false));
    assert_eq!(eval("'abc' =~ 'ABC'"), json!(true));
    assert_eq!(eval("'abc' != 'ABC'"), json!(true));
    assert_eq!(eval("'abc' !~ 'ABC'"), json!(false));
    assert_eq!(eval("'abc' <> 'abd'"), json!(true));
    assert_eq!(count("where Proc == 'cmd.exe'"), 1);
    assert_eq!(count("where Proc =~ 'cmd.exe'"), 2);
    assert_eq!(count("where Proc !~ 'cmd.exe'"), 3);
}

#[test]
fn in_is_case_sensitive_and_in_tilde_is_not() {
    assert_eq!(count("where Proc in ('cmd.exe', 'net.exe')"), 2);
    assert_eq!(count("where Proc in~ ('cmd.exe', 'NET.EXE')"), 3);
    assert_eq!(count("where Proc !in ('cmd.exe', 'net.exe')"), 3);
    assert_eq!(count("where Proc !in~ ('cmd.exe')"), 3);
    assert_eq!(count("where Pid in (10, 20, 99)"), 2);
    // A dynamic array literal in the list is expanded into its elements.
    assert_eq!(
        count("where Proc in (dynamic(['net.exe', 'svchost.exe']))"),
        2
    );
    assert_eq!(
        one(&format!(
            "{PROCS} let L = dynamic(['cmd.exe']); P | where Proc in~ (L) | count"
        )),
        json!(2)
    );
}

#[test]
fn in_accepts_a_tabular_expression() {
    assert_eq!(
        count("where Device in ((P | where Proc == 'net.exe' | project Device))"),
        2
    );
    assert_eq!(
        one(&format!(
            "{PROCS} let Bad = P | where Pid > 20 | project Device; P | where Device !in (Bad) | count"
        )),
        json!(2)
    );
}

#[test]
fn has_matches_whole_terms_only() {
    assert_eq!(eval("'cmd.exe /c whoami' has 'whoami'"), json!(true));
    assert_eq!(eval("'cmd.exe /c whoami' has 'WHOAMI'"), json!(true));
    assert_eq!(eval("'cmd.exe /c whoami' has 'who'"), json!(false));
    assert_eq!(eval("'cmd.exe /c whoami' has 'exe'"), json!(true));
    assert_eq!(eval("'cmd.exe /c whoami' has 'cmd.exe'"), json!(true));
    assert_eq!(eval("'cmd.exe /c whoami' has 'md.exe'"), json!(false));
    assert_eq!(eval("'North America' has 'america'"), json!(true));
    assert_eq!(eval("'North America' has_cs 'america'"), json!(false));
    assert_eq!(eval("'North America' has_cs 'America'"), json!(true));
    assert_eq!(eval("'North America' !has 'amer'"), json!(true));
    assert_eq!(eval("'North America' !has_cs 'America'"), json!(false));
    assert_eq!(eval("'' has 'x'"), json!(false));
    assert_eq!(count("where Cmd has 'cmd'"), 2);
    assert_eq!(count("where Cmd has 'system32'"), 1);
    assert_eq!(count("where Cmd has 'user'"), 1);
}

#[test]
fn hasprefix_hassuffix_has_any_has_all() {
    assert_eq!(eval("'North America' hasprefix 'ame'"), json!(true));
    assert_eq!(eval("'North America' hasprefix 'ica'"), json!(false));
    assert_eq!(eval("'North America' hassuffix 'ica'"), json!(true));
    assert_eq!(eval("'North America' hassuffix 'ame'"), json!(false));
    assert_eq!(
        eval("'North America' has_any ('south', 'north')"),
        json!(true)
    );
    assert_eq!(
        eval("'North America' has_any ('south', 'east')"),
        json!(false)
    );
    assert_eq!(
        eval("'North America' has_all ('north', 'america')"),
        json!(true)
    );
    assert_eq!(
        eval("'North America' has_all ('north', 'europe')"),
        json!(false)
    );
    assert_eq!(count("where Cmd has_any ('whoami', 'dir')"), 2);
}

#[test]
fn contains_startswith_endswith() {
    assert_eq!(eval("'Fabrikam' contains 'BRik'"), json!(true));
    assert_eq!(eval("'Fabrikam' contains_cs 'BRik'"), json!(false));
    assert_eq!(eval("'Fabrikam' contains_cs 'brik'"), json!(true));
    assert_eq!(eval("'Fabrikam' !contains 'xyz'"), json!(true));
    assert_eq!(eval("'Fabrikam' !contains_cs 'brik'"), json!(false));
    assert_eq!(eval("'Fabrikam' startswith 'fab'"), json!(true));
    assert_eq!(eval("'Fabrikam' startswith_cs 'fab'"), json!(false));
    assert_eq!(eval("'Fabrikam' !startswith 'rik'"), json!(true));
    assert_eq!(eval("'Fabrikam' endswith 'KAM'"), json!(true));
    assert_eq!(eval("'Fabrikam' endswith_cs 'KAM'"), json!(false));
    assert_eq!(eval("'Fabrikam' !endswith 'kam'"), json!(false));
    assert_eq!(count("where Proc endswith '.EXE'"), 5);
    assert_eq!(count("where Cmd contains 'system32'"), 1);
}

#[test]
fn matches_regex_and_between() {
    assert_eq!(eval("'abc123' matches regex '[a-z]+[0-9]+'"), json!(true));
    assert_eq!(eval("'abc' matches regex '^[0-9]+$'"), json!(false));
    assert_eq!(eval("5 between (1 .. 10)"), json!(true));
    assert_eq!(eval("10 between (1 .. 10)"), json!(true));
    assert_eq!(eval("11 between (1 .. 10)"), json!(false));
    assert_eq!(eval("11 !between (1 .. 10)"), json!(true));
    assert_eq!(count("where Pid between (11 .. 21)"), 3);
    assert_eq!(
        count("where T between (datetime(2024-05-01) .. datetime(2024-05-02))"),
        3
    );
}

#[test]
fn nulls_compare_false_and_empty_strings_are_empty() {
    assert_eq!(eval("isnull(long(null))"), json!(true));
    assert_eq!(eval("isnotnull(5)"), json!(true));
    assert_eq!(eval("isempty('')"), json!(true));
    assert_eq!(eval("isempty('a')"), json!(false));
    assert_eq!(eval("isnotempty('a')"), json!(true));
    assert_eq!(eval("isempty(long(null))"), json!(true));
    assert_eq!(eval("coalesce(long(null), 7)"), json!(7));
    assert_eq!(eval("long(null) == 1"), json!(false));
    assert_eq!(count("where isempty(Cmd)"), 1);
    assert_eq!(count("where isnotempty(Cmd)"), 4);
    let r = rows(
        "datatable(x: long)[1, long(null), 3] | summarize c = count(), n = countif(isnull(x)), s = sum(x), d = dcount(x)",
    );
    assert_eq!(r, vec![vec![json!(3), json!(1), json!(4), json!(2)]]);
    assert_eq!(
        one("datatable(x: long)[1, long(null), 3] | where x > 1 | count"),
        json!(1)
    );
}

#[test]
fn project_extend_and_friends() {
    assert_eq!(
        columns(&format!("{PROCS} P | project Proc, Id = Pid")),
        ["Proc", "Id"]
    );
    assert_eq!(
        columns(&format!("{PROCS} P | project-away Cmd, T")),
        ["Device", "Proc", "Pid"]
    );
    assert_eq!(
        columns(&format!("{PROCS} P | project-away P*")),
        ["Device", "Cmd", "T"]
    );
    assert_eq!(
        columns(&format!("{PROCS} P | project-keep P*")),
        ["Proc", "Pid"]
    );
    assert_eq!(
        columns(&format!("{PROCS} P | project-rename Image = Proc")),
        ["Device", "Image", "Pid", "Cmd", "T"]
    );
    assert_eq!(
        columns(&format!("{PROCS} P | project-reorder T, Pid")),
        ["T", "Pid", "Device", "Proc", "Cmd"]
    );
    // extend replaces a column of the same name in place, and sees its own earlier items.
    assert_eq!(
        columns(&format!("{PROCS} P | extend Pid = Pid * 2, X = Pid + 1")),
        ["Device", "Proc", "Pid", "Cmd", "T", "X"]
    );
    assert_eq!(
        procs("where Pid == 10 | extend Pid = Pid * 2, X = Pid + 1 | project Pid, X"),
        vec![vec![json!(20), json!(21)]]
    );
    // An unnamed expression becomes Column1.
    assert_eq!(
        columns(&format!("{PROCS} P | project Pid + 1")),
        ["Column1"]
    );
    let e = error(&format!("{PROCS} P | project Nope"));
    assert_eq!(e.kind, ErrorKind::Semantic);
    let e = error(&format!("{PROCS} P | project Pidd"));
    assert_eq!(e.suggestion.as_deref(), Some("Pid"));
}

#[test]
fn summarize_names_and_groups() {
    assert_eq!(
        columns(&format!(
            "{PROCS} P | summarize count(), dcount(Proc), make_set(Proc), make_list(Pid), sum(Pid), take_any(Cmd) by Device"
        )),
        [
            "Device",
            "count_",
            "dcount_Proc",
            "set_Proc",
            "list_Pid",
            "sum_Pid",
            "any_Cmd"
        ]
    );
    let r = procs("summarize n = count() by Device | sort by Device asc");
    assert_eq!(
        r,
        vec![
            vec![json!("dev1"), json!(2)],
            vec![json!("dev2"), json!(2)],
            vec![json!("dev3"), json!(1)]
        ]
    );
    assert_eq!(procs_col("summarize max(Pid)"), vec![json!(30)]);
    assert_eq!(procs_col("summarize min(Pid)"), vec![json!(10)]);
    assert_eq!(procs_col("summarize avg(Pid)"), vec![json!(18.4)]);
    assert_eq!(
        procs_col("summarize sumif(Pid, Device == 'dev1')"),
        vec![json!(21)]
    );
    assert_eq!(procs_col("summarize countif(Pid > 15)"), vec![json!(3)]);
    assert_eq!(
        procs_col("summarize dcountif(Device, Pid > 15)"),
        vec![json!(2)]
    );
    // An expression over aggregations.
    assert_eq!(
        procs_col("summarize r = max(Pid) - min(Pid)"),
        vec![json!(20)]
    );
    // summarize without aggregations is distinct on the keys.
    assert_eq!(procs("summarize by Device").len(), 3);
    // Nulls do not count, and a group of nulls counts 0.
    assert_eq!(
        procs("summarize d = dcount(Proc) by Device | sort by Device asc"),
        vec![
            vec![json!("dev1"), json!(2)],
            vec![json!("dev2"), json!(2)],
            vec![json!("dev3"), json!(1)]
        ]
    );
    assert_eq!(
        rows(
            "datatable(k: string, x: long)['a', 1, 'a', long(null), 'a', 1, 'b', long(null)] \
             | summarize d = dcount(x) by k | sort by k asc"
        ),
        vec![vec![json!("a"), json!(1)], vec![json!("b"), json!(0)]]
    );
    // Enough rows for several batches and both partial aggregates: every residue of
    // i % 1000 occurs for each i % 7 (7 and 1000 are coprime), as a number and as text.
    assert_eq!(
        rows(
            "range i from 1 to 100000 step 1 | extend k = i % 7, v = i % 1000 \
             | summarize d = dcount(v), s = dcount(tostring(v)), e = dcountif(v, v < 10), n = count() by k \
             | summarize min(d), max(d), min(s), max(s), min(e), max(e), sum(n)"
        ),
        vec![vec![
            json!(1000),
            json!(1000),
            json!(1000),
            json!(1000),
            json!(10),
            json!(10),
            json!(100000)
        ]]
    );
    assert_eq!(
        one("range i from 1 to 100000 step 1 | summarize dcount(i % 4321)"),
        json!(4321)
    );
    assert_eq!(
        one("range i from 1 to 10 step 1 | where i > 10 | summarize dcount(i)"),
        json!(0)
    );
    // The same aggregation written twice is computed once; every column is kept.
    assert_eq!(
        procs(
            "summarize a = count(), b = count(), c = count() + 1 by Device | sort by Device asc | take 1"
        ),
        vec![vec![json!("dev1"), json!(2), json!(2), json!(3)]]
    );
}

#[test]
fn summarize_by_bin_on_datetimes() {
    let r = procs("summarize n = count() by bin(T, 1d) | sort by T asc");
    assert_eq!(
        r,
        vec![
            vec![json!("2024-05-01T00:00:00Z"), json!(3)],
            vec![json!("2024-05-02T00:00:00Z"), json!(1)],
            vec![json!("2024-05-03T00:00:00Z"), json!(1)]
        ]
    );
    let r = procs(
        "where T < datetime(2024-05-02) | summarize n = count() by H = bin(T, 1h) | sort by H asc",
    );
    assert_eq!(
        r,
        vec![
            vec![json!("2024-05-01T10:00:00Z"), json!(2)],
            vec![json!("2024-05-01T11:00:00Z"), json!(1)]
        ]
    );
    assert_eq!(
        eval("bin(datetime(2024-05-01 10:47:13), 15m)"),
        json!("2024-05-01T10:45:00Z")
    );
    assert_eq!(eval("bin(17, 5)"), json!(15));
    assert_eq!(eval("bin(4.7, 1.0)"), json!(4.0));
    assert_eq!(
        eval("floor(datetime(2024-05-01 10:47:13), 1h)"),
        json!("2024-05-01T10:00:00Z")
    );
}

#[test]
fn arg_max_and_arg_min() {
    let r = procs("summarize arg_max(Pid, *) by Device | sort by Device asc");
    assert_eq!(r.len(), 3);
    assert_eq!(
        r[0],
        vec![
            json!("dev1"),
            json!(11),
            json!("powershell.exe"),
            json!("powershell -enc SQBFAFgA"),
            json!("2024-05-01T10:05:00Z")
        ]
    );
    assert_eq!(
        columns(&format!("{PROCS} P | summarize arg_max(Pid, *) by Device")),
        ["Device", "Pid", "Proc", "Cmd", "T"]
    );
    let r = procs("summarize arg_min(T, Proc) by Device | sort by Device asc | project Proc");
    assert_eq!(
        r,
        vec![
            vec![json!("cmd.exe")],
            vec![json!("CMD.EXE")],
            vec![json!("svchost.exe")]
        ]
    );
    assert_eq!(
        columns(&format!("{PROCS} P | summarize arg_min(T, Proc) by Device")),
        ["Device", "T", "Proc"]
    );
}

#[test]
fn make_set_make_list_make_bag() {
    assert_eq!(
        one(
            "datatable(x: string)['a', 'b', 'a'] | summarize s = make_set(x) | project n = array_length(s)"
        ),
        json!(2)
    );
    assert_eq!(
        one("datatable(x: long)[1, 2, 3] | summarize l = make_list(x) | project tostring(l)"),
        json!("[1,2,3]")
    );
    assert_eq!(
        one(
            "datatable(x: string)['a', 'b', 'c'] | summarize l = make_list(x, 2) | project array_length(l)"
        ),
        json!(2)
    );
    assert_eq!(
        one(
            "datatable(k: string, v: long)['a', 1, 'b', 2] | summarize b = make_bag(pack(k, v)) | project b.b"
        ),
        json!("2")
    );
    assert_eq!(
        one(
            "datatable(x: string, y: long)['a', 1, 'b', 2, 'c', 3] | summarize s = make_set_if(x, y > 1) | project array_length(s)"
        ),
        json!(2)
    );
}

#[test]
fn statistics() {
    assert_eq!(
        one("datatable(x: long)[1, 2, 3, 4] | summarize variance(x)"),
        json!(1.6666666666666667)
    );
    let sd = one("datatable(x: long)[2, 4, 4, 4, 5, 5, 7, 9] | summarize stdev(x)");
    assert!((sd.as_f64().unwrap() - 2.138).abs() < 0.001, "{sd}");
    let p = one("range x from 1 to 100 step 1 | summarize percentile(x, 50)");
    assert!((49.0..=51.0).contains(&p.as_f64().unwrap()), "{p}");
    assert_eq!(
        columns("range x from 1 to 100 step 1 | summarize percentiles(x, 5, 95)"),
        ["percentile_x_5", "percentile_x_95"]
    );
}

#[test]
fn count_take_top_sort_distinct() {
    assert_eq!(one(&format!("{PROCS} P | count")), json!(5));
    assert_eq!(columns(&format!("{PROCS} P | count")), ["Count"]);
    assert_eq!(procs("take 2").len(), 2);
    assert_eq!(procs("limit 3").len(), 3);
    // top and sort default to descending.
    assert_eq!(
        procs_col("top 2 by Pid | project Pid"),
        vec![json!(30), json!(21)]
    );
    assert_eq!(
        procs_col("top 2 by Pid asc | project Pid"),
        vec![json!(10), json!(11)]
    );
    assert_eq!(
        procs_col("sort by Pid | project Pid"),
        vec![json!(30), json!(21), json!(20), json!(11), json!(10)]
    );
    assert_eq!(
        procs_col("order by Device asc, Pid desc | project Pid"),
        vec![json!(11), json!(10), json!(21), json!(20), json!(30)]
    );
    assert_eq!(procs("distinct Device").len(), 3);
    assert_eq!(procs("project Device | distinct *").len(), 3);
    assert_eq!(procs("distinct Device, Proc").len(), 5);
}

#[test]
fn sort_puts_nulls_last_when_descending_first_when_ascending() {
    let t = "datatable(x: long)[2, long(null), 1]";
    assert_eq!(
        rows(&format!("{t} | sort by x desc")),
        vec![vec![json!(2)], vec![json!(1)], vec![Value::Null]]
    );
    assert_eq!(
        rows(&format!("{t} | sort by x asc")),
        vec![vec![Value::Null], vec![json!(1)], vec![json!(2)]]
    );
    assert_eq!(
        rows(&format!("{t} | sort by x asc nulls last")),
        vec![vec![json!(1)], vec![json!(2)], vec![Value::Null]]
    );
    assert_eq!(
        rows(&format!("{t} | sort by x desc nulls first")),
        vec![vec![Value::Null], vec![json!(2)], vec![json!(1)]]
    );
}

const LEFT: &str = "let L = datatable(k: string, a: long)['x', 1, 'x', 2, 'y', 3, 'z', 4];";
const RIGHT: &str = "let R = datatable(k: string, b: long)['x', 10, 'x', 20, 'y', 30, 'w', 40];";

fn join(kind: &str, tail: &str) -> Vec<Vec<Value>> {
    rows(&format!("{LEFT}{RIGHT} L | join {kind} R on k {tail}"))
}

#[test]
fn joins_of_every_kind() {
    // innerunique (the default): one left row per key, then every right match.
    assert_eq!(join("", "| count")[0][0], json!(3));
    assert_eq!(join("kind=innerunique", "| count")[0][0], json!(3));
    assert_eq!(join("kind=inner", "| count")[0][0], json!(5));
    assert_eq!(join("kind=leftouter", "| count")[0][0], json!(6));
    assert_eq!(join("kind=rightouter", "| count")[0][0], json!(6));
    assert_eq!(join("kind=fullouter", "| count")[0][0], json!(7));
    assert_eq!(join("kind=leftsemi", "| count")[0][0], json!(3));
    assert_eq!(join("kind=leftanti", "| project a")[0][0], json!(4));
    assert_eq!(join("kind=rightsemi", "| count")[0][0], json!(3));
    assert_eq!(join("kind=rightanti", "| project b")[0][0], json!(40));
    assert_eq!(join("kind=anti", "| count")[0][0], json!(1));
    // Right columns whose names are taken get a numeric suffix; semi joins keep one side.
    assert_eq!(
        columns(&format!("{LEFT}{RIGHT} L | join kind=inner R on k")),
        ["k", "a", "k1", "b"]
    );
    assert_eq!(
        columns(&format!("{LEFT}{RIGHT} L | join kind=leftsemi R on k")),
        ["k", "a"]
    );
    assert_eq!(
        columns(&format!("{LEFT}{RIGHT} L | join kind=rightanti R on k")),
        ["k", "b"]
    );
    // leftouter: unmatched rows have nulls on the right.
    let r = join("kind=leftouter", "| where a == 4 | project b");
    assert_eq!(r, vec![vec![Value::Null]]);
}

#[test]
fn join_on_left_and_right_columns() {
    let q = format!(
        "{LEFT} let R2 = datatable(key: string, b: long)['x', 10, 'y', 30]; L | join kind=inner R2 on $left.k == $right.key | count"
    );
    assert_eq!(one(&q), json!(3));
    let q = format!(
        "{LEFT} let R2 = datatable(key: string, b: long)['x', 10, 'y', 30]; L | join kind=inner (R2 | where b > 10) on $left.k == $right.key | project a"
    );
    assert_eq!(rows(&q), vec![vec![json!(3)]]);
}

/// Joins on a text key and a number, as hunting joins on `DeviceId` and a process id: the
/// engine joins them on one packed key (`PackedKeysExec` in the plan), with the same rows.
#[test]
fn joins_on_text_and_number_keys() {
    let tables = "let P = datatable(d: string, pid: long, a: long)\
        ['x', 1, 1, 'x', 2, 2, 'y', 1, 3, '', 1, 4, 'X', 1, 5, 'x', 1, 6];\
        let N = datatable(d: string, pid: long, b: long)\
        ['x', 1, 10, 'x', 1, 11, 'y', 2, 20, 'z', 1, 30, '', 1, 40, 'x', 3, 50];";
    let join = |kind: &str| {
        rows(&format!(
            "{tables} P | join kind={kind} N on d, pid | project a, b | order by a asc, b asc"
        ))
    };
    let pairs = |p: &[(i64, i64)]| -> Vec<Vec<Value>> {
        p.iter().map(|&(a, b)| vec![json!(a), json!(b)]).collect()
    };
    // Case-sensitive on the text, exact on the number; "" equals "".
    assert_eq!(
        join("inner"),
        pairs(&[(1, 10), (1, 11), (4, 40), (6, 10), (6, 11)])
    );
    let outer = join("leftouter");
    assert_eq!(outer.len(), 8);
    assert!(outer.contains(&vec![json!(5), Value::Null]));
    assert_eq!(
        rows(&format!(
            "{tables} N | join kind=leftanti P on d, pid | project b | order by b asc"
        )),
        vec![vec![json!(20)], vec![json!(30)], vec![json!(50)]]
    );
    // innerunique: one left row per key (of 'x' 1, either of a = 1 and a = 6).
    assert_eq!(
        rows(&format!("{tables} P | join N on d, pid | count")),
        vec![vec![json!(3)]]
    );
    let plan = runtime()
        .block_on(engine().explain(&format!("{tables} P | join kind=inner N on d, pid")))
        .unwrap();
    assert!(plan.contains("PackedKeysExec"), "{plan}");
}

#[test]
fn summarizes_by_several_text_keys() {
    let t = "let T = datatable(d: string, f: string, a: string, n: long)\
        ['x', 'cmd.exe', 'u1', 1, 'x', 'cmd.exe', 'u2', 2, 'x', 'CMD.EXE', 'u1', 3, \
         'y', 'cmd.exe', 'u1', 4, '', 'cmd.exe', 'u3', 5, '', '', 'u1', 6, 'x', 'cmd.exe', 'u1', 7];";
    // Case-sensitive on each key; "" is a value; the keys come back as they were.
    assert_eq!(
        rows(&format!(
            "{t} T | summarize c = count(), s = sum(n), u = dcount(a) by d, f | order by s asc"
        )),
        vec![
            vec![json!("x"), json!("CMD.EXE"), json!(1), json!(3), json!(1)],
            vec![json!("y"), json!("cmd.exe"), json!(1), json!(4), json!(1)],
            vec![json!(""), json!("cmd.exe"), json!(1), json!(5), json!(1)],
            vec![json!(""), json!(""), json!(1), json!(6), json!(1)],
            vec![json!("x"), json!("cmd.exe"), json!(3), json!(10), json!(2)],
        ]
    );
    // Three keys, and a key computed from a column.
    assert_eq!(
        rows(&format!(
            "{t} T | summarize c = count() by d, tolower(f), a | where d == 'x' | order by c desc, a asc"
        )),
        vec![
            vec![json!("x"), json!("cmd.exe"), json!("u1"), json!(3)],
            vec![json!("x"), json!("cmd.exe"), json!("u2"), json!(1)],
        ]
    );
    let plan = runtime()
        .block_on(engine().explain(&format!("{t} T | summarize count() by d, f")))
        .unwrap();
    assert!(plan.contains("PackedGroupsExec"), "{plan}");
}

#[test]
fn lookup_drops_the_right_keys() {
    let q = format!(
        "{LEFT} let D = datatable(k: string, label: string)['x', 'ex', 'y', 'why']; L | lookup D on k"
    );
    assert_eq!(columns(&q), ["k", "a", "label"]);
    assert_eq!(rows(&format!("{q} | count")), vec![vec![json!(4)]]);
    assert_eq!(
        rows(&format!("{q} | where a == 4 | project label")),
        vec![vec![Value::Null]]
    );
    let q = format!(
        "{LEFT} let D = datatable(k: string, label: string)['x', 'ex']; L | lookup kind=inner D on k | count"
    );
    assert_eq!(one(&q), json!(2));
}

#[test]
fn union_by_column_name() {
    let q = "let A = datatable(x: long, y: string)[1, 'a']; let B = datatable(x: long, z: string)[2, 'b'];";
    assert_eq!(columns(&format!("{q} union A, B")), ["x", "y", "z"]);
    assert_eq!(one(&format!("{q} union A, B | count")), json!(2));
    assert_eq!(
        rows(&format!("{q} union A, B | where x == 2 | project y, z")),
        vec![vec![Value::Null, json!("b")]]
    );
    assert_eq!(columns(&format!("{q} union kind=inner A, B")), ["x"]);
    assert_eq!(
        columns(&format!("{q} union withsource=Src A, B")),
        ["Src", "x", "y", "z"]
    );
    assert_eq!(
        // A union's order is not defined (its inputs run side by side): sorted here.
        rows(&format!(
            "{q} union withsource=Src A, B | project Src | sort by Src asc"
        )),
        vec![vec![json!("A")], vec![json!("B")]]
    );
    assert_eq!(one(&format!("{q} A | union B | count")), json!(2));
    // Wildcards name catalog tables.
    assert_eq!(one("union Device*Events | count"), json!(0));
}

#[test]
fn let_functions_invoke_as_materialize_toscalar() {
    assert_eq!(one("let n = 5; print r = n * 2"), json!(10));
    assert_eq!(
        one("let f = (a: long, b: long = 10) { a + b }; print r = f(1)"),
        json!(11)
    );
    assert_eq!(
        one("let f = (a: long, b: long = 10) { a + b }; print r = f(1, 2)"),
        json!(3)
    );
    assert_eq!(
        one(&format!(
            "{PROCS} let Big = (T: (*), min: long) {{ T | where Pid >= min }}; Big(P, 20) | count"
        )),
        json!(3)
    );
    assert_eq!(
        one(&format!(
            "{PROCS} let Big = (T: (*)) {{ T | where Pid >= 20 }}; P | invoke Big() | count"
        )),
        json!(3)
    );
    assert_eq!(
        one(&format!(
            "{PROCS} P | where Pid > 20 | as Hi | union (Hi) | count"
        )),
        json!(4)
    );
    assert_eq!(
        one(&format!(
            "{PROCS} let M = materialize(P | where Pid < 20); M | count"
        )),
        json!(2)
    );
    assert_eq!(
        one(&format!(
            "{PROCS} let top = toscalar(P | summarize max(Pid)); P | where Pid == top | project Proc"
        )),
        json!("svchost.exe")
    );
    let e = error("let f = (a: long) { a }; print f(1, 2)");
    assert_eq!(e.kind, ErrorKind::Semantic);
}

#[test]
fn mv_expand_arrays_and_bags() {
    let t =
        "datatable(id: long, d: dynamic)[1, dynamic(['a', 'b']), 2, dynamic([3]), 3, dynamic([])]";
    assert_eq!(one(&format!("{t} | mv-expand d | count")), json!(3));
    assert_eq!(
        rows(&format!("{t} | mv-expand d | where id == 1 | project d")),
        vec![vec![json!("a")], vec![json!("b")]]
    );
    assert_eq!(
        rows(&format!(
            "{t} | mv-expand d to typeof(long) | where id == 2 | project d"
        )),
        vec![vec![json!(3)]]
    );
    assert_eq!(
        one("print d = dynamic({'k1': 1, 'k2': 2}) | mv-expand d | count"),
        json!(2)
    );
    assert_eq!(
        one("print d = dynamic(['x', 'y']) | mvexpand d | count"),
        json!(2)
    );
}

#[test]
fn parse_operator() {
    let t = "datatable(s: string)['user=alice id=42 ok', 'nothing here']";
    assert_eq!(
        rows(&format!(
            "{t} | parse s with 'user=' User ' id=' Id:long ' ' * | project User, Id"
        )),
        vec![
            vec![json!("alice"), json!(42)],
            vec![Value::Null, Value::Null]
        ]
    );
    assert_eq!(
        one(
            "print s = 'GET /index.html 200' | parse s with Method ' ' Path ' ' Status:int | project Path"
        ),
        json!("/index.html")
    );
    assert_eq!(
        one("print s = 'a1b22c' | parse kind=regex s with 'b' Num:long 'c' | project Num"),
        json!(22)
    );
}

#[test]
fn datetime_and_timespan_arithmetic() {
    assert_eq!(
        eval("datetime(2024-05-01 10:00:00) + 1h"),
        json!("2024-05-01T11:00:00Z")
    );
    assert_eq!(
        eval("datetime(2024-05-01) - 1d"),
        json!("2024-04-30T00:00:00Z")
    );
    assert_eq!(
        eval("datetime(2024-05-02) - datetime(2024-05-01 12:00:00)"),
        json!("12:00:00")
    );
    assert_eq!(eval("2h + 30m"), json!("02:30:00"));
    assert_eq!(eval("1d / 1h"), json!(24.0));
    assert_eq!(eval("2h * 3"), json!("06:00:00"));
    assert_eq!(eval("1d > 23h"), json!(true));
    assert_eq!(eval("90s"), json!("00:01:30"));
    assert_eq!(eval("1.5h"), json!("01:30:00"));
    assert_eq!(eval("100ms"), json!("00:00:00.1000000"));
    assert_eq!(eval("ago(1d) < now()"), json!(true));
    assert_eq!(eval("now() - ago(1h) >= 1h"), json!(true));
    assert_eq!(
        eval("datetime(2024-05-01T10:00:00Z)"),
        json!("2024-05-01T10:00:00Z")
    );
    assert_eq!(
        eval("datetime(2024-05-01 10:00:00.5)"),
        json!("2024-05-01T10:00:00.500Z")
    );
    assert_eq!(count("where T > datetime(2024-05-01 12:00)"), 2);
    assert_eq!(count("where T > ago(36500d)"), 5);
    assert_eq!(count("where T > ago(1d)"), 0);
}

#[test]
fn datetime_functions() {
    assert_eq!(
        eval("startofday(datetime(2024-05-01 10:47:13))"),
        json!("2024-05-01T00:00:00Z")
    );
    assert_eq!(
        eval("startofmonth(datetime(2024-05-17))"),
        json!("2024-05-01T00:00:00Z")
    );
    assert_eq!(
        eval("startofyear(datetime(2024-05-17))"),
        json!("2024-01-01T00:00:00Z")
    );
    assert_eq!(
        eval("startofweek(datetime(2024-05-01))"),
        json!("2024-04-28T00:00:00Z")
    );
    assert_eq!(
        eval("endofday(datetime(2024-05-01 10:00))"),
        json!("2024-05-01T23:59:59.999999Z")
    );
    assert_eq!(
        eval("datetime_add('day', 2, datetime(2024-05-01))"),
        json!("2024-05-03T00:00:00Z")
    );
    assert_eq!(
        eval("datetime_add('month', 1, datetime(2024-01-31))"),
        json!("2024-02-29T00:00:00Z")
    );
    assert_eq!(
        eval("datetime_add('second', -30, datetime(2024-05-01))"),
        json!("2024-04-30T23:59:30Z")
    );
    assert_eq!(
        eval("datetime_diff('day', datetime(2024-05-03), datetime(2024-05-01 23:00))"),
        json!(2)
    );
    assert_eq!(
        eval("datetime_diff('hour', datetime(2024-05-01 10:00), datetime(2024-05-01 08:30))"),
        json!(2)
    );
    assert_eq!(
        eval("datetime_diff('month', datetime(2024-03-01), datetime(2023-12-31))"),
        json!(3)
    );
    assert_eq!(
        eval("format_datetime(datetime(2024-05-01 09:05:03.25), 'yyyy-MM-dd HH:mm:ss.fff')"),
        json!("2024-05-01 09:05:03.250")
    );
    assert_eq!(
        eval("format_datetime(datetime(2024-05-01), 'MM/dd/yy')"),
        json!("05/01/24")
    );
    assert_eq!(eval("dayofweek(datetime(2024-05-01))"), json!("3.00:00:00"));
    assert_eq!(eval("hourofday(datetime(2024-05-01 13:45))"), json!(13));
    assert_eq!(eval("dayofmonth(datetime(2024-05-17))"), json!(17));
    assert_eq!(eval("monthofyear(datetime(2024-05-17))"), json!(5));
    assert_eq!(eval("getyear(datetime(2024-05-17))"), json!(2024));
    assert_eq!(
        eval("todatetime('2024-05-01T10:00:00Z')"),
        json!("2024-05-01T10:00:00Z")
    );
    assert_eq!(eval("todatetime('not a date')"), Value::Null);
    assert_eq!(eval("totimespan('01:30:00')"), json!("01:30:00"));
    assert_eq!(
        eval("unixtime_seconds_todatetime(0)"),
        json!("1970-01-01T00:00:00Z")
    );
}

#[test]
fn dynamic_values() {
    let j = r#"parse_json('{"a": {"b": [10, 20, 30]}, "s": "text", "n": 5}')"#;
    assert_eq!(eval(&format!("{j}.s")), json!("text"));
    assert_eq!(eval(&format!("{j}['s']")), json!("text"));
    assert_eq!(eval(&format!("tostring({j}.a.b)")), json!("[10,20,30]"));
    assert_eq!(eval(&format!("toint({j}.a.b[1])")), json!(20));
    assert_eq!(eval(&format!("toint({j}.a.b[-1])")), json!(30));
    assert_eq!(eval(&format!("{j}.missing")), Value::Null);
    assert_eq!(eval(&format!("array_length({j}.a.b)")), json!(3));
    assert_eq!(eval(&format!("array_length({j}.s)")), Value::Null);
    assert_eq!(eval(&format!("{j}.n > 4")), json!(true));
    assert_eq!(
        eval(&format!("tostring(bag_keys({j}))")),
        json!(r#"["a","s","n"]"#)
    );
    assert_eq!(
        eval("tostring(pack('k', 1, 'v', 'x'))"),
        json!(r#"{"k":1,"v":"x"}"#)
    );
    assert_eq!(eval("tostring(bag_pack('k', 1))"), json!(r#"{"k":1}"#));
    assert_eq!(
        eval("tostring(pack_array(1, 'a', true))"),
        json!(r#"[1,"a",true]"#)
    );
    assert_eq!(eval("tostring(dynamic(['a', 'b']))"), json!(r#"["a","b"]"#));
    assert_eq!(eval("array_length(dynamic([]))"), json!(0));
    assert_eq!(
        eval("set_has_element(dynamic(['a', 'b']), 'b')"),
        json!(true)
    );
    assert_eq!(
        eval("array_length(set_union(dynamic([1, 2]), dynamic([2, 3])))"),
        json!(3)
    );
    assert_eq!(
        eval("tostring(set_intersect(dynamic([1, 2]), dynamic([2, 3])))"),
        json!("[2]")
    );
    assert_eq!(
        eval("tostring(set_difference(dynamic([1, 2, 3]), dynamic([2])))"),
        json!("[1,3]")
    );
    assert_eq!(eval("todynamic('[1,2]')[0]"), json!("1"));
    assert_eq!(
        one("datatable(d: dynamic)[dynamic({'User': 'bob'})] | where d.User == 'bob' | count"),
        json!(1)
    );
}

#[test]
fn string_functions() {
    assert_eq!(eval("tolower('AbC')"), json!("abc"));
    assert_eq!(eval("toupper('AbC')"), json!("ABC"));
    assert_eq!(eval("strlen('héllo')"), json!(5));
    assert_eq!(eval("substring('abcdef', 2)"), json!("cdef"));
    assert_eq!(eval("substring('abcdef', 2, 3)"), json!("cde"));
    assert_eq!(eval("strcat('a', 1, 'b')"), json!("a1b"));
    assert_eq!(eval("strcat_delim('-', 'a', 'b', 'c')"), json!("a-b-c"));
    assert_eq!(
        eval("tostring(split('a,b,c', ','))"),
        json!(r#"["a","b","c"]"#)
    );
    assert_eq!(eval("tostring(split('a,b,c', ',', 1))"), json!(r#"["b"]"#));
    assert_eq!(eval("extract('([0-9]+)', 1, 'abc123def')"), json!("123"));
    assert_eq!(eval("extract('x([0-9]+)', 1, 'abc')"), Value::Null);
    assert_eq!(eval("extract('[0-9]+', 0, 'ab12')"), json!("12"));
    assert_eq!(
        eval("tostring(extract_all('([0-9])', 'a1b2c3'))"),
        json!(r#"["1","2","3"]"#)
    );
    assert_eq!(eval("replace_string('aXbXc', 'X', '-')"), json!("a-b-c"));
    assert_eq!(
        eval("replace_regex('a1b22c', '[0-9]+', '#')"),
        json!("a#b#c")
    );
    assert_eq!(eval("trim(' ', '  ab  ')"), json!("ab"));
    assert_eq!(eval("trim_start('x', 'xxab')"), json!("ab"));
    assert_eq!(eval("trim_end('x', 'abxx')"), json!("ab"));
    assert_eq!(eval("indexof('abcabc', 'c')"), json!(2));
    assert_eq!(eval("indexof('abc', 'z')"), json!(-1));
    assert_eq!(eval("countof('aaa', 'a')"), json!(3));
    assert_eq!(eval("countof('abab', 'ab')"), json!(2));
    assert_eq!(eval("base64_decode_tostring('aGVsbG8=')"), json!("hello"));
    assert_eq!(eval("base64_encode_tostring('hello')"), json!("aGVsbG8="));
    assert_eq!(eval("url_decode('a%20b%2Fc')"), json!("a b/c"));
    assert_eq!(eval("reverse('abc')"), json!("cba"));
}

#[test]
fn parsing_functions() {
    let u = "parse_url('https://user:pw@example.com:8443/a/b.php?x=1&y=two#frag')";
    assert_eq!(eval(&format!("{u}.Scheme")), json!("https"));
    assert_eq!(eval(&format!("{u}.Host")), json!("example.com"));
    assert_eq!(eval(&format!("{u}.Port")), json!("8443"));
    assert_eq!(eval(&format!("{u}.Path")), json!("/a/b.php"));
    assert_eq!(eval(&format!("{u}['Query Parameters'].y")), json!("two"));
    assert_eq!(eval(&format!("{u}.Fragment")), json!("frag"));
    let p = r"parse_path(@'C:\Windows\System32\cmd.exe')";
    assert_eq!(eval(&format!("{p}.Filename")), json!("cmd.exe"));
    assert_eq!(eval(&format!("{p}.Extension")), json!("exe"));
    assert_eq!(
        eval(&format!("{p}.DirectoryPath")),
        json!(r"C:\Windows\System32")
    );
    assert_eq!(
        eval(r#"tostring(parse_command_line(@'cmd.exe /c "echo hi" x', 'windows'))"#),
        json!(r#"["cmd.exe","/c","echo hi","x"]"#)
    );
}

#[test]
fn conversions() {
    assert_eq!(eval("toint('12')"), json!(12));
    assert_eq!(eval("toint('x')"), Value::Null);
    assert_eq!(eval("tolong('9000000000')"), json!(9_000_000_000i64));
    assert_eq!(eval("todouble('1.5')"), json!(1.5));
    assert_eq!(eval("toreal(2)"), json!(2.0));
    assert_eq!(eval("tobool('true')"), json!(true));
    assert_eq!(eval("tobool('false')"), json!(false));
    assert_eq!(eval("tostring(42)"), json!("42"));
    assert_eq!(eval("tostring(true)"), json!("true"));
    assert_eq!(eval("tostring(long(null))"), json!(""));
    assert_eq!(eval("7 / 2"), json!(3));
    assert_eq!(eval("7.0 / 2"), json!(3.5));
    assert_eq!(eval("7 % 3"), json!(1));
    assert_eq!(eval("-(3)"), json!(-3));
    assert_eq!(eval("round(2.567, 2)"), json!(2.57));
    assert_eq!(eval("abs(-4)"), json!(4));
    assert_eq!(eval("max_of(1, 5, 3)"), json!(5));
    assert_eq!(eval("min_of(4, 2)"), json!(2));
}

#[test]
fn conditionals() {
    assert_eq!(eval("iff(1 > 2, 'a', 'b')"), json!("b"));
    assert_eq!(eval("iif(true, 1, 2)"), json!(1));
    assert_eq!(eval("case(1 > 2, 'a', 3 > 2, 'b', 'c')"), json!("b"));
    assert_eq!(eval("case(false, 'a', 'c')"), json!("c"));
    assert_eq!(eval("not(true)"), json!(false));
    assert_eq!(eval("true and false or true"), json!(true));
    assert_eq!(eval("true and (false or false)"), json!(false));
    assert_eq!(eval("iff(long(null) > 1, 'yes', 'no')"), json!("no"));
}

#[test]
fn ip_functions() {
    assert_eq!(eval("ipv4_is_private('10.1.2.3')"), json!(true));
    assert_eq!(eval("ipv4_is_private('192.168.0.1')"), json!(true));
    assert_eq!(eval("ipv4_is_private('172.20.0.1')"), json!(true));
    assert_eq!(eval("ipv4_is_private('8.8.8.8')"), json!(false));
    assert_eq!(
        eval("ipv4_is_in_range('10.1.2.3', '10.0.0.0/8')"),
        json!(true)
    );
    assert_eq!(
        eval("ipv4_is_in_range('11.1.2.3', '10.0.0.0/8')"),
        json!(false)
    );
    assert_eq!(
        eval("ipv4_is_in_range('10.1.2.3', '10.1.2.3')"),
        json!(true)
    );
    assert_eq!(eval("ipv4_compare('10.0.0.1', '10.0.0.2')"), json!(-1));
    assert_eq!(eval("ipv4_compare('10.0.0.2', '10.0.0.1')"), json!(1));
    assert_eq!(eval("ipv4_compare('10.0.0.1', '10.0.0.1')"), json!(0));
    assert_eq!(eval("ipv4_compare('10.0.0.1', '10.0.0.200', 24)"), json!(0));
    assert_eq!(eval("parse_ipv4('127.0.0.1')"), json!(2_130_706_433i64));
    assert_eq!(eval("parse_ipv4('not an ip')"), Value::Null);
}

#[test]
fn sources_print_range_datatable_getschema_render() {
    assert_eq!(
        rows("print a = 1, b = 'x'"),
        vec![vec![json!(1), json!("x")]]
    );
    assert_eq!(columns("print 1, x = 2, 3"), ["print_0", "x", "print_2"]);
    assert_eq!(one("range x from 1 to 10 step 1 | count"), json!(10));
    assert_eq!(
        one("range x from 1 to 10 step 3 | summarize sum(x)"),
        json!(22)
    );
    assert_eq!(
        one("range t from datetime(2024-05-01) to datetime(2024-05-02) step 6h | count"),
        json!(5)
    );
    assert_eq!(one("datatable(a: long)[] | count"), json!(0));
    let r =
        rows("datatable(a: long, b: string)[1, 'x'] | getschema | project ColumnName, ColumnType");
    assert_eq!(
        r,
        vec![
            vec![json!("a"), json!("long")],
            vec![json!("b"), json!("string")]
        ]
    );
    let result = runtime()
        .block_on(engine().run(
            "range x from 1 to 3 step 1 | render timechart",
            &QueryOptions::default(),
        ))
        .unwrap();
    assert_eq!(result.chart.as_deref(), Some("timechart"));
    assert_eq!(result.rows(), 3);
}

#[test]
fn hunting_tables_have_defender_columns() {
    let r = rows(
        "DeviceProcessEvents | getschema | where ColumnName in ('Timestamp', 'ProcessId', 'AdditionalFields') | project ColumnName, ColumnType",
    );
    assert_eq!(
        r,
        vec![
            vec![json!("Timestamp"), json!("datetime")],
            vec![json!("ProcessId"), json!("long")],
            vec![json!("AdditionalFields"), json!("string")]
        ]
    );
    assert_eq!(
        one(
            "IdentityLogonEvents | getschema | where ColumnName == 'AdditionalFields' | project ColumnType"
        ),
        json!("dynamic")
    );
    assert_eq!(one("DeviceLogonEvents | count"), json!(0));
}

#[test]
fn limits_and_timeouts() {
    let opts = QueryOptions {
        limit: 5,
        ..QueryOptions::default()
    };
    let r = runtime()
        .block_on(engine().run("range x from 1 to 100 step 1", &opts))
        .unwrap();
    assert_eq!(r.rows(), 5);
    assert!(r.truncated);
    let r = runtime()
        .block_on(engine().run("range x from 1 to 5 step 1", &opts))
        .unwrap();
    assert_eq!(r.rows(), 5);
    assert!(!r.truncated);
    let opts = QueryOptions {
        limit: 10,
        timeout: std::time::Duration::from_millis(1),
    };
    let e = runtime()
        .block_on(engine().run(
            "let R = range x from 1 to 100000 step 1 | extend k = 1; R | join kind=inner R on k | count",
            &opts,
        ))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Execution);
    assert!(e.message.contains("timeout"), "{}", e.message);
}

#[test]
fn errors_point_at_their_place() {
    let q = "DeviceProcessEvents\n| where FileNam == 'x'";
    let e = error(q);
    let loc = e.location(q).unwrap();
    assert_eq!((loc.line, loc.column), (2, 9));
    assert_eq!(e.suggestion.as_deref(), Some("FileName"));
    let e = error("DeviceProcesEvents | take 1");
    assert_eq!(e.suggestion.as_deref(), Some("DeviceProcessEvents"));
    let e = error("print tolowr('A')");
    assert_eq!(e.suggestion.as_deref(), Some("tolower"));
    let e = error("DeviceEvents | summarize x = count() by");
    assert_eq!(e.kind, ErrorKind::Syntax);
    let e = error("externaldata(x: string)['http://example.com/x.csv']");
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("externaldata"), "{}", e.message);
    let e = error("print count()");
    assert_eq!(e.kind, ErrorKind::Semantic);
}

#[test]
fn deep_queries_run_and_deeper_ones_are_refused() {
    let chain = vec!["1 == 2"; 400].join(" or ");
    assert_eq!(eval(&chain), json!(false));
    let nested = format!("{}1{}", "(".repeat(60), ")".repeat(60));
    assert_eq!(eval(&nested), json!(1));
    let too_long = vec!["1 == 2"; 3000].join(" or ");
    assert_eq!(
        error(&format!("print r = {too_long}")).kind,
        ErrorKind::Unsupported
    );
    let too_deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
    assert_eq!(
        error(&format!("print r = {too_deep}")).kind,
        ErrorKind::Unsupported
    );
}

#[test]
fn bag_unpack_makes_a_column_per_property() {
    let t =
        "datatable(id: long, d: dynamic)[1, dynamic({'a': 'x', 'b': 2}), 2, dynamic({'c': 'z'})]";
    assert_eq!(
        columns(&format!("{t} | evaluate bag_unpack(d)")),
        ["id", "a", "b", "c"]
    );
    assert_eq!(
        rows(&format!("{t} | evaluate bag_unpack(d) | sort by id asc")),
        vec![
            vec![json!(1), json!("x"), json!("2"), Value::Null],
            vec![json!(2), Value::Null, Value::Null, json!("z")]
        ]
    );
    assert_eq!(
        columns(&format!("{t} | evaluate bag_unpack(d, 'p_')")),
        ["id", "p_a", "p_b", "p_c"]
    );
    assert_eq!(
        error(&format!("{t} | evaluate pivot(d)")).kind,
        ErrorKind::Unsupported
    );
}
