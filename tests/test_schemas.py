from pathlib import Path

import pyarrow as pa

from schemas import TABLES, description, markdown_table

REQUIRED = {
    "articles": {"article_id", "source_uri", "url", "title", "published_at", "ingested_at", "text", "ner_model",
                 "stance_model", "pipeline_version"},
    "entities": {"article_id", "start_char", "end_char", "text", "label", "score", "canonical"},
    "quotes": {"article_id", "quote_id", "start_char", "end_char", "text", "speaker", "speaker_label", "cue", "confidence"},
    "stances": {"article_id", "quote_id", "label", "p_escalatory", "p_deescalatory", "p_neutral", "escalation_score"},
    "errors": {"source_uri", "stage", "error", "detail"},
}


def test_tables_have_the_required_columns_and_every_column_a_description():
    assert set(TABLES) == set(REQUIRED)
    for name, schema in TABLES.items():
        assert REQUIRED[name] <= set(schema.names), name
        for field in schema:
            assert description(field), f"{name}.{field.name} has no description"


def test_readme_column_tables_are_generated_from_the_schemas():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in TABLES:
        assert markdown_table(name) in readme, f"README's {name} table is out of date: run python -m pipeline schema --markdown"


def test_rows_round_trip_through_arrow():
    from datetime import datetime, timezone

    from pipeline.records import AnalysedArticle, Article, Entity, Quote, StanceScores
    from pipeline.rows import article_rows

    now = datetime.now(timezone.utc)
    item = AnalysedArticle(
        Article("abc", "a.txt", "Putin said \"no\".", language="en", ingested_at=now),
        [Entity(0, 5, "Putin", "PER", 0.99, "Vladimir Putin")],
        [Quote(12, 14, "no", "Vladimir Putin", "PER", "said", 0.9)],
        [StanceScores(0.7, 0.1, 0.2)], StanceScores(0.7, 0.1, 0.2), "ner", "stance",
    )
    by_table: dict[str, list[dict]] = {}
    for table, row in article_rows(item):
        by_table.setdefault(table, []).append(row)
    for table, rows in by_table.items():
        arrow = pa.Table.from_pylist(rows, schema=TABLES[table])
        assert arrow.num_rows == len(rows)
    assert [r["quote_id"] for r in by_table["stances"]] == ["abc-q0", None]
    assert abs(by_table["stances"][0]["escalation_score"] - 0.6) < 1e-9
