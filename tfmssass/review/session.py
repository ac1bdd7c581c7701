"""One reader's session over a worklist: what the page shows, what a change may be, what is left.

Kept apart from HTTP so the rules (what counts as done, what two readers disagree on, what an export
holds) are plain functions the server, the exporter and the tests share.

A reader's reading of a film is the film's starting reading overlaid with the reader's own saved
values. In adjudication the starting reading is what the two readers agree on.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.errors import UsageError
from tfmssass.io import image_size
from tfmssass.review.render import Pictures
from tfmssass.review.store import CONFIRMED, NOT_GRADABLE, NOT_VISIBLE, SET, ReviewStore
from tfmssass.review.worklist import Film, Worklist, ordered, reading_from_record, view_fields

#: Two readers' points farther apart than this (original pixels) are a disagreement.
POINT_TOLERANCE_PX = 10.0


class ChangeError(ValueError):
    """A change the page sent that cannot be saved (unknown field, value out of range)."""


def _is_point(value) -> bool:
    """Two numbers (JSON's true and false are not numbers)."""
    return isinstance(value, list) and len(value) == 2 and not any(isinstance(v, bool) for v in value)


def undecided(reading: dict, decided) -> list[str]:
    """The fields of ``reading`` nobody set or confirmed (``decided``: the fields someone did): its
    pre-fills. The view is not one: it places the columns, and the page shows it as the film's."""
    return [name for name in reading if name != "view" and name not in decided]


def disagreements(a: dict, b: dict, tolerance_px: float = POINT_TOLERANCE_PX) -> dict[str, tuple]:
    """Fields where two readings differ: the view; a grade (not gradable included); a point farther
    apart than ``tolerance_px`` or placed by one and 'not visible' to the other; and anything only
    one of them read. Fields neither read are not compared."""
    if a.get("view") != b.get("view"):
        return {"view": (a.get("view"), b.get("view"))}
    if a.get("view") not in anatomy.VIEWS:
        return {}
    out = {}
    for name in view_fields(a["view"]):
        va, vb = a.get(name), b.get(name)
        if va is None and vb is None:
            continue
        if _is_point(va) and _is_point(vb):
            if math.dist(va, vb) > tolerance_px:
                out[name] = (va, vb)
        elif va != vb:
            out[name] = (va, vb)
    return out


def agreed(a: dict, b: dict, tolerance_px: float = POINT_TOLERANCE_PX) -> dict:
    """What two readings agree on (points within tolerance: their mean)."""
    differ = disagreements(a, b, tolerance_px)
    if "view" in differ:
        return {}
    out = {"view": a.get("view")} if a.get("view") else {}
    for name in view_fields(a["view"]) if a.get("view") in anatomy.VIEWS else ():
        if name in differ or a.get(name) is None:
            continue
        va, vb = a[name], b[name]
        out[name] = [round((va[0] + vb[0]) / 2, 2), round((va[1] + vb[1]) / 2, 2)] if _is_point(va) else va
    return out


def crop_version(reading: dict) -> str:
    """Changes whenever the crops would: with the view or any point. The page puts it in the crop
    addresses, so a browser may keep crops until a point moves."""
    view = reading.get("view")
    points = [reading.get(n) for n in anatomy.point_names(view)] if view in anatomy.VIEWS else []
    return hashlib.sha1(json.dumps([view, points]).encode()).hexdigest()[:12]


class ReviewSession:
    """The films of a worklist in reading order, seen by one reader (or one adjudicator)."""

    def __init__(self, worklist: Worklist, store: ReviewStore, reader: str, order: str = "known", seed: int = 0,
                 adjudicate: bool = False, tolerance_px: float = POINT_TOLERANCE_PX):
        self.worklist, self.store, self.reader = worklist, store, reader
        self.order, self.adjudicate, self.tolerance_px = order, adjudicate, tolerance_px
        self.films = ordered(worklist.films, order, seed)
        self.pair: tuple[str, str] | None = None
        self.pictures = Pictures()
        store.register(reader, "adjudicator" if adjudicate else "reader")
        if adjudicate:
            readers = store.readers("reader")
            if len(readers) != 2:
                raise UsageError(f"{store.path}: adjudication needs exactly two readers, found "
                                 f"{len(readers)} ({', '.join(readers) or 'none'})")
            self.pair = (readers[0], readers[1])
            self.films = [f for f in self.films if self.differences(f)]
        self._sizes: dict[str, tuple[int, int]] = {}

    # ---- readings ---------------------------------------------------------------------------------
    def start(self, film: Film) -> dict:
        """The reading a film starts from; a model pre-fills a folder's films when first asked."""
        if film.reading is None:
            cached = self.store.prefill(film.key)
            if cached is None:
                cached = self._predict(film)
                self.store.keep_prefill(film.key, cached)
            film.reading, film.model = cached["reading"], cached["model"]
        return film.reading

    def _predict(self, film: Film) -> dict:
        from tfmssass.scoring.record_maker import Item, RecordMaker
        from tfmssass.scoring.settings import Settings

        predictor = self.worklist.predictor
        radiograph = self.pictures.radiograph(film.path)
        out = predictor.predict([radiograph.image], [film.view])[0]
        maker = RecordMaker(predictor.metadata, Settings(models=self.worklist.note, phantom=False), None)
        record = maker.make(Item(film.path, film.key, image=radiograph.image), out)
        reading, model = reading_from_record(record)
        return {"reading": reading, "model": model}

    def reading_of(self, film: Film, reader: str) -> dict:
        return {**self.start(film), **self.store.item_values(reader, film.key)}

    def differences(self, film: Film) -> dict[str, tuple]:
        a, b = (self.reading_of(film, r) for r in self.pair)
        return disagreements(a, b, self.tolerance_px)

    def current(self, film: Film) -> dict:
        """What this reader sees and exports for the film."""
        if not self.adjudicate:
            return self.reading_of(film, self.reader)
        a, b = (self.reading_of(film, r) for r in self.pair)
        return {**agreed(a, b, self.tolerance_px), **self.store.item_values(self.reader, film.key)}

    def open_fields(self, film: Film, reading: dict | None = None) -> list[str]:
        """What still needs this reader: points not placed, corners not graded, corners the model
        flagged that the reader has not decided (adjudication: disagreements not decided)."""
        reading = self.current(film) if reading is None else reading
        own = self.store.item_values(self.reader, film.key)
        if self.adjudicate:
            return [f for f in self.differences(film) if f not in own]
        view = reading.get("view")
        if view not in anatomy.VIEWS:
            return ["view"]
        points = [f for f in anatomy.point_names(view) if f not in reading]
        corners = [c for c in anatomy.CORNERS[view]
                   if c not in reading or (film.model.get(c, {}).get("review") and c not in own)]
        corners.sort(key=lambda c: (not film.model.get(c, {}).get("review", False),
                                    film.model.get(c, {}).get("confidence") or -1.0))
        return points + corners

    # ---- what the page shows ----------------------------------------------------------------------
    def shown_name(self, index: int) -> str:
        """A film's name on the page; blinded reading hides it (paths often hold the visit date)."""
        return f"film {index + 1}" if self.order == "blinded" else self.films[index].key

    def prefills_left(self, film: Film) -> int:
        """Pre-filled values of an opened film that this reader has neither set nor confirmed: an export
        leaves them out, so a film with any is not done, whatever is still flagged."""
        if self.adjudicate or film.reading is None:
            return 0
        return len(undecided(film.reading, self.store.item_values(self.reader, film.key)))

    def summary(self) -> dict:
        rows = []
        for i, film in enumerate(self.films):
            left = self.open_fields(film) if film.reading is not None or self.adjudicate else None
            rows.append({"index": i, "film": self.shown_name(i), "patient_id": film.patient_id,
                         "visit_date": None if self.order == "blinded" else film.visit_date,
                         "view": film.view, "open": None if left is None else len(left),
                         "prefills": self.prefills_left(film)})
        known = [r["open"] for r in rows if r["open"] is not None]
        return {"reader": self.reader, "mode": "adjudicate" if self.adjudicate else
                "review" if self.worklist.scored else "label",
                "order": self.order, "pair": self.pair, "note": self.worklist.note, "films": rows,
                "done": sum(1 for r in rows if r["open"] == 0 and r["prefills"] == 0), "items_open": sum(known),
                "prefills": sum(r["prefills"] for r in rows),
                "views": {v: {"points": list(anatomy.point_names(v)), "corners": list(anatomy.CORNERS[v])}
                          for v in anatomy.VIEWS},
                "grades": {str(k): v for k, v in anatomy.GRADES.items()}}

    def size(self, film: Film) -> tuple[int, int]:
        if film.key not in self._sizes:
            self._sizes[film.key] = image_size(film.path)
        return self._sizes[film.key]

    def detail(self, index: int) -> dict:
        film = self.films[index]
        reading = self.current(film)
        height, width = self.size(film)
        view = reading.get("view")
        siblings = []  # the patient's films of this view: (index, the version of their crops)
        for i, other in enumerate(self.films):
            if other.patient_id == film.patient_id:
                seen = self.current(other) if other.reading is not None else {"view": other.view}
                if seen.get("view") == view:
                    siblings.append({"index": i, "crops": crop_version(seen)})
        if self.order == "known":
            siblings.sort(key=lambda s: self.films[s["index"]].visit_date or "")
        detail = {"index": index, "film": self.shown_name(index), "patient_id": film.patient_id,
                  "visit_date": None if self.order == "blinded" else film.visit_date,
                  "width": width, "height": height, "reading": reading, "start": self.start(film),
                  "model": film.model, "open": self.open_fields(film, reading), "visits": siblings,
                  "crops": crop_version(reading), "provenance": self.store.provenance(self.reader, film.key)}
        if self.adjudicate:
            detail["readers"] = {r: self.reading_of(film, r) for r in self.pair}
            detail["differences"] = list(self.differences(film))
        return detail

    # ---- changes ----------------------------------------------------------------------------------
    def change(self, index: int, field: str, value) -> str:
        """Check and save one value; returns the time it was saved."""
        if not 0 <= index < len(self.films):
            raise ChangeError(f"no radiograph {index} in this session")
        film = self.films[index]
        if field == "view":
            if value not in anatomy.VIEWS:
                raise ChangeError(f"view must be one of {', '.join(anatomy.VIEWS)}")
        elif field in anatomy.ALL_CORNERS:
            is_grade = isinstance(value, int) and not isinstance(value, bool) and value in anatomy.GRADES
            if value != NOT_GRADABLE and not is_grade:
                raise ChangeError(f"{field}: a grade is 0, 1, 2, 3 or {NOT_GRADABLE!r}")
        elif field in anatomy.POINT_NAMES:
            if value != NOT_VISIBLE:
                height, width = self.size(film)
                if not (_is_point(value) and all(isinstance(v, (int, float)) and np.isfinite(v) for v in value)
                        and -0.5 <= value[0] <= width - 0.5 and -0.5 <= value[1] <= height - 0.5):
                    raise ChangeError(f"{field}: a point is [x, y] inside the {width}x{height} image, "
                                      f"or {NOT_VISIBLE!r}")
                value = [round(float(value[0]), 2), round(float(value[1]), 2)]
        else:
            raise ChangeError(f"unknown field {field!r}")
        prefilled = self.start(film).get(field)  # what the model or the label file said
        how = CONFIRMED if prefilled is not None and prefilled == value else SET
        return self.store.set(self.reader, film.key, field, value, how)

    def crops(self, index: int, corner: str):
        film = self.films[index]
        reading = self.current(film)
        view = reading.get("view")
        if view not in anatomy.VIEWS or corner not in anatomy.CORNERS[view]:
            return None
        return self.pictures.crops(film.path, view, reading, self.worklist.crop)[corner]

