"""The Parquet sink's buffering, without Beam: bounded memory, and an article's rows before its articles row."""
from datetime import datetime, timezone

import pipeline.write as write
from pipeline.records import AnalysedArticle, Article, Entity
from pipeline.rows import article_rows


def analysed(i: int) -> AnalysedArticle:
    text = f"Article {i}: Vladimir Putin met Joe Biden in Geneva."
    entities = [Entity(text.index(name), text.index(name) + len(name), name, label, 0.99)
                for name, label in (("Vladimir Putin", "PER"), ("Joe Biden", "PER"), ("Geneva", "LOC"))]
    article = Article(f"a{i}", f"in/{i}.txt", text, ingested_at=datetime(2026, 11, 26, tzinfo=timezone.utc))
    return AnalysedArticle(article, entities)


def test_rows_go_out_in_whole_articles_and_the_buffer_stays_bounded(tmp_path, monkeypatch):
    written: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(write, "write_parquet_atomically",
                        lambda output, table, dt, rows: written.append((table, [r["article_id"] for r in rows])) or "f")
    sink = write.WriteParquetFn(str(tmp_path), max_buffered_rows=10)
    sink.setup()
    sink.start_bundle()
    most = 0
    for i in range(12):  # 4 rows per article
        for element in article_rows(analysed(i)):
            sink.process(element)
            most = max(most, sum(map(len, sink._buffers.values())))
    sink.finish_bundle()
    assert most <= 10 + 3  # never more than the limit plus the rest of one article

    visible: set[str] = set()
    for table, ids in written:
        if table == "articles":
            visible.update(ids)
        else:  # a reader never sees an article whose entities are still to come
            assert not visible.intersection(ids), (table, ids)
    flushed = [ids for table, ids in written if table == "articles"]
    assert len(flushed) > 1 and sorted(i for ids in flushed for i in ids) == sorted(f"a{i}" for i in range(12))
