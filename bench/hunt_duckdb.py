#!/usr/bin/env python3
"""DuckDB's side of the hunting benchmark (crates/rampart/benches/hunt.rs).

    python3 bench/hunt_duckdb.py STORE_DIR QUERY_NAME
    python3 bench/hunt_duckdb.py STORE_DIR write ROWS

Runs the SQL equivalent of one of the benchmark's KQL queries over the Parquet files of a
Rampart store and prints one JSON line: the in-process time of `execute(sql).fetchall()` in
seconds, the column names and the rows (the benchmark compares them with Rampart's). The
connection is fresh (in memory, DuckDB's default of one thread per core), so, like one
`rampart hunt` run, nothing is cached but what the operating system keeps.

The SQL says what Kusto means: `=~` is a case-insensitive comparison (`lower(x) = 'lit'` for
ASCII literals), `has` a case-insensitive whole-term match (a term is a run of ASCII letters and
digits; RE2's case folding is Unicode's, which differs only on characters the data has none of),
`dcount` is exact in Rampart (so `count(DISTINCT ...)`), `join kind=inner` is an inner join, and
`top 10 by X` is `ORDER BY X DESC LIMIT 10`.

`write ROWS` is the reference for the store's ingest: DuckDB writes the first ROWS process
events of the store, held in memory as Arrow as the store receives them, to a Parquet file with
zstd, once in the order read and once `ORDER BY Timestamp` (the store sorts by time), and prints
one JSON line per run: the CPU seconds of the whole process (all of DuckDB's threads) and wall
seconds of the `COPY`, the rows, and the file's bytes. DuckDB keeps no log and does not fsync:
the store's figure includes both.
"""

import json
import os
import resource
import sys
import tempfile
import time

try:
    import duckdb
except ImportError:
    sys.exit("duckdb is not installed for this python3: pip install duckdb")

PROCESS = "DeviceProcessEvents"
NETWORK = "DeviceNetworkEvents"

QUERIES = {
    "filter_count": f"""
        SELECT count(*) AS Count FROM {PROCESS}
        WHERE Timestamp BETWEEN TIMESTAMPTZ '2024-05-01 06:00:00+00'
                            AND TIMESTAMPTZ '2024-05-02 18:00:00+00'
          AND lower(FileName) = 'powershell.exe'
    """,
    # The ILIKE is a cheap prefilter DuckDB users add (every whole-term match contains the
    # word); the regular expression then checks the term boundaries.
    "has_term": f"""
        SELECT count(*) AS Count FROM {PROCESS}
        WHERE ProcessCommandLine ILIKE '%bypass%'
          AND regexp_matches(ProcessCommandLine, '(^|[^0-9A-Za-z])bypass($|[^0-9A-Za-z])', 'i')
    """,
    "dcount": f"""
        SELECT count(*) AS Count FROM (
            SELECT DeviceId, FileName, count(DISTINCT AccountName) AS Accounts
            FROM {PROCESS}
            GROUP BY DeviceId, FileName
            HAVING count(DISTINCT AccountName) > 1
        )
    """,
    "join": f"""
        SELECT p.FileName, count(*) AS Connections
        FROM {PROCESS} p
        JOIN {NETWORK} n ON p.DeviceId = n.DeviceId AND p.ProcessId = n.InitiatingProcessId
        WHERE n.ActionType = 'ConnectionSuccess'
        GROUP BY p.FileName
    """,
    # The time as text: Python's datetime with a zone would need pytz.
    "top_arg_max": f"""
        SELECT DeviceId, CAST(max(Timestamp) AS VARCHAR) AS Timestamp,
               arg_max(FileName, Timestamp) AS FileName,
               arg_max(ProcessCommandLine, Timestamp) AS ProcessCommandLine,
               count(*) AS Processes
        FROM {PROCESS}
        GROUP BY DeviceId
        ORDER BY Processes DESC
        LIMIT 10
    """,
}


def files(store, table):
    """The Parquet files of a table of the store, as DuckDB's read_parquet takes them. No hive
    partitioning: the folder names would add columns the KQL tables do not have."""
    pattern = f"{store}/tables/tenant=default/table={table}/*/*.parquet".replace("'", "''")
    return f"read_parquet('{pattern}', hive_partitioning = false)"


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write(store, rows):
    con = duckdb.connect()
    batch = con.sql(f"SELECT * FROM {files(store, PROCESS)} LIMIT {rows}").to_arrow_table()
    with tempfile.TemporaryDirectory(prefix="rampart-hunt-duckdb-") as folder:
        for order in ("as read", "by Timestamp"):
            out = os.path.join(folder, "out.parquet")
            sort = " ORDER BY Timestamp" if order == "by Timestamp" else ""
            cpu, started = cpu_seconds(), time.perf_counter()
            con.execute(
                f"COPY (SELECT * FROM batch{sort}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
            )
            wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
            print(json.dumps({"order": order, "rows": batch.num_rows, "cpu": cpu,
                              "wall": wall, "bytes": os.path.getsize(out)}))
            os.remove(out)


def main():
    if len(sys.argv) == 4 and sys.argv[2] == "write" and sys.argv[3].isdigit():
        write(sys.argv[1], int(sys.argv[3]))
        return
    if len(sys.argv) != 3 or sys.argv[2] not in QUERIES:
        sys.exit(f"usage: {sys.argv[0]} STORE_DIR {{{'|'.join(QUERIES)}}}\n"
                 f"       {sys.argv[0]} STORE_DIR write ROWS")
    store, name = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    sql = QUERIES[name]
    for table in (PROCESS, NETWORK):
        # Inline, not a view, so that finding the files and reading their schema is timed, as
        # planning is on Rampart's side.
        sql = sql.replace(table, files(store, table))
    started = time.perf_counter()
    cursor = con.execute(sql)
    rows = cursor.fetchall()
    seconds = time.perf_counter() - started
    columns = [d[0] for d in cursor.description]
    print(json.dumps({"seconds": seconds, "columns": columns, "rows": rows}, default=str))


if __name__ == "__main__":
    main()
