"""`python -m pipeline query`: DuckDB views over the Parquet tables.

Views are named after the tables. An article ingested more than once (a rerun, a restart)
appears once: the articles view keeps each article_id's first ingestion, and the other views
keep only the rows of that ingestion. Exact duplicate rows (a window's files being compacted
into one while a reader looks) are shown once.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from schemas import PARTITION_COLUMN, TABLES


def _glob(output: str, table: str) -> str:
    return f"{output.rstrip('/')}/{table}/**/*.parquet"


def _is_local(output: str) -> bool:
    return "://" not in output


def _has_files(output: str, table: str) -> bool:
    if _is_local(output):  # no need for Beam's file systems (a second and a half to import)
        folder = Path(output, table)
        return folder.is_dir() and any(path.is_file() for path in folder.rglob("*.parquet"))
    from apache_beam.io.filesystems import FileSystems

    try:
        return bool(FileSystems.match([_glob(output, table)])[0].metadata_list)
    except Exception:  # no such folder
        return False


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect(output: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views articles, entities, quotes, stances, errors over `output`."""
    if _is_local(output) and not Path(output).is_dir():
        raise FileNotFoundError(f"{output}: no such folder (the pipeline's --output)")
    con = duckdb.connect()
    if output.startswith(("gs://", "s3://", "http://", "https://")):
        con.execute("INSTALL httpfs; LOAD httpfs;")
    for table, schema in TABLES.items():
        source = f"{table}__files"
        if _has_files(output, table):
            con.execute(f"CREATE VIEW {source} AS SELECT * FROM read_parquet({_quote(_glob(output, table))}, "
                        f"hive_partitioning = true, union_by_name = true)")
        else:  # an empty table with the right columns, so queries still run
            empty = schema.empty_table().append_column(PARTITION_COLUMN, pa.array([], pa.date32()))
            con.register(source, empty)
    con.execute("""
        CREATE VIEW articles AS
        SELECT * EXCLUDE (first_ingestion) FROM (
            SELECT *, row_number() OVER (PARTITION BY article_id ORDER BY ingested_at, source_uri) AS first_ingestion
            FROM articles__files)
        WHERE first_ingestion = 1""")
    for table in ("entities", "quotes", "stances"):
        con.execute(f"""
            CREATE VIEW {table} AS
            SELECT DISTINCT t.* FROM {table}__files t
            SEMI JOIN articles a ON t.article_id = a.article_id AND t.ingested_at = a.ingested_at""")
    con.execute("CREATE VIEW errors AS SELECT DISTINCT * FROM errors__files")
    return con


def print_query(output: str, sql: str, max_rows: int = 40, max_width: int = 180) -> None:
    """Run `sql` over the views and print the result as a table."""
    relation = connect(output).sql(sql)
    if relation is None:  # a statement without a result set
        print("ok")
        return
    relation.show(max_rows=max_rows, max_width=max_width, max_col_width=70)
