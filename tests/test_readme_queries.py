"""Every question in the README's "Ask the warehouse" runs on test-server data and answers."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from landing import SOURCES, build_warehouse

from rtds_pipeline.extract.ingest import ingest_window
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.testserver.app import ServerOptions, TestServer

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_queries() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("<!-- ask:begin -->"):text.index("<!-- ask:end -->")]
    found = re.findall(r"\*\*(.+?)\*\*.*?```sql\n(.*?)```", section, flags=re.S)
    return [(q.strip(), sql.strip()) for q, sql in found]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    with TestServer(ServerOptions(port=0, backlog=12_000, seed=21)) as srv:
        lake = open_lake(str(tmp / "lake"))
        for source in SOURCES:
            ingest_window(dataclasses.replace(source, base_url=srv.url), lake,
                          WindowLimits(max_seconds=60, idle_timeout=10))
    build_warehouse(tmp, lake).close()
    return tmp / "wh.duckdb"


def test_the_readme_asks_at_least_eight_questions():
    assert len(readme_queries()) >= 8


@pytest.mark.parametrize("question,query", readme_queries(), ids=[q for q, _ in readme_queries()])
def test_readme_question_answers(demo, question, query):
    import duckdb
    con = duckdb.connect(str(demo), read_only=True)
    rows = con.execute(query).fetchall()
    con.close()
    assert rows, f"no answer to: {question}"


def test_the_plain_duckdb_cli_opens_the_warehouse_read_only(demo):
    duckdb_cli = Path(sys.executable).with_name("duckdb")
    if not duckdb_cli.exists():
        pytest.fail("the DuckDB CLI is not installed: `make test` installs it (duckdb-cli)")
    out = subprocess.run([str(duckdb_cli), "-readonly", "-csv", str(demo), "-c",
                          "SELECT count(*) AS n FROM events"],
                         capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) > 10_000


def test_rtds_pipeline_sql_reads_the_published_warehouse(demo):
    out = subprocess.run([sys.executable, "-m", "rtds_pipeline.cli", "sql", "--warehouse", str(demo),
                          "--csv", "select count(*) as n from events"],
                         capture_output=True, text=True, check=True)
    header, value = out.stdout.strip().splitlines()
    assert header == "n" and int(value) > 10_000
    bad = subprocess.run([sys.executable, "-m", "rtds_pipeline.cli", "sql", "--warehouse",
                          str(demo), "select * from no_such_table"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no_such_table" in bad.stderr
