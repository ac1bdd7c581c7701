"""The local coding scheme of tfmssass's DICOM objects: mSASSS has no standard codes.

DICOM lets a producer use its own codes under a private designator beginning with ``99``
(PS3.16, section 8.2). Every code the structured reports use that is not DCM, SCT or UCUM is
defined here, and only here; README "Working with a PACS" lists them for whoever reads the reports.
Code values never change meaning: a new concept gets a new value.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from tfmssass.core import anatomy

#: Coding scheme designator of every code below.
DESIGNATOR = "99TFMSASSS"
SCHEME_NAME = "tfmssass mSASSS codes"
SCHEME_VERSION = "1"


def _code(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=DESIGNATOR, meaning=meaning, scheme_version=SCHEME_VERSION)


def _corner_meaning(corner: str) -> str:
    vertebra, side = corner.split("_")
    return f"{vertebra} {'lower' if side == 'inf' else 'upper'} anterior corner"


#: The procedure the report is about (TID 1500 "Procedure reported").
PROCEDURE = _code("MSASSS", "mSASSS scoring of lateral cervical and lumbar spine radiographs")
#: A corner's finding type: an anterior vertebral corner as mSASSS grades it.
CORNER_FINDING = _code("CORNER", "mSASSS anterior vertebral corner")
#: The 24 corners, by the names of :mod:`tfmssass.core.anatomy` (code value = corner name).
CORNERS: dict[str, CodedConcept] = {c: _code(c, _corner_meaning(c)) for c in anatomy.ALL_CORNERS}

#: Concept name of a corner's grade, and its values.
GRADE = _code("GRADE", "mSASSS corner grade")
GRADES: dict[int, CodedConcept] = {g: _code(f"G{g}", f"grade {g}: {text}") for g, text in anatomy.GRADES.items()}
#: A corner the model could not grade (points not found, under an implant, ...): never a 0.
NOT_GRADED = _code("NG", "not graded")
#: A corner the model judged not gradable (hidden or covered: a reader's "not gradable"): never a 0.
NOT_GRADABLE = _code("NOTGRADABLE", "not gradable: the corner cannot be seen well enough to grade")
#: A corner whose level the film does not reach (cut off): never a 0.
NOT_ON_FILM = _code("OFFFILM", "not on the film")

#: Yes or no: the grade (or the missing grade) needs a human look.
NEEDS_REVIEW = _code("REVIEW", "needs review by a reader")
#: Yes or no: the visit total counts this ungraded corner as its segment's mean.
IMPUTED = _code("IMPUTED", "imputed in the visit total")
#: The grader's probability of the grade given (UCUM "1").
CONFIDENCE = _code("CONFIDENCE", "probability of the grade given")

#: Visit totals (UCUM "{score}").
SUBTOTALS: dict[str, CodedConcept] = {"cervical": _code("CERVICAL", "mSASSS cervical subtotal"),
                                      "lumbar": _code("LUMBAR", "mSASSS lumbar subtotal")}
TOTAL = _code("TOTAL", "mSASSS")
CORNERS_GRADED = _code("GRADED", "corners graded")
CORNERS_IMPUTED = _code("NIMPUTED", "corners imputed")
#: The tracking identifier of the visit-total group, and its finding type.
VISIT_TOTALS = _code("VISIT", "mSASSS visit totals")

#: Free text about the models, e.g. that they were trained on phantoms only.
MODEL_NOTE = _code("MODELNOTE", "note on the models")

YES, NO = codes.SCT.Yes, codes.SCT.No
SCORE_UNIT = CodedConcept(value="{score}", scheme_designator="UCUM", meaning="score")
RATIO_UNIT = codes.UCUM.NoUnits
#: The value of a total that cannot be computed (a view missing, or more than 3 corners of a segment
#: not graded): a coded item in place of the number, so no reader can take it for 0.
NOT_COMPUTED = _code("NOTCOMPUTED", "not computed: view missing or too many corners not graded")
