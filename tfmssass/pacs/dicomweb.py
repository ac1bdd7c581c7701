"""Talking to a PACS over DICOMweb (QIDO-RS to find, WADO-RS to fetch, STOW-RS to store), with the
faults a hospital network has: a server that answers 5xx or drops the connection is asked again
after a growing pause, and a refusal of the credentials is one clear error.

Credentials come from a file (``--auth-file``), never from the command line, and are never written
anywhere; TLS certificates are verified (``--ca-bundle`` names a hospital's own CA).
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import requests
import urllib3
from dicomweb_client.api import DICOMwebClient

from tfmssass.core.retry import BACKOFF_S, TRIES, RetryPolicy
from tfmssass.pacs.errors import PacsError, PacsUnavailable

#: A connection that fails, or breaks while the server is sending its answer (a server stopped mid-way:
#: requests raises ChunkedEncodingError, an OSError, which is no fault of an output file).
DROPPED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
           urllib3.exceptions.ProtocolError)

#: Seconds to wait for a connection and for each answer.
TIMEOUT_S = (10, 120)


@dataclass(frozen=True)
class Selection:
    """Which studies to score: by Study Instance UID, by Patient ID, and studies from a date on."""

    studies: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    since: str | None = None  # YYYY-MM-DD

    def __bool__(self) -> bool:
        return bool(self.studies or self.patients or self.since)

    def filters(self) -> list[dict]:
        """One QIDO-RS study query per study or patient (all of them dated from ``since``)."""
        dated = {"StudyDate": self.since.replace("-", "") + "-"} if self.since else {}
        queries = ([{"StudyInstanceUID": uid, **dated} for uid in self.studies]
                   + [{"PatientID": pid, **dated} for pid in self.patients])
        return queries or [dated]


def read_auth_file(path) -> requests.auth.AuthBase | tuple[str, str]:
    """``{"username": ..., "password": ...}`` (HTTP basic) or ``{"token": ...}`` (bearer) from a JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PacsError(f"{path}: cannot read the credentials ({getattr(exc, 'strerror', None) or exc})", 2) from None
    if not isinstance(data, dict):
        raise PacsError(f"{path}: expected a JSON object with username and password, or token", 2)
    if data.get("token"):
        return _Bearer(str(data["token"]))
    if data.get("username") and data.get("password"):
        return str(data["username"]), str(data["password"])
    raise PacsError(f"{path}: expected a JSON object with username and password, or token", 2)


def auth_file_warning(path) -> str | None:
    """A warning when others on this machine may read the credentials."""
    mode = Path(path).stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"warning: {path} can be read by other users of this machine (chmod 600 {path})"
    return None


class _Session(requests.Session):
    """A session whose ``--ca-bundle`` wins over ``REQUESTS_CA_BUNDLE`` and the like (requests lets the
    environment override a session's ``verify``); proxies from the environment still apply."""

    def __init__(self, ca_bundle: str | None):
        super().__init__()
        self.ca_bundle = ca_bundle

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.ca_bundle:
            settings["verify"] = self.ca_bundle
        return settings


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def qido_value(result: dict, keyword: str, default=None):
    """The first value of an attribute in a QIDO-RS result (DICOM JSON, keyed by tag)."""
    values = result.get(f"{pydicom.datadict.tag_for_keyword(keyword):08X}", {}).get("Value") or []
    return values[0] if values else default


class Pacs:
    """One DICOMweb server. Every request is retried on 5xx or a dropped connection."""

    def __init__(self, url: str, auth=None, ca_bundle=None, tries: int | None = None, backoff_s: float | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"--dicomweb {url}: not an http(s) address", 2)
        if parts.username or parts.password:
            raise PacsError("--dicomweb: put the credentials in --auth-file, not in the address", 2)
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(tries or TRIES, BACKOFF_S if backoff_s is None else backoff_s)
        session = _Session(str(ca_bundle) if ca_bundle else None)
        session.auth = auth
        self.client = DICOMwebClient(self.url, session=session, timeout=TIMEOUT_S)
        self.client.set_http_retry_params(retry=False)  # the one retry loop is ours

    def _call(self, what: str, function, *args, **kwargs):
        return self.retry.call(lambda: function(*args, **kwargs), lambda exc: self._transient(exc, what),
                               f"{self.url}: {what}", PacsUnavailable)

    def _transient(self, exc: Exception, what: str) -> str | None:
        """A 5xx or a dropped connection is worth another try; a refusal is one clear error."""
        if isinstance(exc, requests.HTTPError):
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PacsError(f"{self.url}: the server refused the credentials (HTTP {status}); "
                                "check --auth-file", 2) from None
            if status < 500:
                raise PacsError(f"{self.url}: {what} failed (HTTP {status})") from None
            return f"HTTP {status}"
        if isinstance(exc, requests.exceptions.SSLError):
            raise PacsError(f"{self.url}: the server's TLS certificate cannot be verified ({_reason(exc)}); "
                            "give its CA with --ca-bundle", 2) from None
        if isinstance(exc, DROPPED):
            return _reason(exc)
        return None

    def check(self) -> None:
        """Ask one study of the server, so an address or credentials that do not work stop the run before
        the models load."""
        self._call("asking for studies", self.client.search_for_studies, limit=1)

    def studies(self, selection: Selection) -> list[dict]:
        """The selected studies (QIDO-RS results), each once, in the server's order."""
        found = {}
        for filters in selection.filters():
            for study in self._call("finding studies", self.client.search_for_studies, search_filters=filters,
                                    get_remaining=True):
                found.setdefault(qido_value(study, "StudyInstanceUID"), study)
        return list(found.values())

    def series(self, study_uid: str) -> list[dict]:
        return self._call(f"listing the series of study {study_uid}", self.client.search_for_series, study_uid,
                          fields=["Modality", "SeriesDescription", "SeriesNumber"], get_remaining=True)

    def instances(self, study_uid: str, series_uid: str) -> list[str]:
        found = self._call(f"listing the images of series {series_uid}", self.client.search_for_instances,
                           study_uid, series_uid, get_remaining=True)
        return [qido_value(i, "SOPInstanceUID") for i in found]

    def retrieve(self, study_uid: str, series_uid: str, sop_uid: str) -> pydicom.Dataset:
        """One instance as the PACS holds it (any transfer syntax: no transcoding on the way)."""
        return self._call(f"fetching {sop_uid}", self.client.retrieve_instance, study_uid, series_uid, sop_uid,
                          media_types=(("application/dicom", "*"),))

    def store(self, dataset: pydicom.Dataset) -> None:
        answer = self._call(f"storing {dataset.SOPInstanceUID}", self.client.store_instances, [dataset])
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "no reason given")
            raise PacsError(f"{self.url}: the server did not store {dataset.SOPInstanceUID} (failure reason {reason})")


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


