"""News quotes, entities and escalation stance, as a streaming Apache Beam pipeline."""

__version__ = "0.1.0"
