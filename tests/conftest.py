import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    """The suite's one shared phantom set: 3 patients, 2 visits each, both views (12 DICOM
    radiographs of realistic difficulty in the default radiograph style, seed 14) with labels.csv.
    The shipped demo reads all 12 (it refuses about one film in nine of this style: bench/RESULTS.md),
    so the tests of what comes after scoring have every film to work with. Tests read it; a test that
    changes files copies it first."""
    from tfmssass.synth.sets import synthesize

    out = tmp_path_factory.mktemp("phantoms") / "ph"
    synthesize(out, patients=3, visits=2, seed=14, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def clean_phantoms(tmp_path_factory) -> Path:
    """The same layout in the geometric style (seed 11): flat shapes with every corner plain to see, for
    tests whose counts must not depend on what the shoulders hide, and for that style's own checks."""
    from tfmssass.synth.sets import synthesize

    out = tmp_path_factory.mktemp("clean_phantoms") / "ph"
    synthesize(out, patients=3, visits=2, seed=11, workers=2, progress=False, style="geometric")
    return out
