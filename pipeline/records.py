"""The records that flow between the pipeline's stages.

Plain dataclasses, so the text logic (quotes, speakers, canonical names) is
tested without Beam. Character offsets always index ``Article.text``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Article:
    article_id: str
    source_uri: str
    text: str
    url: str | None = None
    title: str | None = None
    published_at: datetime | None = None  # UTC; None when absent or not a date
    source: str | None = None
    language: str | None = None  # detected language code ("und": cannot tell); models run on en and und only
    ingested_at: datetime | None = None  # when the pipeline read it (UTC)


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    text: str
    label: str  # PER, ORG, LOC, MISC
    score: float
    canonical: str | None = None  # fullest form of this entity in the article


@dataclass(frozen=True)
class Quote:
    start: int  # the words inside the quotation marks
    end: int
    text: str
    speaker: str | None = None  # canonical name, None when no one can be named
    speaker_label: str | None = None  # PER, ORG or None
    cue: str | None = None  # the attribution verb or phrase, e.g. "said", "according to"
    confidence: float = 0.0
    kind: str = "direct"  # direct | indirect


@dataclass(frozen=True)
class StanceScores:
    p_escalatory: float
    p_deescalatory: float
    p_neutral: float

    @property
    def label(self) -> str:
        probs = {"escalatory": self.p_escalatory, "deescalatory": self.p_deescalatory, "neutral": self.p_neutral}
        return max(probs, key=probs.get)

    @property
    def escalation_score(self) -> float:
        return self.p_escalatory - self.p_deescalatory


@dataclass
class AnalysedArticle:
    """An article with everything the stages found in it."""

    article: Article
    entities: list[Entity] = field(default_factory=list)
    quotes: list[Quote] = field(default_factory=list)
    quote_stances: list[StanceScores] = field(default_factory=list)  # parallel to quotes
    article_stance: StanceScores | None = None
    ner_model: str = ""
    stance_model: str = ""
