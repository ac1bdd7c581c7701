"""A real PACS for the DICOMweb tests: Debian's Orthanc with its DICOMweb plugin, on a free port,
with its storage in a temporary folder, stopped by the test.

Orthanc 1.10 has no option to choose the address it listens on; with ``RemoteAccessAllowed`` off it
answers only clients on this machine, and its DICOM port is switched off. Its HTTPS server crashes on
the first handshake (a civetweb worker dies), so TLS is tested against a Python server instead.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "reader", "a-test-password-1"


def available() -> str | None:
    """Why the tests cannot run here, or None."""
    if not Path(ORTHANC).is_file():
        return "Orthanc is not installed (Debian package orthanc)"
    if not PLUGIN.is_file():
        return "Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """``start()``, ``stop()``; the storage survives a stop, as a PACS's does."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.process = None
        (self.folder / "storage").mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "tfmssass-test", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"), "HttpPort": self.port,
            "DicomServerEnabled": False, "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD}, "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "HttpTimeout": 30, "StableAge": 1,
        }
        self.config = self.folder / "orthanc.json"
        self.config.write_text(json.dumps(config))

    def start(self, timeout: float = 30) -> "Orthanc":
        log = open(self.folder / "orthanc.log", "ab")
        self.process = subprocess.Popen([ORTHANC, str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", auth=(USER, PASSWORD), timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def upload(self, paths) -> None:
        """Store DICOM files through Orthanc's own REST API (not the code under test)."""
        for path in paths:
            answer = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), auth=(USER, PASSWORD),
                                   timeout=30)
            answer.raise_for_status()

    def get(self, path: str):
        answer = requests.get(f"{self.url}{path}", auth=(USER, PASSWORD), timeout=30)
        answer.raise_for_status()
        return answer.json()

    def instance(self, sop_uid: str) -> bytes:
        """The stored file of one instance, found by its SOP Instance UID (Orthanc's REST API)."""
        found = requests.post(f"{self.url}/tools/find", auth=(USER, PASSWORD), timeout=30,
                              json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}})
        found.raise_for_status()
        (orthanc_id,) = found.json()
        answer = requests.get(f"{self.url}/instances/{orthanc_id}/file", auth=(USER, PASSWORD), timeout=30)
        answer.raise_for_status()
        return answer.content
