import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    """The suite's one shared phantom set: 3 patients, 2 visits each, both views (12 DICOM
    radiographs of realistic difficulty, seed 11) with labels.csv. Tests read it; a test that
    changes files copies it first."""
    from tfmssass.synth.sets import synthesize

    out = tmp_path_factory.mktemp("phantoms") / "ph"
    synthesize(out, patients=3, visits=2, seed=11, workers=2, progress=False, style="geometric")
    return out
