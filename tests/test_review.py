"""tfmssass review: a real server, a real database and (where Chromium is installed) a real browser."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from review_helpers import CHROMIUM, api, base, browser_page, call, review_server

from tfmssass.cli import main
from tfmssass.core import anatomy
from tfmssass.core.config import keypoint_config
from tfmssass.io.labels import corner_label, load_labels, ng_column, write_labels
from tfmssass.review.export import export_labels
from tfmssass.review.session import ReviewSession, disagreements
from tfmssass.review.store import CONFIRMED, NOT_GRADABLE, NOT_VISIBLE, ReviewStore
from tfmssass.review.worklist import SourceError, open_worklist, reading_from_record
from tfmssass.scoring.folder import ScoredFolder
from tfmssass.scoring.run import run_scoring
from tfmssass.stages.runs import RunFolderError, initial_weights

needs_browser = pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (.ci/run installs it)")


def _cli(*args) -> subprocess.CompletedProcess:
    """A command in its own process (what trains or scores starts TensorFlow afresh, as a user's would)."""
    return subprocess.run([sys.executable, "-m", "tfmssass.cli", *map(str, args)], capture_output=True, text=True)


def _command(*args) -> subprocess.CompletedProcess:
    """A quick command (export, check, agreement) in this process: the same Click entry point."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def scored_template(phantoms, tmp_path_factory) -> Path:
    """The phantoms scored by the shipped demo model (the folder a trial team would review)."""
    from tfmssass.scoring.settings import Settings
    from tfmssass.serving.predictors import open_predictor

    out = tmp_path_factory.mktemp("review") / "scored"
    predictor, text, phantom = open_predictor(None, None, None, None, None, None)
    counts = run_scoring(phantoms, out, predictor, Settings(models=text, phantom=phantom), progress=False)
    assert counts["scored"] == 12
    return out


@pytest.fixture
def scored(scored_template, tmp_path) -> Path:
    """A fresh copy per test (each test starts with an empty review database)."""
    return Path(shutil.copytree(scored_template, tmp_path / "scored"))


def _model_readings(scored: Path) -> dict[str, dict]:
    """What the reader is shown: the grades of the scored tables (longitudinal), not each radiograph's alone."""
    records, _, _ = ScoredFolder(scored).decided_records()
    return {r.file: reading_from_record(r)[0] for r in records if r.scored}


# ---- security -------------------------------------------------------------------------------------

def test_token_is_required_and_no_path_reaches_a_file(scored):
    (scored / "secret.txt").write_text("not for the browser")
    with review_server(scored, "--reader", "A") as (url, _):
        root, token = base(url)
        assert root.startswith("http://127.0.0.1:")
        assert call(f"{root}/")[0] == 403
        assert call(f"{root}/api/session")[0] == 403
        assert call(f"{root}/api/films/0/image", token="wrong-token")[0] == 403
        assert call(f"{root}/?token={token}")[0] == 200
        assert call(f"{root}/api/films/0/image?token={token}")[0] == 200
        for path in ["/static/../review.sqlite", "/static/..%2F..%2Fsecret.txt", "/static/%2e%2e%2fsecret.txt",
                     "/static//etc/passwd", "/static/%2Fetc%2Fpasswd", "/api/films/99/image", "/api/films/-1/image",
                     "/api/films/..%2F..%2Fsecret.txt/image", "/api/films/0/crop/..%2F..%2Fsecret.txt",
                     "/../secret.txt", "/%2e%2e/secret.txt", "/secret.txt", "/review.sqlite"]:
            status, body = call(root + path, token=token)
            assert 400 <= status < 500, (path, status)
            assert b"not for the browser" not in body and b"SQLite" not in body and b"root:" not in body
        # a change is checked before it is saved: unknown fields, grades and points out of range
        detail = api(root, token, "films/0")
        view = detail["reading"]["view"]
        point = anatomy.point_names(view)[0]
        for field, value in [(anatomy.CORNERS[view][0], 4), (anatomy.CORNERS[view][0], True),
                             (anatomy.CORNERS[view][0], "2"), (anatomy.CORNERS[view][0], [1, 2]),
                             (point, [detail["width"] + 5, 10]),
                             (point, [float("nan"), 3]), (point, "here"), ("image", "x.dcm"), ("view", "frontal")]:
            status, body = call(f"{root}/api/films/0", {"field": field, "value": value}, token)
            assert status == 422, (field, value, body)
        assert call(f"{root}/api/films/0", {"field": point, "value": NOT_VISIBLE}, token)[0] == 200
        assert api(root, token, "films/0")["reading"][point] == NOT_VISIBLE
    assert ReviewStore(scored / "review.sqlite").audit()[-1]["new"] == NOT_VISIBLE  # one change: the valid one
    assert len(ReviewStore(scored / "review.sqlite").audit()) == 1


def _raw(root: str, body: bytes, headers: dict, method: str = "POST", path: str = "/api/films/0") -> int:
    """One request exactly as given (no header added): its status."""
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(root)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    status = connection.getresponse().status
    connection.close()
    return status


def test_only_the_servers_own_page_can_write(scored):
    with review_server(scored, "--reader", "A") as (url, _):
        root, token = base(url)
        host = root.split("//")[1]
        view = api(root, token, "films/0")["reading"]["view"]
        corner, point = anatomy.CORNERS[view][0], anatomy.point_names(view)[0]
        change = json.dumps({"field": corner, "value": 2}).encode()
        own = {"Host": host, "X-Token": token, "Content-Type": "application/json"}
        cookie = {"Cookie": f"tfmssass-review-{root.rsplit(':', 1)[1]}={token}"}
        refused = [  # (what is wrong, headers, body, the answer)
            ("cookie only, text/plain, foreign origin", {"Host": host, **cookie, "Content-Type": "text/plain",
                                                         "Origin": "http://127.0.0.1:1"}, change, 403),
            ("cookie only, JSON", {"Host": host, **cookie, "Content-Type": "application/json"}, change, 403),
            ("token in the address only", {"Host": host, "Content-Type": "application/json"}, change, 403),
            ("not JSON", {**own, "Content-Type": "text/plain"}, change, 415),
            ("another origin", {**own, "Origin": "http://127.0.0.1:1"}, change, 403),
            ("another host (DNS rebinding)", {**own, "Host": f"evil.example:{host.rsplit(':', 1)[1]}"}, change, 421),
            ("too large", own, b'{"field": "' + b"x" * 200_000 + b'", "value": 1}', 413),
            ("nested too deep", own, b"[" * 5000 + b"]" * 5000, 422),
            ("a point of booleans", own, json.dumps({"field": point, "value": [True, False]}).encode(), 422),
            ("not an object", own, b"[1, 2]", 422),
        ]
        for what, headers, body, answer in refused:
            path = "/api/films/0" if "Cookie" in headers or "X-Token" in headers else f"/api/films/0?token={token}"
            assert _raw(root, body, headers, path=path) == answer, what
        assert _raw(root, b"", {"Host": f"evil.example:{host.rsplit(':', 1)[1]}"}, "GET",
                    f"/api/session?token={token}") == 421
        assert _raw(root, change, {**own, "Origin": root}) == 200  # the page's own request
    audit = ReviewStore(scored / "review.sqlite").audit()
    assert len(audit) == 1 and audit[0]["new"] == 2
    for name in ("review.sqlite", "review.sqlite-wal", "review.sqlite-shm"):
        if (scored / name).exists():
            assert (scored / name).stat().st_mode & 0o077 == 0, name


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_a_page_on_another_port_cannot_write_through_the_readers_browser(scored, tmp_path):
    import http.server
    import socketserver

    with review_server(scored, "--reader", "A") as (url, _), browser_page() as (page, errors):
        root, token = base(url)
        view = api(root, token, "films/0")["reading"]["view"]
        before = api(root, token, "films/0")["reading"].get(anatomy.CORNERS[view][0])
        page.goto(url)  # the reader's browser now holds the cookie
        page.wait_for_selector("#status:has-text('ready')")
        evil = tmp_path / "evil"
        evil.mkdir()
        new = 3 if before != 3 else 0
        (evil / "index.html").write_text(f"""<!doctype html><body><script>
          const body = JSON.stringify({{field: "{anatomy.CORNERS[view][0]}", value: {new}}});
          Promise.allSettled([
            fetch("{root}/api/films/0", {{method: "POST", mode: "no-cors", credentials: "include",
                                         headers: {{"Content-Type": "text/plain"}}, body}}),
            fetch("{root}/api/films/0", {{method: "POST", credentials: "include",
                                         headers: {{"Content-Type": "application/json"}}, body}}),
          ]).then(() => document.title = "tried");
        </script></body>""")
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(evil))  # noqa: E731
        with socketserver.TCPServer(("127.0.0.1", 0), handler) as other:
            threading.Thread(target=other.serve_forever, daemon=True).start()
            try:
                page.goto(f"http://127.0.0.1:{other.server_address[1]}/index.html")
                page.wait_for_function("document.title === 'tried'", timeout=20000)
            finally:
                other.shutdown()
        assert api(root, token, "films/0")["reading"].get(anatomy.CORNERS[view][0]) == before
    assert ReviewStore(scored / "review.sqlite").audit() == []


@pytest.mark.slow
def test_listening_on_every_address_warns_and_still_needs_the_token(scored):
    with review_server(scored, "--reader", "A", "--host", "0.0.0.0") as (url, proc):
        root, token = base(url)
        assert root.startswith("http://127.0.0.1:")
        assert call(f"{root}/api/session")[0] == 403
        assert call(f"{root}/api/session", token=token)[0] == 200
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "warning: listening on 0.0.0.0" in err
    assert token not in err  # the token is printed once, on stdout, never into logs


def test_a_link_out_of_the_folder_is_not_served(phantoms, tmp_path):
    folder = tmp_path / "films"
    folder.mkdir()
    shutil.copy(phantoms / "PH0001" / sorted(os.listdir(phantoms / "PH0001"))[0] / "cervical.dcm", folder / "in.dcm")
    outside = tmp_path / "outside.dcm"
    shutil.copy(folder / "in.dcm", outside)
    (folder / "link.dcm").symlink_to(outside)
    worklist = open_worklist(folder)
    assert [f.key for f in worklist.films] == ["in.dcm"]
    assert any(line.startswith("link.dcm: outside") for line in worklist.skipped)


# ---- the browser ----------------------------------------------------------------------------------

@needs_browser
def _back_to_the_first_film(page) -> None:
    """Once the keys pressed are done, the first radiograph on the page again (the page's CSP forbids the
    string evaluation wait_for_function uses, so this polls)."""
    deadline = time.monotonic() + 30
    while page.evaluate("() => window.reviewState.pending") and time.monotonic() < deadline:
        time.sleep(0.05)
    page.evaluate("() => openFilm(0)")
    while page.evaluate("() => window.reviewState.film.index") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def test_review_in_the_browser_by_keyboard_and_mouse_then_export(scored, tmp_path):
    model = _model_readings(scored)
    with review_server(scored, "--reader", "A") as (url, _), browser_page() as (page, errors):
        root, token = base(url)
        page.goto(url)
        page.wait_for_selector("#status:has-text('ready')")
        first = api(root, token, "films/0")
        film, corners = first["film"], anatomy.CORNERS[first["reading"]["view"]]
        # a corner to grade 3 (a bridge) whose partner across the disk is not 3: the page must say so
        k = next(k for k in range(12) if model[film].get(corners[k]) not in (3, None)
                 and model[film].get(corners[k ^ 1]) != 3)
        corner, new_grade = corners[k], 3
        # drag the anterior point of the third level 12 image pixels to the right
        level = anatomy.LEVELS[first["reading"]["view"]][2]
        x, y = model[film][f"{level}_a"]
        box = page.evaluate("([x, y]) => { const m = document.getElementById('svg').getScreenCTM();"
                            " return [m.a * x + m.e, m.d * y + m.f, m.a]; }", [x, y])
        page.mouse.move(box[0], box[1])
        page.mouse.down()
        page.mouse.move(box[0] + 6 * box[2], box[1], steps=4)
        page.mouse.move(box[0] + 12 * box[2], box[1], steps=4)
        page.mouse.up()
        page.wait_for_selector(f"#status:has-text('saved {level}_a')")
        page.click(f"#corners tr[data-field='{corner}'] td:first-child")  # select a corner …
        # the model's value, not yet the reader's
        assert "(pre-fill)" in page.inner_text(f"#corners tr[data-field='{corner}']")
        page.keyboard.press(str(new_grade))  # … and grade it by keyboard
        page.wait_for_selector(f"#status:has-text('saved {corner} = {new_grade}')")
        assert f"a bridge spans {anatomy.CORNER_LEVEL[corner]}" in page.inner_text("#status")
        _back_to_the_first_film(page)  # the page may have moved on to the next radiograph with items open
        assert "(pre-fill)" not in page.inner_text(f"#corners tr[data-field='{corner}']")
        # another corner the reader cannot see: x writes "not gradable"; a third, Enter confirms the model's
        hidden, kept = [c for c in corners if c != corner and model[film].get(c) is not None][:2]
        page.click(f"#corners tr[data-field='{hidden}'] td:first-child")
        page.keyboard.press("x")
        page.wait_for_selector(f"#status:has-text('saved {hidden} = NG')")
        _back_to_the_first_film(page)
        page.click(f"#corners tr[data-field='{kept}'] td:first-child")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#status:has-text('saved {kept} = {model[film][kept]}')")
        _back_to_the_first_film(page)
        assert "still pre-filled" in page.inner_text("#prefills")
        provenance = api(root, token, "films/0")["provenance"]
        assert provenance == {f"{level}_a": "set", corner: "set", hidden: "set", kept: "confirmed"}
        # a film with pre-fills left is not done, whatever is still flagged: its export would leave them out
        summary, shown = api(root, token, "session"), api(root, token, "films/0")["reading"]
        assert summary["films"][0]["prefills"] == len([f for f in shown if f != "view"]) - len(provenance) > 0
        assert summary["done"] == 0 and f"{summary['prefills']} values still pre-filled" in page.inner_text("#progress")
        page.screenshot(path=str(tmp_path / "review.png"))
        page.reload()
        page.wait_for_selector("#status:has-text('ready')")
        row = page.inner_text(f"#corners tr[data-field='{corner}']")
        assert row.split("\t")[1].strip() == str(new_grade)  # persisted, as shown after a reload
        assert errors == []
        moved = api(root, token, "films/0")["reading"][f"{level}_a"]
    tolerance = max(1.0, 1.5 / box[2])  # the mouse moves by whole screen pixels: 1.5 of them, in image pixels
    assert math.isclose(moved[0], x + 12, abs_tol=tolerance) and math.isclose(moved[1], y, abs_tol=tolerance)
    print(f"screenshot: {tmp_path / 'review.png'}")

    # the export holds what the reader set or confirmed on that film, and not one pre-fill
    out = tmp_path / "export" / "labels.csv"
    result = _command("review", "export", scored, "--reader", "A", "--out", out)
    assert result.returncode == 0, result.stderr
    assert _command("labels", "check", out).returncode == 0
    frame, _ = load_labels(out)
    assert len(frame) == 1 and frame.loc[0, "image"].endswith(film.split("/")[-1])
    row = frame.loc[0]
    read = {name: corner_label(row, name) for name in anatomy.CORNERS[row["view"]]
            if corner_label(row, name) is not None}
    assert read == {corner: new_grade, hidden: "NG", kept: model[film][kept]}
    placed = [c for c in anatomy.view_keypoint_columns(row["view"]) if pd.notna(row[c])]
    assert placed == [f"{level}_ax", f"{level}_ay"]
    # --include-prefill adds every pre-fill, and says how many
    result = _command("review", "export", scored, "--reader", "A", "--out", out, "--include-prefill")
    assert result.returncode == 0 and "pre-filled values nobody confirmed are written" in result.stderr
    frame, _ = load_labels(out)
    changed = []
    for _, row in frame.iterrows():
        key = os.path.relpath((out.parent / row["image"]).resolve(), json.loads(
            (scored / ".work" / "source.json").read_text())["root"])
        reading = model[key]
        for name in anatomy.CORNERS[row["view"]]:
            said = {"NG": NOT_GRADABLE}.get(corner_label(row, name), corner_label(row, name))
            if said != reading.get(name):
                changed.append((key, name))
        for lv in anatomy.LEVELS[row["view"]]:
            for p, (cx, cy) in (("c", anatomy.keypoint_columns(lv)[:2]), ("a", anatomy.keypoint_columns(lv)[2:])):
                want = reading.get(f"{lv}_{p}")
                got = None if pd.isna(row[cx]) else [row[cx], row[cy]]
                if (want is None) != (got is None) or (want and math.dist(want, got) > 0.01):
                    changed.append((key, f"{lv}_{p}"))
    assert sorted(changed) == sorted([(film, corner), (film, hidden), (film, f"{level}_a")])


@needs_browser
@pytest.mark.slow
def test_guided_labelling_from_scratch_puts_points_where_clicked(phantoms, tmp_path):
    labels, _ = load_labels(phantoms / "labels.csv", check_images=False)
    truth = labels.iloc[0]
    folder = tmp_path / "films" / "PH0001" / truth["visit_date"]
    folder.mkdir(parents=True)
    shutil.copy(phantoms / truth["image"], folder / "film.dcm")
    view = truth["view"]
    clicks = []
    with review_server(tmp_path / "films", "--reader", "A") as (url, _), browser_page() as (page, errors):
        page.goto(url)
        page.wait_for_selector("#status:has-text('ready')")
        assert "Set the view" in page.inner_text("#prompt")
        page.keyboard.press("c" if view == "cervical" else "l")
        for level in anatomy.LEVELS[view]:
            cx, cy, ax, ay = (float(truth[c]) for c in anatomy.keypoint_columns(level))
            for name, (x, y) in ((f"{level} centre", (cx, cy)), (f"{level} anterior", (ax, ay))):
                page.wait_for_selector(f"#prompt:has-text('Click: {name}')")
                # zoom in on the point as a reader would, then click on it
                page.evaluate("([x, y]) => { window.reviewState.box = [x - 60, y - 40, 120, 80]; draw(); }", [x, y])
                sx, sy = page.evaluate("([x, y]) => { const m = document.getElementById('svg').getScreenCTM();"
                                       " return [m.a * x + m.e, m.d * y + m.f]; }", [x, y])
                if (level, name) == (anatomy.LEVELS[view][-1], f"{level} anterior"):
                    page.keyboard.press("Enter")  # keyboard only: the middle of the view, here the point …
                    page.keyboard.press("Enter")  # … kept
                else:
                    page.mouse.click(sx, sy)
                clicks.append((level, name.split()[-1], x, y))
                page.wait_for_selector(f"#status:has-text('saved {level}_{'c' if 'centre' in name else 'a'}')")
        page.wait_for_selector(f"#prompt:has-text('{anatomy.CORNERS[view][0]}: grade')")
        for _ in anatomy.CORNERS[view]:
            page.keyboard.press("1")
        page.wait_for_selector("#prompt:has-text('this radiograph is done')")
        page.screenshot(path=str(tmp_path / "labelling.png"))
        assert errors == []
    out = tmp_path / "labels.csv"
    assert _command("review", "export", tmp_path / "films", "--reader", "A", "--out", out).returncode == 0
    frame, _ = load_labels(out)
    row = frame.iloc[0]
    for level, kind, x, y in clicks:
        cx, cy, ax, ay = anatomy.keypoint_columns(level)
        got = (row[cx], row[cy]) if kind == "centre" else (row[ax], row[ay])
        assert math.dist(got, (x, y)) <= 1.0, (level, kind, got, (x, y))
    assert all(row[c] == 1 for c in anatomy.CORNERS[view])


# ---- storage: two readers at once, a killed server -------------------------------------------------

@pytest.mark.slow
def test_two_readers_at_once_and_a_killed_server_lose_nothing(scored):
    acknowledged = {"A": {}, "B": {}}
    with (review_server(scored, "--reader", "A") as (url_a, proc_a),
          review_server(scored, "--reader", "B") as (url_b, _)):
        servers = {"A": base(url_a), "B": base(url_b)}
        films = api(*servers["A"], "session")["films"]

        def work(reader, stop_at=None):
            root, token = servers[reader]
            for i in range(40):
                film = i % len(films)
                try:
                    detail = api(root, token, f"films/{film}")
                    corner = anatomy.CORNERS[detail["reading"]["view"]][(i // len(films)) % 12]
                    value = NOT_GRADABLE if i % 7 == 0 else (i + (reader == "B")) % 4
                    status, body = call(f"{root}/api/films/{film}", {"field": corner, "value": value}, token)
                except OSError:  # the killed server
                    return
                if status != 200:
                    return
                acknowledged[reader][(detail["film"], corner)] = value
                if stop_at is not None and i == stop_at:
                    os.kill(proc_a.pid, signal.SIGKILL)  # mid-session, right after an acknowledged change

        threads = [threading.Thread(target=work, args=("A", 25)), threading.Thread(target=work, args=("B",))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        proc_a.wait(10)
        assert proc_a.returncode == -signal.SIGKILL
    assert len(acknowledged["A"]) == 26 and len(acknowledged["B"]) == 40
    with review_server(scored, "--reader", "A") as (url, _):  # restarted: everything acknowledged is there
        root, token = base(url)
        for reader, changes in acknowledged.items():
            for (film_key, corner), value in changes.items():
                index = next(f["index"] for f in api(root, token, "session")["films"] if f["film"] == film_key)
                if reader == "A":
                    assert api(root, token, f"films/{index}")["reading"][corner] == value
    store = ReviewStore(scored / "review.sqlite")
    for reader, changes in acknowledged.items():
        values = store.values(reader)
        for (film_key, corner), value in changes.items():
            assert values[film_key][corner] == value
    assert len(store.audit()) >= sum(len(c) for c in acknowledged.values())


# ---- reading protocols ----------------------------------------------------------------------------

@pytest.mark.slow
def test_blinded_order_hides_dates_and_shuffles(scored, tmp_path):
    known = ReviewSession(open_worklist(scored), ReviewStore(tmp_path / "known.sqlite"), "A").summary()["films"]
    with review_server(scored, "--reader", "B", "--order", "blinded") as (url, _):
        root, token = base(url)
        blinded = api(root, token, "session")["films"]
        details = [call(f"{root}/api/films/{i}", token=token)[1].decode() for i in range(len(blinded))]
    dates = {f["visit_date"] for f in known}
    assert all(f["visit_date"] is None for f in blinded)
    assert not any(date in text for date in dates for text in details)
    assert [f["film"] for f in blinded] == [f"film {i + 1}" for i in range(len(known))]  # paths hold dates
    shown = lambda films: [(f["patient_id"], f["view"]) for f in films]  # noqa: E731
    assert sorted(shown(blinded)) == sorted(shown(known)) and shown(blinded) != shown(known)
    assert shown(known) == sorted(shown(known), key=lambda t: t[0])  # known: a patient's visits together
    for patient in {f["patient_id"] for f in known}:
        dates = [f["visit_date"] for f in known if f["patient_id"] == patient]
        assert dates == sorted(dates)  # … in time order


# ---- two readers and an adjudicator ---------------------------------------------------------------

def _labelled_folder(phantoms, tmp_path) -> tuple[Path, Path]:
    """The phantom folder with its labels, pre-filling both readers."""
    folder = Path(shutil.copytree(phantoms, tmp_path / "films"))
    return folder, folder / "labels.csv"


def _confirm_everything(store: ReviewStore, reader: str, worklist) -> None:
    """A reader who went through every film and accepted every value shown (Enter on each)."""
    for film in worklist.films:
        for name, value in (film.reading or {}).items():
            if name != "view":
                store.set(reader, film.key, name, value, CONFIRMED)


def test_disagreements_rule():
    a = {"view": "cervical", "C2-C3_c": [100.0, 100.0], "C2-C3_a": [150.0, 100.0], "C2_inf": 1, "C3_sup": 0,
         "C3_inf": 2}
    b = {"view": "cervical", "C2-C3_c": [108.0, 100.0], "C2-C3_a": [150.0, 111.0], "C2_inf": 1, "C3_sup": NOT_GRADABLE,
         "C4_sup": 0, "C3-C4_c": NOT_VISIBLE}
    assert set(disagreements(a, b, 10.0)) == {"C2-C3_a", "C3_sup", "C3_inf", "C4_sup", "C3-C4_c"}
    assert disagreements(a, {**a, "view": "lumbar"}) == {"view": ("cervical", "lumbar")}


def test_adjudication_shows_exactly_the_disagreements_and_its_export(phantoms, tmp_path):
    folder, labels_csv = _labelled_folder(phantoms, tmp_path)
    worklist = open_worklist(folder, labels_csv)
    films = {f.key: f for f in worklist.films}
    store = ReviewStore(folder / "review.sqlite")
    store.keep_setting("labels", str(labels_csv))
    for reader in ("A", "B"):
        store.register(reader, "reader")
    keys = sorted(films)
    one, two = films[keys[0]], films[keys[3]]
    c1, c2 = anatomy.CORNERS[one.view], anatomy.CORNERS[two.view]
    p1 = anatomy.point_names(one.view)
    start = one.reading
    # A and B: the same change (agreement), a different grade, not gradable vs a grade, a point 25 px
    # apart, a point 4 px apart (within tolerance)
    store.set("A", one.key, c1[0], 3)
    store.set("B", one.key, c1[0], 3)
    store.set("A", one.key, c1[1], (start[c1[1]] + 1) % 4)
    store.set("B", two.key, c2[5], NOT_GRADABLE)
    store.set("A", one.key, p1[2], [start[p1[2]][0] + 25, start[p1[2]][1]])
    store.set("B", one.key, p1[4], [start[p1[4]][0] + 4, start[p1[4]][1]])
    store.close()
    expected = {one.key: {c1[1], p1[2]}, two.key: {c2[5]}}
    with review_server(folder, "--reader", "J", "--adjudicate") as (url, _):
        root, token = base(url)
        shown = api(root, token, "session")["films"]
        assert {f["film"] for f in shown} == set(expected)
        for f in shown:
            detail = api(root, token, f"films/{f['index']}")
            assert set(detail["differences"]) == expected[f["film"]]
            assert set(detail["readers"]) == {"A", "B"}
        index = next(f["index"] for f in shown if f["film"] == one.key)
        assert call(f"{root}/api/films/{index}", {"field": c1[1], "value": 2}, token)[0] == 200
    out = tmp_path / "adjudicated.csv"
    result = _command("review", "export", folder, "--adjudicated", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "2 disagreements not adjudicated" in result.stderr
    frame = pd.read_csv(out)
    row = frame[frame["image"].str.endswith(one.key)].iloc[0]
    assert row[c1[0]] == 3 and row[c1[1]] == 2  # agreed change, adjudicated decision
    x_column = lambda point: f"{point[:-2]}_{point[-1]}x"  # noqa: E731  'C3-C4_c' → 'C3-C4_cx'
    assert pd.isna(row[x_column(p1[2])])  # undecided point: blank, not a guess
    x = row[x_column(p1[4])]
    assert math.isclose(x, start[p1[4]][0] + 2, abs_tol=0.01)  # within tolerance: the mean
    # the other film: its one disagreement undecided, and nothing else anybody decided: no row at all
    assert not frame["image"].str.endswith(two.key).any()


def test_reader_agreement_from_two_exports(phantoms, tmp_path):
    folder, labels_csv = _labelled_folder(phantoms, tmp_path)
    worklist = open_worklist(folder, labels_csv)
    store = ReviewStore(folder / "review.sqlite")
    store.keep_setting("labels", str(labels_csv))
    for reader in ("A", "B"):
        store.register(reader, "reader")
    for reader in ("A", "B"):
        _confirm_everything(store, reader, worklist)
    film = worklist.films[0]
    store.set("B", film.key, anatomy.CORNERS[film.view][0], 3)
    store.close()
    for reader in ("A", "B"):
        assert _command("review", "export", folder, "--reader", reader, "--out", tmp_path / f"{reader}.csv").returncode == 0
    result = _command("evaluate", "agreement", "--scores", tmp_path / "A.csv", "--labels", tmp_path / "B.csv",
                  "--out", tmp_path / "agreement")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "agreement" / "agreement.json").read_text())
    assert summary["visits_paired"] == 6
    corners = summary["corners"]
    assert corners["graded_by_both"] > 100 and corners["exact_agreement"] < 1.0
    assert corners["differing"] == 1


@pytest.mark.slow
def test_pseudonymised_folder_stays_pseudonymised(phantoms, tmp_path):
    out = tmp_path / "scored"
    salt = tmp_path / "salt"
    salt.write_text("a-long-enough-salt")
    assert _cli("score", phantoms, "--out", out, "--pseudonymize", "--salt-file", salt, "--quiet").returncode == 0
    with pytest.raises(SourceError, match="pseudonymised.*--images"):
        open_worklist(out)  # it does not say where its radiographs are
    with review_server(out, "--reader", "A", "--images", phantoms) as (url, _):
        root, token = base(url)
        text = call(f"{root}/api/session", token=token)[1].decode()
        detail = call(f"{root}/api/films/0", token=token)[1].decode()
        assert call(f"{root}/api/films/0/image", token=token)[0] == 200
        view = json.loads(detail)["reading"]["view"]
        assert call(f"{root}/api/films/0", {"field": anatomy.CORNERS[view][0], "value": 1}, token)[0] == 200
    for secret in ("PH000", "cervical.dcm", "lumbar.dcm", str(phantoms)):
        assert secret not in text and secret not in detail
    assert _command("review", "export", out, "--reader", "A", "--out", tmp_path / "p.csv").returncode == 0
    exported = (tmp_path / "p.csv").read_text()
    assert len(exported.splitlines()) == 2 and "PH000" not in exported and ".dcm" not in exported


# ---- retraining from corrections ------------------------------------------------------------------

@pytest.mark.slow
def test_a_reviewed_export_fine_tunes_a_run(phantoms, tmp_path):
    # the export is a training input, and --init takes a run folder of the same stage (both stages share
    # that code; the grader, the quicker to train, stands for both here)
    folder, labels_csv = _labelled_folder(phantoms, tmp_path)
    store = ReviewStore(folder / "review.sqlite")
    store.keep_setting("labels", str(labels_csv))
    store.register("A", "reader")
    worklist = open_worklist(folder, labels_csv)
    _confirm_everything(store, "A", worklist)
    film = worklist.films[0]
    store.set("A", film.key, anatomy.CORNERS[film.view][2], 2)
    store.close()
    export = tmp_path / "reviewed.csv"
    assert _command("review", "export", folder, "--reader", "A", "--out", export).returncode == 0
    common = ["--preset", "tiny", "--epochs", "1", "--per-class", "4"]
    first = _cli("train", "grader", "--labels", labels_csv, "--out", tmp_path / "grader0", *common)
    assert first.returncode == 0, first.stderr[-1500:]
    tuned = _cli("train", "grader", "--labels", export, "--out", tmp_path / "grader1", "--init", tmp_path / "grader0",
                 *common)
    assert tuned.returncode == 0, tuned.stderr[-1500:]
    config = json.loads((tmp_path / "grader1" / "config.json").read_text())
    assert config["init"] == str((tmp_path / "grader0" / "best.weights.h5").resolve())
    with pytest.raises(RunFolderError, match="a grader run; --init needs a keypoints run") as wrong:
        initial_weights(str(tmp_path / "grader0"), "keypoints", keypoint_config("tiny").to_dict(), tmp_path / "bad")
    assert wrong.value.exit_code == 2  # a usage error


def test_export_of_an_unknown_reader_fails_cleanly(scored, tmp_path):
    result = _command("review", "export", scored, "--reader", "A", "--out", tmp_path / "a.csv")
    assert result.returncode == 2 and "nothing reviewed here yet" in result.stderr
    assert not (scored / "review.sqlite").exists()  # a failed export leaves the folder as it was
    ReviewStore(scored / "review.sqlite").register("A", "reader")
    result = _command("review", "export", scored, "--reader", "Z", "--out", tmp_path / "z.csv")
    assert result.returncode == 2 and "no reader 'Z'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "z.csv").exists()


def test_labels_written_back_keep_their_format(phantoms, tmp_path):
    # a round trip through the review of a labelled folder changes nothing a reader did not change
    folder, labels_csv = _labelled_folder(phantoms, tmp_path)
    labels = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    labels.loc[0, anatomy.CORNERS[labels.loc[0, "view"]][4]] = "NG"  # a reader's "not gradable" comes back as NG
    labels.to_csv(labels_csv, index=False)
    store = ReviewStore(folder / "review.sqlite")
    store.keep_setting("labels", str(labels_csv))
    store.register("A", "reader")
    out = folder / "again.csv"
    result = _command("review", "export", folder, "--reader", "A", "--out", out)
    assert result.returncode == 0 and "0 radiographs" in result.stdout  # nothing read yet: nothing exported
    _confirm_everything(store, "A", open_worklist(folder, labels_csv))
    store.close()
    assert _command("review", "export", folder, "--reader", "A", "--out", out).returncode == 0
    before, _ = load_labels(labels_csv)
    after, _ = load_labels(out)
    columns = list(anatomy.ALL_KEYPOINT_COLUMNS) + list(anatomy.ALL_CORNERS)
    before = before.sort_values("image").reset_index(drop=True)
    after = after.sort_values("image").reset_index(drop=True)
    assert list(after["image"]) == list(before["image"])
    pd.testing.assert_frame_equal(after[columns], before[columns], check_dtype=False, atol=0.01)
    ng = [ng_column(c) for c in anatomy.ALL_CORNERS]
    assert before[ng].to_numpy().any() and (after[ng].to_numpy() == before[ng].to_numpy()).all()  # NG stays NG
    write_labels(after, tmp_path / "rewritten.csv")  # the export is an ordinary label file


@pytest.mark.slow
def test_a_model_prefills_a_folder_once_and_the_export_keeps_it(phantoms, tmp_path):
    from tfmssass.serving.predictors import open_predictor

    folder = tmp_path / "films"
    shutil.copytree(phantoms / "PH0001", folder / "PH0001")
    predictor, text, _ = open_predictor(None, None, None, None, None, None)
    worklist = open_worklist(folder, predictor=predictor, note=f"pre-filled by {text}")
    assert all(f.reading is None for f in worklist.films)  # nothing is predicted before it is asked for
    store = ReviewStore(folder / "review.sqlite")
    session = ReviewSession(worklist, store, "A")
    detail = session.detail(0)
    film = session.films[0]
    assert detail["reading"]["view"] == film.path.stem  # the phantoms are named by their view
    graded = [c for c in anatomy.CORNERS[film.path.stem] if c in detail["reading"]]
    assert len(graded) >= 10 and all(detail["reading"][c] in (0, 1, 2, 3) for c in graded)
    assert store.prefill(film.key)["reading"] == detail["reading"]  # kept: the model runs once a film
    session.change(0, graded[0], "not gradable")
    session.change(0, graded[1], detail["reading"][graded[1]])  # confirmed
    rows, _ = export_labels(open_worklist(folder), store, tmp_path / "a.csv", "A")  # no model needed now
    assert rows == 1
    row = pd.read_csv(tmp_path / "a.csv", dtype=str, keep_default_na=False).iloc[0]
    assert row[graded[0]] == "NG" and row[graded[1]] == str(detail["reading"][graded[1]])
    assert row[graded[2]] == ""  # the model's pre-fill, never confirmed
    rows, warnings = export_labels(open_worklist(folder), store, tmp_path / "b.csv", "A", include_prefill=True)
    row = pd.read_csv(tmp_path / "b.csv").iloc[0]
    assert row[graded[2]] == detail["reading"][graded[2]] and any("pre-filled values" in w for w in warnings)
