import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SEED = ROOT / "seeds" / "000_19690041f8aceda6.txt"


@pytest.fixture(scope="session")
def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def seed_gold() -> dict:
    return json.loads((Path(__file__).parent / "seed_gold.json").read_text())


@pytest.fixture(scope="session")
def ner_model():
    from pipeline.models import load_model

    return load_model("ner", None)


@pytest.fixture(scope="session")
def stance_model():
    from pipeline.models import load_model

    return load_model("stance", None)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip: a user's clone has no ../shared."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is only on the project's machines)")
    return path
